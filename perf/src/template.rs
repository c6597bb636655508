//! Topic templates: emqtt-bench's placeholders.
//!
//! `%i` is the client's sequence number (`-n` plus its position), `%c` its client id, `%u` the
//! user name (empty without `-u`), `%rand_N` a random number in `1..=N`. Each client expands
//! its template once, when it is created, so a publisher keeps one topic for the whole run.

/// What a template is expanded with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vars<'a> {
    /// `%i`.
    pub(crate) seq: u64,
    /// `%c`.
    pub(crate) client_id: &'a str,
    /// `%u`.
    pub(crate) username: &'a str,
}

/// Expands `template`; `rand(n)` draws a number in `1..=n` for each `%rand_N`.
pub(crate) fn expand(template: &str, vars: Vars<'_>, rand: &mut impl FnMut(u64) -> u64) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        if let Some(t) = tail.strip_prefix("rand_") {
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(n) = t[..digits].parse::<u64>()
                && n > 0
            {
                out.push_str(&rand(n).to_string());
                rest = &t[digits..];
                continue;
            }
        }
        match tail.as_bytes().first() {
            Some(b'i') => out.push_str(&vars.seq.to_string()),
            Some(b'c') => out.push_str(vars.client_id),
            Some(b'u') => out.push_str(vars.username),
            // Not a placeholder: keep the `%` and go on after it.
            _ => {
                out.push('%');
                rest = tail;
                continue;
            }
        }
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// A small deterministic generator (SplitMix64) for `%rand_N` and run ids: no dependency, and
/// a seed makes a run reproducible in tests.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A generator with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `1..=n` (`n > 0`).
    pub(crate) fn one_to(&mut self, n: u64) -> u64 {
        1 + self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            seq: 42,
            client_id: "perf-1-pub-42",
            username: "alice",
        }
    }

    #[test]
    fn placeholders() {
        let mut r = |n: u64| n; // "random" = N
        assert_eq!(expand("t/%i", vars(), &mut r), "t/42");
        assert_eq!(expand("%c/x/%u", vars(), &mut r), "perf-1-pub-42/x/alice");
        assert_eq!(expand("a/%rand_10/b", vars(), &mut r), "a/10/b");
        assert_eq!(expand("%rand_7%i", vars(), &mut r), "742");
        assert_eq!(expand("no/placeholders", vars(), &mut r), "no/placeholders");
    }

    #[test]
    fn stray_percent_signs_stay() {
        let mut r = |n: u64| n;
        assert_eq!(expand("100%", vars(), &mut r), "100%");
        assert_eq!(
            expand("%x/%rand_/%rand_0", vars(), &mut r),
            "%x/%rand_/%rand_0"
        );
        assert_eq!(expand("%%i", vars(), &mut r), "%42");
    }

    #[test]
    fn random_range() {
        let mut g = SplitMix::new(1);
        for _ in 0..1000 {
            let v = g.one_to(5);
            assert!((1..=5).contains(&v));
        }
        let mut r = |n| g.one_to(n);
        let t = expand("%rand_3", vars(), &mut r);
        assert!(["1", "2", "3"].contains(&t.as_str()));
    }
}
