//! Outgoing topic aliases (MQTT 5, 3.3.2.3.4): the broker gives the topics it sends to a client
//! short numbers, up to the client's Topic Alias Maximum, and replaces the least recently used
//! one when all are taken (a clock, or second-chance, approximation of LRU: O(1) amortised).

use std::collections::HashMap;

/// The aliases of one connection, in the broker-to-client direction.
#[derive(Debug)]
pub struct OutAliases {
    max: u16,
    by_topic: HashMap<Box<str>, u16>,
    /// Alias `i + 1` → its topic and whether it was used since the clock hand last passed.
    slots: Vec<(Box<str>, bool)>,
    hand: usize,
}

impl OutAliases {
    /// Aliases `1..=max` (`max` ≥ 1: the client's Topic Alias Maximum).
    pub fn new(max: u16) -> Self {
        Self {
            max: max.max(1),
            by_topic: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
        }
    }

    /// The alias the client already knows for `topic`: send it with an empty topic name.
    pub fn lookup(&mut self, topic: &str) -> Option<u16> {
        let alias = *self.by_topic.get(topic)?;
        if let Some(slot) = self.slots.get_mut(usize::from(alias) - 1) {
            slot.1 = true;
        }
        Some(alias)
    }

    /// A new alias for `topic` (not known yet): send it together with the topic name, which
    /// (re)defines the alias for the client.
    pub fn assign(&mut self, topic: &str) -> u16 {
        if self.slots.len() < usize::from(self.max) {
            self.slots.push((topic.into(), true));
            let alias = self.slots.len() as u16;
            self.by_topic.insert(topic.into(), alias);
            return alias;
        }
        // Second chance: skip (and clear) recently used slots.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.1 {
                slot.1 = false;
                continue;
            }
            self.by_topic.remove(&slot.0);
            slot.0 = topic.into();
            slot.1 = true;
            let alias = (i + 1) as u16;
            self.by_topic.insert(topic.into(), alias);
            return alias;
        }
    }

    /// Number of aliases in use.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` before the first alias.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_then_reuses_then_evicts_the_least_recently_used() {
        let mut a = OutAliases::new(2);
        assert_eq!(a.lookup("x"), None);
        assert_eq!(a.assign("x"), 1);
        assert_eq!(a.assign("y"), 2);
        assert_eq!(a.lookup("x"), Some(1));
        // Both used since: the hand clears x then y, then takes x's slot (1).
        let z = a.assign("z");
        assert_eq!(a.lookup("z"), Some(z));
        assert_eq!(a.len(), 2);
        // x or y is gone, the other still maps to its alias.
        let left = [a.lookup("x"), a.lookup("y")];
        assert_eq!(left.iter().filter(|v| v.is_some()).count(), 1);
        // y was used more recently than x before z came: now use x heavily and add w.
        let mut a = OutAliases::new(3);
        for t in ["a", "b", "c"] {
            a.assign(t);
        }
        // A full sweep clears all; "a" is then re-marked by use.
        a.assign("d");
        assert!(a.lookup("d").is_some());
        for t in ["a", "b", "c", "d"] {
            if let Some(al) = a.lookup(t) {
                assert!((1..=3).contains(&al));
            }
        }
    }

    #[test]
    fn never_more_aliases_than_the_maximum() {
        let mut a = OutAliases::new(5);
        for i in 0..1000 {
            let t = format!("t/{}", i % 17);
            let alias = a.lookup(&t).unwrap_or_else(|| a.assign(&t));
            assert!((1..=5).contains(&alias));
            assert_eq!(a.lookup(&t), Some(alias));
        }
        assert_eq!(a.len(), 5);
    }
}
