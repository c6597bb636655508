//! `RetainedIndex` against a naive model: a `HashMap` of topic → value filtered with
//! `net::mqtt::topic::matches`. Random insert/remove/retain sequences over a random pool of
//! topics, interleaved with random filters; the index must report exactly the `(topic, value)`
//! pairs the naive matcher finds, each once, and its node count must be the number of distinct
//! topic prefixes (pruning is exact). Bounded walks are resumed across random changes and
//! checked against the guarantees of the module documentation.

use std::collections::{HashMap, HashSet};

use net::mqtt::topic::{matches, validate_topic_filter, validate_topic_name};
use proptest::prelude::*;
use proptest::sample::Index;
use shard::retained::{Completion, RetainedIndex};

/// Topic levels: empty levels and `$` levels are the interesting cases.
const LEVELS: &[&str] = &["a", "b", "", "$x"];

type Model = HashMap<String, u32>;

#[derive(Debug, Clone)]
enum Op {
    Insert(Index, u32),
    Remove(Index),
    /// Remove then insert again: the topic's node is pruned and rebuilt.
    Reinsert(Index, u32),
    /// Keep the values `v` with `v % 3 != r`.
    Retain(u32),
    Match(String),
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(LEVELS)
}

/// Valid topic names of 1 to 5 levels. Built valid rather than filtered, so that large
/// `PROPTEST_CASES` do not run out of rejects: the empty name becomes `/`.
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..=5).prop_map(|levels| non_empty(levels.join("/")))
}

fn non_empty(s: String) -> String {
    if s.is_empty() { "/".to_owned() } else { s }
}

/// Valid, non-shared filters of up to 6 levels (one more than the deepest topic), with `+`
/// anywhere and `#` last; the empty filter becomes `/`.
fn filter() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 2 => Just("+")];
    (prop::collection::vec(lvl, 0..=5), prop::bool::weighted(0.3)).prop_map(|(mut levels, hash)| {
        if hash {
            levels.push("#");
        }
        non_empty(levels.join("/"))
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<Index>(), any::<u32>()).prop_map(|(t, v)| Op::Insert(t, v)),
        3 => any::<Index>().prop_map(Op::Remove),
        1 => (any::<Index>(), any::<u32>()).prop_map(|(t, v)| Op::Reinsert(t, v)),
        1 => (0..3u32).prop_map(Op::Retain),
        3 => filter().prop_map(Op::Match),
    ]
}

/// The `(topic, value)` pairs `index` matches for `filter`, sorted, duplicates kept.
fn index_matches(index: &RetainedIndex<u32>, filter: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    index.for_each_match(filter, |t, v| out.push((t.to_owned(), *v)));
    out.sort();
    out
}

fn naive_matches(model: &Model, filter: &str) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = model
        .iter()
        .filter(|(t, _)| matches(filter, t))
        .map(|(t, v)| (t.clone(), *v))
        .collect();
    out.sort();
    out
}

/// Number of nodes an exactly pruned index of `model` has: the root and one per distinct
/// topic prefix (`a`, `a/`, `a//b` for the topic `a//b`).
fn prefix_count(model: &Model) -> usize {
    let mut prefixes = HashSet::new();
    for t in model.keys() {
        let mut end = 0;
        for level in t.split('/') {
            end += level.len();
            prefixes.insert(&t[..end]);
            end += 1;
        }
    }
    1 + prefixes.len()
}

/// Counts, lookups and the node count of `index` agree with `model`.
fn check_state(
    index: &RetainedIndex<u32>,
    model: &Model,
    pool: &[String],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(index.len(), model.len());
    prop_assert_eq!(index.is_empty(), model.is_empty());
    prop_assert_eq!(index.node_count(), prefix_count(model));
    for t in pool {
        prop_assert_eq!(index.get(t), model.get(t), "get({})", t);
    }
    let mut all: Vec<(String, u32)> = index.iter().map(|(t, v)| (t.to_owned(), *v)).collect();
    all.sort();
    prop_assert_eq!(all, naive_matches_all(model));
    Ok(())
}

fn naive_matches_all(model: &Model) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = model.iter().map(|(t, v)| (t.clone(), *v)).collect();
    out.sort();
    out
}

/// Applies one change to both; returns the topic it changed, if any.
fn apply(
    index: &mut RetainedIndex<u32>,
    model: &mut Model,
    pool: &[String],
    op: &Op,
) -> Result<Vec<String>, TestCaseError> {
    Ok(match op {
        Op::Insert(i, v) => {
            let t = i.get(pool);
            prop_assert_eq!(
                index.insert(t, *v),
                model.insert(t.clone(), *v),
                "insert({})",
                t
            );
            vec![t.clone()]
        }
        Op::Remove(i) => {
            let t = i.get(pool);
            prop_assert_eq!(index.remove(t), model.remove(t), "remove({})", t);
            vec![t.clone()]
        }
        Op::Reinsert(i, v) => {
            let t = i.get(pool);
            prop_assert_eq!(index.remove(t), model.remove(t), "remove({})", t);
            prop_assert_eq!(index.insert(t, *v), None, "insert({})", t);
            model.insert(t.clone(), *v);
            vec![t.clone()]
        }
        Op::Retain(r) => {
            let gone: Vec<String> = model
                .iter()
                .filter(|(_, v)| *v % 3 == *r)
                .map(|(t, _)| t.clone())
                .collect();
            model.retain(|_, v| *v % 3 != *r);
            let mut calls = 0;
            index.retain(|t, v| {
                calls += 1;
                assert!(validate_topic_name(t).is_ok());
                *v % 3 != *r
            });
            prop_assert_eq!(calls, model.len() + gone.len());
            gone
        }
        Op::Match(_) => Vec::new(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn index_matches_naive(
        pool in prop::collection::vec(topic(), 1..24),
        ops in prop::collection::vec(op(), 0..150),
        filters in prop::collection::vec(filter(), 1..32),
    ) {
        for t in &pool {
            prop_assert!(validate_topic_name(t).is_ok(), "{}", t);
        }
        for f in &filters {
            prop_assert!(validate_topic_filter(f).is_ok(), "{}", f);
        }
        let mut index = RetainedIndex::new();
        let mut model = Model::new();
        for op in &ops {
            apply(&mut index, &mut model, &pool, op)?;
            if let Op::Match(f) = op {
                prop_assert_eq!(index_matches(&index, f), naive_matches(&model, f), "{}", f);
            }
            prop_assert_eq!(index.len(), model.len());
        }
        check_state(&index, &model, &pool)?;
        for f in &filters {
            prop_assert_eq!(index_matches(&index, f), naive_matches(&model, f), "{}", f);
        }

        // Remove everything: the index is empty and only its root is left.
        let topics: Vec<String> = model.keys().cloned().collect();
        for t in &topics {
            prop_assert_eq!(index.remove(t), model.remove(t));
        }
        check_state(&index, &model, &pool)?;
        prop_assert_eq!(index.node_count(), 1);
        for f in &filters {
            prop_assert!(index_matches(&index, f).is_empty());
        }
    }

    /// Every topic is matched by the filters built from it (levels replaced by `+`, a tail
    /// replaced by `#`), which random filters may rarely hit, except as [MQTT-4.7.2-1] says.
    #[test]
    fn topics_match_their_generalisations(
        pool in prop::collection::vec(topic(), 1..24),
        masks in prop::collection::vec((any::<u8>(), 0..7usize), 8),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = Model::new();
        for (i, t) in pool.iter().enumerate() {
            index.insert(t, i as u32);
            model.insert(t.clone(), i as u32);
        }
        for t in &pool {
            let levels: Vec<&str> = t.split('/').collect();
            for &(mask, cut) in &masks {
                let mut f: Vec<&str> = levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| if mask & 1 << i != 0 { "+" } else { l })
                    .collect();
                if cut <= f.len() {
                    f.truncate(cut);
                    f.push("#");
                }
                let f = f.join("/");
                let got = index_matches(&index, &f);
                prop_assert_eq!(&got, &naive_matches(&model, &f), "{}", f);
                let dollar_rule = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
                prop_assert_eq!(got.iter().any(|(g, _)| g == t), !dollar_rule, "{} / {}", f, t);
            }
        }
    }

    /// A walk `budget` visits at a time, with random changes between the calls: no topic is
    /// reported twice, each report is a live, matching `(topic, value)`, every matching topic
    /// left alone for the whole walk is reported, and a cursor goes stale only after a
    /// removal. Without changes, any budget gives the unbounded result.
    #[test]
    fn bounded_walks_resume(
        pool in prop::collection::vec(topic(), 1..24),
        setup in prop::collection::vec((any::<Index>(), any::<u32>()), 0..40),
        filter in filter(),
        budget in 0..6usize,
        changes in prop::collection::vec(prop::collection::vec(op(), 0..3), 0..40),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = Model::new();
        for (i, v) in &setup {
            apply(&mut index, &mut model, &pool, &Op::Insert(*i, *v))?;
        }

        let want = naive_matches(&model, &filter);
        let mut got = Vec::new();
        let mut state = index.for_each_match_limited(&filter, budget, |t, v| {
            got.push((t.to_owned(), *v));
        });
        let mut calls = 1;
        while let Completion::Truncated(cursor) = state {
            calls += 1;
            state = index
                .resume_match(&filter, &cursor, budget, |t, v| got.push((t.to_owned(), *v)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        got.sort();
        prop_assert_eq!(&got, &want);
        prop_assert!(calls <= index.node_count().div_ceil(budget.max(1)) + 1);

        let start: Model = model.clone();
        let mut touched: HashSet<String> = HashSet::new();
        let mut reported: HashSet<String> = HashSet::new();
        let mut changes = changes.into_iter();
        let report = |model: &Model, reported: &mut HashSet<String>, t: &str, v: u32| {
            assert!(matches(&filter, t), "{filter} reported {t}");
            assert_eq!(model.get(t), Some(&v), "{t} reported with a stale value");
            assert!(reported.insert(t.to_owned()), "{t} reported twice");
        };
        let mut state = index.for_each_match_limited(&filter, budget, |t, v| {
            report(&model, &mut reported, t, *v);
        });
        let mut finished = true;
        while let Completion::Truncated(cursor) = state {
            let mut removed = false;
            for op in changes.next().unwrap_or_default() {
                removed |= matches!(op, Op::Remove(_) | Op::Reinsert(..) | Op::Retain(_));
                touched.extend(apply(&mut index, &mut model, &pool, &op)?);
            }
            match index.resume_match(&filter, &cursor, budget, |t, v| {
                report(&model, &mut reported, t, *v);
            }) {
                Ok(next) => state = next,
                Err(_) => {
                    prop_assert!(removed, "stale without a removal");
                    finished = false;
                    break;
                }
            }
        }
        if finished {
            for t in start.keys().filter(|t| matches(&filter, t) && !touched.contains(*t)) {
                prop_assert!(reported.contains(t), "{} missed", t);
            }
        }
    }
}
