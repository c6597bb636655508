//! `TopicTrie` against the naive matcher `net::mqtt::topic::matches`, the approach of NATS
//! `server/sublist_test.go`: random insert/remove sequences over a random pool of filters and
//! several keys, interleaved with random topics; the trie must report exactly the
//! `(filter, key)` entries that the naive matcher finds among the live subscriptions, each
//! once. Counts, lookups and pruning are checked along the way.

use std::collections::BTreeMap;

use net::mqtt::topic::{matches, validate_topic_filter, validate_topic_name};
use proptest::prelude::*;
use proptest::sample::Index;
use shard::trie::TopicTrie;

/// Topic levels: empty levels and `$` levels are the interesting cases.
const LEVELS: &[&str] = &["a", "b", "", "$x"];

/// A subscriber key.
type Key = u8;

/// Values carry their filter, so that a match can be traced back to it.
type Trie = TopicTrie<Key, (String, u32)>;

/// The live subscriptions: `(filter, key)` → value.
type Model = BTreeMap<(String, Key), u32>;

#[derive(Debug, Clone)]
enum Op {
    Insert(Index, Key, u32),
    Remove(Index, Key),
    Match(String),
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(LEVELS)
}

/// Valid, non-shared filters of up to 5 levels, with `+` anywhere and `#` last.
fn filter() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 1 => Just("+")];
    (prop::collection::vec(lvl, 0..=4), prop::bool::weighted(0.3))
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
}

/// Valid topic names of up to 6 levels (one more than the deepest filter).
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..=6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| validate_topic_name(t).is_ok())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<Index>(), 0..4u8, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        3 => (any::<Index>(), 0..4u8).prop_map(|(f, k)| Op::Remove(f, k)),
        3 => topic().prop_map(Op::Match),
    ]
}

/// The `(filter, key, value)` entries matching `topic`, sorted, duplicates kept.
fn trie_matches(trie: &Trie, topic: &str) -> Vec<(String, Key, u32)> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |k, (f, v)| out.push((f.clone(), *k, *v)));
    out.sort();
    out
}

fn naive_matches(model: &Model, topic: &str) -> Vec<(String, Key, u32)> {
    model
        .iter()
        .filter(|((f, _), _)| matches(f, topic))
        .map(|((f, k), v)| (f.clone(), *k, *v))
        .collect()
}

/// Counts and exact lookups of `trie` agree with `model` for every filter of `pool`.
fn check_lookups(trie: &Trie, model: &Model, pool: &[String]) -> Result<(), TestCaseError> {
    prop_assert_eq!(trie.entry_count(), model.len());
    let mut filters: Vec<&String> = model.keys().map(|(f, _)| f).collect();
    filters.dedup();
    prop_assert_eq!(trie.filter_count(), filters.len());
    prop_assert_eq!(trie.is_empty(), model.is_empty());
    for f in pool {
        let live = model.keys().any(|(mf, _)| mf == f);
        prop_assert_eq!(trie.contains_filter(f), live, "contains_filter({})", f);
        prop_assert_eq!(
            trie.entries(f).len(),
            model.keys().filter(|(mf, _)| mf == f).count()
        );
        for k in 0..4 {
            let want = model.get(&(f.clone(), k));
            prop_assert_eq!(trie.get(f, &k).map(|(_, v)| v), want, "get({}, {})", f, k);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn trie_matches_naive(
        pool in prop::collection::vec(filter(), 1..16),
        ops in prop::collection::vec(op(), 0..150),
        topics in prop::collection::vec(topic(), 1..32),
    ) {
        let mut trie = Trie::new();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert(i, k, v) => {
                    let f = i.get(&pool);
                    let prev = model.insert((f.clone(), k), v);
                    let got = trie.insert(f, k, (f.clone(), v)).map(|(_, v)| v);
                    prop_assert_eq!(got, prev, "insert({}, {})", f, k);
                }
                Op::Remove(i, k) => {
                    let f = i.get(&pool);
                    let prev = model.remove(&(f.clone(), k));
                    prop_assert_eq!(trie.remove(f, &k).map(|(_, v)| v), prev, "remove({}, {})", f, k);
                }
                Op::Match(t) => {
                    prop_assert_eq!(trie_matches(&trie, &t), naive_matches(&model, &t), "{}", t);
                }
            }
            prop_assert_eq!(trie.entry_count(), model.len());
        }
        check_lookups(&trie, &model, &pool)?;
        for t in &topics {
            prop_assert_eq!(trie_matches(&trie, t), naive_matches(&model, t), "{}", t);
        }

        // Remove everything: the trie is empty and its arena is back to the root.
        for (f, k) in model.keys() {
            prop_assert!(trie.remove(f, k).is_some());
        }
        model.clear();
        check_lookups(&trie, &model, &pool)?;
        prop_assert_eq!(trie.node_count(), 1);
        for t in &topics {
            prop_assert!(trie_matches(&trie, t).is_empty());
        }
    }

    /// Every filter inserted matches the topics built from it (wildcards replaced by
    /// levels), which random topics may rarely hit.
    #[test]
    fn filters_match_their_instances(
        pool in prop::collection::vec(filter(), 1..16),
        fill in prop::collection::vec(level(), 8),
    ) {
        let mut trie = Trie::new();
        let mut model = Model::new();
        for (i, f) in pool.iter().enumerate() {
            let k = (i % 4) as Key;
            trie.insert(f, k, (f.clone(), 0));
            model.insert((f.clone(), k), 0);
        }
        for f in &pool {
            for hash_levels in 0..3 {
                let mut levels: Vec<&str> = Vec::new();
                for (i, l) in f.split('/').enumerate() {
                    match l {
                        "+" => levels.push(fill[i]),
                        "#" => levels.extend(&fill[i..i + hash_levels]),
                        l => levels.push(l),
                    }
                }
                let t = levels.join("/");
                if validate_topic_name(&t).is_err() {
                    continue;
                }
                let got = trie_matches(&trie, &t);
                prop_assert_eq!(&got, &naive_matches(&model, &t), "{}", t);
                let dollar_rule = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
                prop_assert_eq!(got.iter().any(|(gf, _, _)| gf == f), !dollar_rule, "{} / {}", f, t);
            }
        }
    }
}
