//! EMQX's topic rewrite rules (`rewrite`) and auto-subscribe templates
//! (`auto_subscribe.topics`), compiled once and shared by every shard.
//!
//! A rewrite rule has an action (`publish`, `subscribe` or `all`), a source topic filter, a
//! regular expression and a destination template. A topic is rewritten by the **last**
//! configured rule of its action whose source filter matches it — EMQX reads the list in
//! reverse — and only if that rule's expression matches too: a rule whose filter matches but
//! whose expression does not leaves the topic as it is, without trying other rules. In the
//! destination, `$N` is the expression's N-th capture group, `${clientid}` and `${username}`
//! the client's (a client without a username keeps `${username}` as written, as in EMQX; a
//! client id or username holding `+` or `#` makes the rule not apply).
//! A result that is not a valid topic name (for PUBLISH) or filter (for SUBSCRIBE and
//! UNSUBSCRIBE) leaves the topic unchanged. For `$share/{group}/`, `$queue/` and
//! `$exclusive/` filters only the part after the prefix is matched and rewritten.

use std::fmt::Write as _;
use std::net::SocketAddr;

use net::mqtt::SubscriptionOptions;
use net::mqtt::topic;
use regex::Regex;

/// Which packets a rewrite rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteAction {
    /// Topics of PUBLISH packets (and wills).
    Publish,
    /// Filters of SUBSCRIBE and UNSUBSCRIBE packets.
    Subscribe,
    /// Both.
    All,
}

/// One configured rule, as written.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    /// What it applies to.
    pub action: RewriteAction,
    /// The topic filter a topic must match for the rule to apply.
    pub source_topic: String,
    /// The expression whose capture groups `$1`, `$2`, ... the destination uses.
    pub re: Regex,
    /// The template of the new topic.
    pub dest_topic: String,
}

/// One piece of a destination template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Capture(usize),
    ClientId,
    Username,
}

#[derive(Debug, Clone)]
struct Compiled {
    source: String,
    re: Regex,
    dest: Vec<Piece>,
}

/// The rewrite rules, split by what they apply to, each list in the order rules are tried.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    publish: Vec<Compiled>,
    subscribe: Vec<Compiled>,
}

/// The client a topic is rewritten for.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Its client identifier.
    pub client_id: &'a str,
    /// Its user name, if it gave one.
    pub username: Option<&'a str>,
}

impl Rewrite {
    /// Compiles `rules`, given in configuration order.
    pub fn new(rules: &[RewriteRule]) -> Self {
        let mut rewrite = Self::default();
        // EMQX tries the rules from the last one configured to the first.
        for rule in rules.iter().rev() {
            let compiled = Compiled {
                source: rule.source_topic.clone(),
                re: rule.re.clone(),
                dest: parse_template(&rule.dest_topic),
            };
            match rule.action {
                RewriteAction::Publish => rewrite.publish.push(compiled),
                RewriteAction::Subscribe => rewrite.subscribe.push(compiled),
                RewriteAction::All => {
                    rewrite.publish.push(compiled.clone());
                    rewrite.subscribe.push(compiled);
                }
            }
        }
        rewrite
    }

    /// Whether no rule applies to PUBLISH topics.
    pub fn publish_is_empty(&self) -> bool {
        self.publish.is_empty()
    }

    /// Whether no rule applies to subscription filters.
    pub fn subscribe_is_empty(&self) -> bool {
        self.subscribe.is_empty()
    }

    /// The topic a PUBLISH to `topic` from `client` goes to instead, if a rule rewrites it.
    pub fn publish(&self, topic: &str, client: Client<'_>) -> Option<String> {
        let new = apply(&self.publish, topic, client)?;
        topic::validate_topic_name(&new).is_ok().then_some(new)
    }

    /// The filter a SUBSCRIBE or UNSUBSCRIBE of `filter` from `client` uses instead, if a rule
    /// rewrites it. A `$share/{group}/`, `$queue/` or `$exclusive/` prefix is kept and only the
    /// rest is rewritten.
    pub fn filter(&self, filter: &str, client: Client<'_>) -> Option<String> {
        let (prefix, inner) = split_prefix(filter);
        let new = apply(&self.subscribe, inner, client)?;
        let full = format!("{prefix}{new}");
        topic::validate_topic_filter(&full).is_ok().then_some(full)
    }
}

/// `(prefix, filter)`: the shared or exclusive prefix of a subscription and the topic filter.
fn split_prefix(filter: &str) -> (&str, &str) {
    if let Some((_, inner)) = topic::split_shared(filter) {
        return (&filter[..filter.len() - inner.len()], inner);
    }
    for prefix in ["$queue/", "$exclusive/"] {
        if let Some(inner) = filter.strip_prefix(prefix) {
            return (prefix, inner);
        }
    }
    ("", filter)
}

fn apply(rules: &[Compiled], topic: &str, client: Client<'_>) -> Option<String> {
    let rule = rules.iter().find(|r| topic::matches(&r.source, topic))?;
    let captures = rule.re.captures(topic)?;
    let mut out = String::with_capacity(topic.len() + 16);
    for piece in &rule.dest {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::ClientId => out.push_str(literal(client.client_id)?),
            Piece::Username => out.push_str(client.username.map_or(Some("${username}"), literal)?),
            Piece::Capture(n) if *n < captures.len() => {
                out.push_str(captures.get(*n).map_or("", |m| m.as_str()));
            }
            // A group the expression does not have stays as written, as in EMQX.
            Piece::Capture(n) => {
                let _ = write!(out, "${n}");
            }
        }
    }
    Some(out)
}

/// A client's id or username as a topic level: `None` if it holds a wildcard, which would let a
/// client choose its own wildcard subscription by picking its name.
fn literal(value: &str) -> Option<&str> {
    (!topic::has_wildcard(value)).then_some(value)
}

/// Splits a destination template into text, `$N` (N ≥ 1), `${clientid}` and `${username}`.
fn parse_template(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
        let placeholder = if let Some(after) = rest.strip_prefix("${clientid}") {
            Some((Piece::ClientId, after))
        } else if let Some(after) = rest.strip_prefix("${username}") {
            Some((Piece::Username, after))
        } else if digits > 0 {
            rest[1..=digits]
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(|n| (Piece::Capture(n), &rest[1 + digits..]))
        } else {
            None
        };
        match placeholder {
            Some((piece, after)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                rest = after;
            }
            None => {
                text.push('$');
                rest = &rest[1..];
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// One `auto_subscribe.topics` entry: a filter template and the subscription options.
#[derive(Debug, Clone)]
pub struct AutoSubscribe {
    /// The filter, with `${clientid}`, `${username}`, `${host}` and `${port}` placeholders.
    pub topic: String,
    /// QoS, No Local, Retain As Published and Retain Handling.
    pub options: SubscriptionOptions,
}

impl AutoSubscribe {
    /// The filter for a client, or `None` when it needs a username the client did not give or
    /// comes out empty (EMQX skips such entries too), or when a client id or username put in
    /// holds a wildcard (`+`, `#`).
    pub fn filter_for(&self, client: Client<'_>, peer: SocketAddr) -> Option<String> {
        let mut out = String::with_capacity(self.topic.len() + client.client_id.len());
        let mut rest = self.topic.as_str();
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("${clientid}") {
                out.push_str(literal(client.client_id)?);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${username}") {
                out.push_str(literal(client.username?)?);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${host}") {
                let _ = write!(out, "{}", peer.ip());
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${port}") {
                let _ = write!(out, "{}", peer.port());
                rest = after;
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: RewriteAction, source: &str, re: &str, dest: &str) -> RewriteRule {
        RewriteRule {
            action,
            source_topic: source.to_owned(),
            re: Regex::new(re).unwrap(),
            dest_topic: dest.to_owned(),
        }
    }

    const C: Client<'static> = Client {
        client_id: "c1",
        username: Some("u1"),
    };

    /// The example of EMQX's documentation: rules tried last first, a matching filter with a
    /// non-matching expression stops the search.
    #[test]
    fn emqx_documentation_example() {
        let r = Rewrite::new(&[
            rule(RewriteAction::All, "y/+/z/#", "^y/(.+)/z/(.+)$", "y/z/$2"),
            rule(RewriteAction::All, "x/#", "^x/y/(.+)$", "z/y/$1"),
            rule(RewriteAction::All, "x/y/+", "^x/y/(\\d+)$", "x/y/$1"),
        ]);
        assert_eq!(r.filter("y/a/z/b", C).as_deref(), Some("y/z/b"));
        assert_eq!(r.filter("y/def", C), None);
        assert_eq!(
            r.filter("x/1/2", C),
            None,
            "x/# matches, its expression does not"
        );
        assert_eq!(r.filter("x/y/2", C).as_deref(), Some("x/y/2"));
        assert_eq!(
            r.filter("x/y/z", C),
            None,
            "x/y/+ is tried first and its \\d+ fails"
        );
        assert_eq!(r.publish("x/y/z/w", C).as_deref(), Some("z/y/z/w"));
    }

    #[test]
    fn actions_apply_to_their_packets() {
        let r = Rewrite::new(&[
            rule(RewriteAction::Publish, "p/#", "^p/(.+)$", "pub/$1"),
            rule(RewriteAction::Subscribe, "s/#", "^s/(.+)$", "sub/$1"),
        ]);
        assert_eq!(r.publish("p/1", C).as_deref(), Some("pub/1"));
        assert_eq!(r.filter("p/1", C), None);
        assert_eq!(r.filter("s/1", C).as_deref(), Some("sub/1"));
        assert_eq!(r.publish("s/1", C), None);
        assert!(!r.publish_is_empty() && !r.subscribe_is_empty());
        assert!(Rewrite::new(&[]).publish_is_empty());
    }

    #[test]
    fn placeholders_and_captures() {
        let r = Rewrite::new(&[rule(
            RewriteAction::All,
            "a/#",
            "^a/(\\w+)/(\\w+)$",
            "${clientid}/${username}/$2/$1/$3/$0/$x/$$",
        )]);
        assert_eq!(
            r.publish("a/b/c", C).as_deref(),
            Some("c1/u1/c/b/$3/$0/$x/$$")
        );
        let anonymous = Client {
            client_id: "c2",
            username: None,
        };
        assert_eq!(
            r.publish("a/b/c", anonymous).as_deref(),
            Some("c2/${username}/c/b/$3/$0/$x/$$")
        );
        let wild = Client {
            client_id: "c+",
            username: None,
        };
        assert_eq!(
            r.filter("a/b/c", wild),
            None,
            "a wildcard in a client id is no rewrite"
        );
    }

    #[test]
    fn results_that_are_not_topics_are_dropped() {
        let r = Rewrite::new(&[rule(RewriteAction::All, "w/#", "^w/(.*)$", "v/$1/#")]);
        // A wildcard is fine in a filter, never in a topic name.
        assert_eq!(r.filter("w/x", C).as_deref(), Some("v/x/#"));
        assert_eq!(r.publish("w/x", C), None);
        let r = Rewrite::new(&[rule(RewriteAction::All, "w/#", "^w/(.*)$", "$1/#/z")]);
        assert_eq!(r.filter("w/x", C), None, "# not last is no filter");
    }

    #[test]
    fn shared_queue_and_exclusive_prefixes_are_kept() {
        let r = Rewrite::new(&[rule(RewriteAction::Subscribe, "t/#", "^t/(.+)$", "n/$1")]);
        assert_eq!(r.filter("$share/g/t/1", C).as_deref(), Some("$share/g/n/1"));
        assert_eq!(r.filter("$queue/t/2", C).as_deref(), Some("$queue/n/2"));
        assert_eq!(
            r.filter("$exclusive/t/3", C).as_deref(),
            Some("$exclusive/n/3")
        );
        assert_eq!(
            r.filter("$share/t/x", C),
            None,
            "the group is not the topic"
        );
    }

    #[test]
    fn dollar_topics_need_an_explicit_source() {
        let r = Rewrite::new(&[rule(RewriteAction::All, "#", "^(.*)$", "all/$1")]);
        assert_eq!(r.publish("$SYS/x", C), None);
        assert_eq!(r.publish("y", C).as_deref(), Some("all/y"));
    }

    #[test]
    fn auto_subscribe_placeholders() {
        let peer: SocketAddr = "10.0.0.7:5555".parse().unwrap();
        let a = AutoSubscribe {
            topic: "c/${clientid}/${username}/${host}/${port}/${other}".to_owned(),
            options: SubscriptionOptions::default(),
        };
        assert_eq!(
            a.filter_for(C, peer).as_deref(),
            Some("c/c1/u1/10.0.0.7/5555/${other}")
        );
        let anonymous = Client {
            client_id: "c2",
            username: None,
        };
        assert_eq!(a.filter_for(anonymous, peer), None);
        let sneaky = Client {
            client_id: "#",
            username: Some("u"),
        };
        assert_eq!(
            a.filter_for(sneaky, peer),
            None,
            "a client id cannot widen the filter"
        );
        let plain = AutoSubscribe {
            topic: "news/${clientid}".to_owned(),
            options: SubscriptionOptions::default(),
        };
        assert_eq!(
            plain.filter_for(anonymous, peer).as_deref(),
            Some("news/c2")
        );
    }
}
