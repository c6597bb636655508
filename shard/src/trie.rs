//! The topic trie: topic filters to subscribers, matched against topic names (4.7).
//!
//! [`TopicTrie`] maps a topic filter to a set of entries `key → value`. It serves twice per
//! shard (see Routing in `ARCHITECTURE.md`):
//!
//! * the **local subscription index**: `K` = a session slot, `V` = the subscription options;
//! * the **route table**: `K` = a shard id, `V` = `()` or a count of local subscribers. A topic
//!   may match several filters of the same shard, so the caller of
//!   [`for_each_match`](TopicTrie::for_each_match) deduplicates shards (a bit set).
//!
//! Filters are valid ([`validate_topic_filter`]) and not shared: the caller splits
//! `$share/{group}/` off with [`split_shared`] and keeps groups elsewhere. Matching follows 4.7:
//! `+` matches one level, `#` zero or more levels at the end (`a/#` matches `a`), empty levels
//! are levels (`a//b`, `/a`, `a/`), and a topic starting with `$` is not matched by a filter
//! starting with a wildcard ([MQTT-4.7.2-1]).
//!
//! # Memory layout
//!
//! ```text
//! nodes:     Vec<Node>                               arena, index 0 = root; freed slots are
//!                                                    kept on `free` and reused
//! Node:      entries  Vec<(K, V)>                    the subscriptions of this exact filter
//!            parent   u32                            arena index of the parent (0 for root)
//!            plus     Option<NonZeroU32>             the `+` child
//!            hash     Option<NonZeroU32>             the `#` child (has entries, no children)
//!            literals u32                            number of literal children
//! children:  HashMap<(parent u32, level Box<str>), NonZeroU32>   every literal edge of the trie
//! positions: HashMap<(node u32, K), u32>             index of K's entry in node.entries
//! ```
//!
//! A node is a filter prefix; a filter is the node reached by following its levels, and it
//! exists while it or a longer filter has an entry. A node costs 40 bytes plus its entries
//! (`size_of::<(K, V)>()` each); each literal edge costs one `children` bucket (32 bytes and
//! one control byte) plus the level string on the heap, each entry one `positions` bucket.
//! Literal edges live in one map keyed by `(parent, level)` rather than one map per node: most
//! nodes are leaves, and an empty per-node `HashMap` alone would cost 48 bytes. Looking up
//! `(parent, &str)` without building a `Box<str>` goes through a borrowed trait object
//! (`LevelKey`), so no lookup allocates.
//!
//! Removing the last entry of a filter prunes the nodes left with neither entries nor
//! children; freed slots hold no heap memory but keep their 40 bytes in the arena for reuse,
//! until the trie becomes empty (the arena is then cut back to the root) or
//! [`shrink_to_fit`](TopicTrie::shrink_to_fit) gives back the trailing ones. The maps and a
//! node's entries shrink when they fall below a quarter of their capacity.
//!
//! Measured with the `trie` bench workload (`K` = `V` = `u32`, 5-level filters, 1.6 nodes
//! per filter): about 250 bytes per filter at 100,000 filters as grown, 206 after
//! `shrink_to_fit`; level strings are not shared between nodes.
//!
//! # Complexity
//!
//! With `L` the number of levels of a filter or topic (bytes hashed are `O(len)`):
//!
//! * [`insert`](TopicTrie::insert), [`remove`](TopicTrie::remove), [`get`](TopicTrie::get),
//!   [`contains_filter`](TopicTrie::contains_filter): `O(L)` expected hash lookups, plus one
//!   in `positions`. An entry is removed by `swap_remove`, so a filter with a million
//!   subscribers still removes one in `O(1)`.
//! * [`for_each_match`](TopicTrie::for_each_match): `O(N + M)` where `M` is the number of
//!   matching entries and `N` the number of nodes whose filter prefix matches a prefix of the
//!   topic; each costs one hash lookup for the literal child and a field read for `+` and `#`.
//!   `N ≤ L + 1` without `+`; each `+` level can at most double the candidates of a level, and
//!   `N` never exceeds the size of the trie.
//! * The match walk allocates nothing and uses `O(1)` memory at any depth: it is an iterative
//!   depth-first walk that backtracks along the `parent` links (the topic position of the
//!   parent is found by scanning back to the previous `/`) instead of keeping a stack.
//!
//! The hasher `S` defaults to [`RandomState`]: levels come from the network, so a keyed hash
//! keeps a client from building colliding filters. Both maps resize by rehashing all their
//! entries at once (amortised `O(1)` per insert, but one insert in a large index pays for it).
//!
//! [`validate_topic_filter`]: net::mqtt::topic::validate_topic_filter
//! [`split_shared`]: net::mqtt::topic::split_shared
//! [MQTT-4.7.2-1]: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901246

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::mem;
use std::num::NonZeroU32;

/// A subscription index from topic filters to `key → value` entries; see the [module
/// documentation](self) for the matching rules, the layout and the costs.
///
/// `K` identifies a subscriber (a session slot, a shard id); a filter holds at most one entry
/// per key.
pub struct TopicTrie<K, V, S = RandomState> {
    /// Arena of nodes; index 0 is the root and is never freed.
    nodes: Vec<Node<K, V>>,
    /// Free arena slots (never 0). A free slot has no entries, no children, no heap memory.
    free: Vec<NonZeroU32>,
    /// Literal edges: `(parent, level)` → child.
    children: HashMap<ChildKey, NonZeroU32, S>,
    /// `(node, key)` → index of the key's entry in the node's `entries`.
    positions: HashMap<(u32, K), u32, S>,
    /// Number of nodes with at least one entry.
    filters: usize,
}

/// Arena index of the root.
const ROOT: u32 = 0;

/// Below this capacity the maps and entry vectors are not shrunk.
const MIN_SHRINK_CAPACITY: usize = 64;

/// One filter prefix.
struct Node<K, V> {
    /// The subscriptions whose filter ends at this node, in no particular order.
    entries: Vec<(K, V)>,
    /// Arena index of the parent; 0 (the root) for the root itself and for free slots.
    parent: u32,
    /// The `+` child.
    plus: Option<NonZeroU32>,
    /// The `#` child: it has entries and never children.
    hash: Option<NonZeroU32>,
    /// Number of literal children, which live in `TopicTrie::children`.
    literals: u32,
}

impl<K, V> Node<K, V> {
    fn new(parent: u32) -> Self {
        Node {
            entries: Vec::new(),
            parent,
            plus: None,
            hash: None,
            literals: 0,
        }
    }

    /// Whether the node can be pruned: no entries and no children.
    fn is_vacant(&self) -> bool {
        self.entries.is_empty() && self.plus.is_none() && self.hash.is_none() && self.literals == 0
    }
}

impl<K, V> TopicTrie<K, V, RandomState> {
    /// An empty trie with the default, randomly keyed hasher.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<K, V, S: Default> Default for TopicTrie<K, V, S> {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::new(ROOT)],
            free: Vec::new(),
            children: HashMap::default(),
            positions: HashMap::default(),
            filters: 0,
        }
    }
}

impl<K, V, S: Clone> TopicTrie<K, V, S> {
    /// An empty trie hashing levels and keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        TopicTrie {
            nodes: vec![Node::new(ROOT)],
            free: Vec::new(),
            children: HashMap::with_hasher(hasher.clone()),
            positions: HashMap::with_hasher(hasher),
            filters: 0,
        }
    }
}

impl<K, V, S> TopicTrie<K, V, S> {
    /// Number of filters with at least one entry.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Number of `(filter, key)` entries.
    pub fn entry_count(&self) -> usize {
        self.positions.len()
    }

    /// Whether the trie has no entries.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Number of live nodes, the root included: 1 when the trie is empty.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn node(&self, n: u32) -> &Node<K, V> {
        &self.nodes[n as usize]
    }

    fn node_mut(&mut self, n: u32) -> &mut Node<K, V> {
        &mut self.nodes[n as usize]
    }
}

impl<K: Copy + Eq + Hash, V, S: BuildHasher> TopicTrie<K, V, S> {
    /// Adds or replaces the entry of `key` on `filter`; returns the value it replaces.
    ///
    /// `filter` must be a valid, non-shared topic filter (checked in debug builds).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        debug_assert!(
            net::mqtt::topic::validate_topic_filter(filter).is_ok()
                && net::mqtt::topic::split_shared(filter).is_none(),
            "invalid or shared topic filter {filter:?}"
        );
        let n = self.find_or_create(filter);
        match self.positions.entry((n, key)) {
            Entry::Occupied(o) => {
                let node = &mut self.nodes[n as usize];
                Some(mem::replace(&mut node.entries[*o.get() as usize].1, value))
            }
            Entry::Vacant(slot) => {
                let node = &mut self.nodes[n as usize];
                slot.insert(index_u32(node.entries.len()));
                if node.entries.is_empty() {
                    self.filters += 1;
                }
                node.entries.push((key, value));
                None
            }
        }
    }

    /// Removes the entry of `key` on `filter` and returns its value; prunes the nodes this
    /// leaves unused.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let n = self.find(filter)?;
        let i = self.positions.remove(&(n, *key))?;
        maybe_shrink_map(&mut self.positions);
        let node = &mut self.nodes[n as usize];
        let (_, value) = node.entries.swap_remove(i as usize);
        if let Some((moved, _)) = node.entries.get(i as usize) {
            let moved = *moved;
            match self.positions.get_mut(&(n, moved)) {
                Some(p) => *p = i,
                None => debug_assert!(false, "entry without a position"),
            }
        }
        let node = &mut self.nodes[n as usize];
        if node.entries.is_empty() {
            self.filters -= 1;
            self.prune(n, filter);
        } else if node.entries.capacity() >= MIN_SHRINK_CAPACITY
            && node.entries.len() * 4 < node.entries.capacity()
        {
            node.entries.shrink_to(node.entries.len() * 2);
        }
        Some(value)
    }

    /// The value of `key` on `filter`.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let n = self.find(filter)?;
        let i = *self.positions.get(&(n, *key))?;
        self.node(n).entries.get(i as usize).map(|(_, v)| v)
    }

    /// The value of `key` on `filter`, mutably (e.g. a route count).
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let n = self.find(filter)?;
        let i = *self.positions.get(&(n, *key))?;
        self.node_mut(n).entries.get_mut(i as usize).map(|(_, v)| v)
    }

    /// Whether `filter` has at least one entry.
    pub fn contains_filter(&self, filter: &str) -> bool {
        self.find(filter)
            .is_some_and(|n| !self.node(n).entries.is_empty())
    }

    /// The entries of exactly `filter` (no wildcard matching), in no particular order; empty
    /// if it has none.
    pub fn entries(&self, filter: &str) -> &[(K, V)] {
        match self.find(filter) {
            Some(n) => &self.node(n).entries,
            None => &[],
        }
    }

    /// Calls `f` once per `(filter, key)` entry whose filter matches the topic name `topic`,
    /// in no particular order. Allocates nothing.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        // The walk is a depth-first search over the nodes whose filter prefix matches the
        // topic prefix of the same length. State: the node `n` and `pos`, the byte offset in
        // `topic` of the first level `n` has not consumed; `pos == end` when all levels are
        // consumed. `+` and a literal both consume one level, so siblings share `pos`.
        let end = topic.len() + 1;
        // [MQTT-4.7.2-1]: no wildcard at the first level matches a topic starting with `$`.
        let dollar = topic.starts_with('$');
        let mut n = ROOT;
        let mut pos = 0;
        'descend: loop {
            let node = self.node(n);
            // `#` matches the rest of the topic, zero levels included.
            if let Some(h) = node.hash {
                if !(dollar && n == ROOT) {
                    for (k, v) in &self.node(h.get()).entries {
                        f(k, v);
                    }
                }
            }
            if pos == end {
                for (k, v) in &node.entries {
                    f(k, v);
                }
            } else {
                let (level, next) = match topic[pos..].find('/') {
                    Some(i) => (&topic[pos..pos + i], pos + i + 1),
                    None => (&topic[pos..], end),
                };
                // Literal child first, then `+`; backtracking takes `+` after a literal.
                if let Some(c) = self.child(n, level) {
                    n = c;
                    pos = next;
                    continue 'descend;
                }
                if let Some(p) = node.plus {
                    if !(dollar && n == ROOT) {
                        n = p.get();
                        pos = next;
                        continue 'descend;
                    }
                }
            }
            // Backtrack up to the nearest ancestor with an unvisited `+` branch.
            loop {
                if n == ROOT {
                    return;
                }
                let parent = self.node(n).parent;
                let plus = self.node(parent).plus;
                if let Some(p) = plus {
                    // `n` is the literal child when it is not the `+` child (never `#`).
                    if p.get() != n && !(dollar && parent == ROOT) {
                        n = p.get();
                        continue 'descend;
                    }
                }
                // The level `n` consumed ends at `pos - 1` (a `/` or the end of the topic).
                pos = topic[..pos - 1].rfind('/').map_or(0, |i| i + 1);
                n = parent;
            }
        }
    }

    /// Removes every entry and gives back the memory of the nodes and maps.
    pub fn clear(&mut self) {
        self.nodes.truncate(1);
        self.nodes.shrink_to_fit();
        self.nodes[ROOT as usize] = Node::new(ROOT);
        self.free = Vec::new();
        self.children.clear();
        self.children.shrink_to_fit();
        self.positions.clear();
        self.positions.shrink_to_fit();
        self.filters = 0;
    }

    /// Gives back the trailing free arena slots and the spare capacity of the maps.
    pub fn shrink_to_fit(&mut self) {
        self.free.sort_unstable();
        while self
            .free
            .last()
            .is_some_and(|f| f.get() as usize == self.nodes.len() - 1)
        {
            self.free.pop();
            self.nodes.pop();
        }
        self.free.shrink_to_fit();
        self.nodes.shrink_to_fit();
        self.children.shrink_to_fit();
        self.positions.shrink_to_fit();
    }

    /// The literal child of `parent` for `level`.
    fn child(&self, parent: u32, level: &str) -> Option<u32> {
        if self.node(parent).literals == 0 {
            return None; // Most nodes are leaves: skip hashing.
        }
        self.children
            .get(&(parent, level) as &dyn LevelKey)
            .map(|c| c.get())
    }

    /// The node of `filter`, if it exists.
    fn find(&self, filter: &str) -> Option<u32> {
        let mut n = ROOT;
        for level in filter.split('/') {
            n = match level {
                "+" => self.node(n).plus?.get(),
                "#" => self.node(n).hash?.get(),
                _ => self.child(n, level)?,
            };
        }
        Some(n)
    }

    /// The node of `filter`, created with its missing ancestors.
    fn find_or_create(&mut self, filter: &str) -> u32 {
        let mut n = ROOT;
        for level in filter.split('/') {
            n = match level {
                "+" => match self.node(n).plus {
                    Some(c) => c.get(),
                    None => {
                        let c = self.alloc(n);
                        self.node_mut(n).plus = Some(c);
                        c.get()
                    }
                },
                "#" => match self.node(n).hash {
                    Some(c) => c.get(),
                    None => {
                        let c = self.alloc(n);
                        self.node_mut(n).hash = Some(c);
                        c.get()
                    }
                },
                _ => match self.child(n, level) {
                    Some(c) => c,
                    None => {
                        let c = self.alloc(n);
                        let key = ChildKey {
                            parent: n,
                            level: level.into(),
                        };
                        self.children.insert(key, c);
                        self.node_mut(n).literals += 1;
                        c.get()
                    }
                },
            };
        }
        n
    }

    /// A fresh node under `parent`.
    fn alloc(&mut self, parent: u32) -> NonZeroU32 {
        match self.free.pop() {
            Some(c) => {
                self.nodes[c.get() as usize] = Node::new(parent);
                c
            }
            None => {
                // The arena is never empty: it holds the root.
                let c = nonzero_index(self.nodes.len());
                self.nodes.push(Node::new(parent));
                c
            }
        }
    }

    /// Frees `n` (the node of `filter`, now without entries) and its ancestors while they
    /// are vacant.
    fn prune(&mut self, mut n: u32, filter: &str) {
        let mut levels = filter.rsplit('/');
        while n != ROOT && self.node(n).is_vacant() {
            let Some(level) = levels.next() else {
                debug_assert!(false, "node deeper than its filter");
                return;
            };
            let parent = self.node(n).parent;
            match level {
                "+" => self.node_mut(parent).plus = None,
                "#" => self.node_mut(parent).hash = None,
                _ => {
                    self.children.remove(&(parent, level) as &dyn LevelKey);
                    self.node_mut(parent).literals -= 1;
                }
            }
            // Drop the entries' buffer: a free slot holds no heap memory.
            self.nodes[n as usize] = Node::new(ROOT);
            self.free.push(nonzero_index(n as usize));
            n = parent;
        }
        maybe_shrink_map(&mut self.children);
        if self.node(ROOT).is_vacant() {
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
            self.children.shrink_to_fit();
            self.positions.shrink_to_fit();
        }
    }
}

impl<K, V, S> fmt::Debug for TopicTrie<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTrie")
            .field("filters", &self.filters)
            .field("entries", &self.positions.len())
            .field("nodes", &self.node_count())
            .finish_non_exhaustive()
    }
}

/// `n` as a `u32` arena or entry index.
// Invariant: fewer than `u32::MAX` nodes, and fewer than `u32::MAX` entries per node. A node
// takes 40 bytes and an entry more than 8 in `positions`, so memory runs out long before.
#[allow(clippy::expect_used)]
fn index_u32(n: usize) -> u32 {
    u32::try_from(n).expect("topic trie index overflows u32")
}

/// `n` as a child link.
// Invariant: `n` is never 0, the root's index: the root is never allocated nor freed.
#[allow(clippy::expect_used)]
fn nonzero_index(n: usize) -> NonZeroU32 {
    NonZeroU32::new(index_u32(n)).expect("the root is not a child")
}

/// Shrinks a map that fell below a quarter of its capacity to twice its length.
fn maybe_shrink_map<Q: Eq + Hash, T, S: BuildHasher>(map: &mut HashMap<Q, T, S>) {
    if map.capacity() >= MIN_SHRINK_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Key of a literal edge in `TopicTrie::children`.
struct ChildKey {
    parent: u32,
    level: Box<str>,
}

/// A literal edge, owned ([`ChildKey`]) or borrowed (`(u32, &str)`), so that the map can be
/// queried without allocating a `Box<str>`. Both hash and compare through this trait.
trait LevelKey {
    fn parent(&self) -> u32;
    fn level(&self) -> &str;
}

impl LevelKey for ChildKey {
    fn parent(&self) -> u32 {
        self.parent
    }

    fn level(&self) -> &str {
        &self.level
    }
}

impl LevelKey for (u32, &str) {
    fn parent(&self) -> u32 {
        self.0
    }

    fn level(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn LevelKey + 'a> for ChildKey {
    fn borrow(&self) -> &(dyn LevelKey + 'a) {
        self
    }
}

impl Hash for dyn LevelKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parent().hash(state);
        self.level().hash(state);
    }
}

impl PartialEq for dyn LevelKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parent() == other.parent() && self.level() == other.level()
    }
}

impl Eq for dyn LevelKey + '_ {}

// `Borrow` requires the owned key to hash and compare exactly as the borrowed form.
impl Hash for ChildKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn LevelKey).hash(state);
    }
}

impl PartialEq for ChildKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn LevelKey) == (other as &dyn LevelKey)
    }
}

impl Eq for ChildKey {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters of `trie` matching `topic`, sorted; the value of each entry is its filter.
    fn matched(trie: &TopicTrie<u32, &'static str>, topic: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |_, filter| out.push(*filter));
        out.sort_unstable();
        out
    }

    fn trie_of(filters: &[&'static str]) -> TopicTrie<u32, &'static str> {
        let mut trie = TopicTrie::new();
        for &f in filters {
            assert_eq!(trie.insert(f, 1, f), None);
        }
        trie
    }

    /// Asserts `filter` matches exactly the topics in `yes` and none in `no`, alone in a trie
    /// and among other filters, and agrees with the naive matcher.
    fn check(filter: &'static str, yes: &[&str], no: &[&str]) {
        let alone = trie_of(&[filter]);
        let crowd = trie_of(&[filter, "zz/#", "zz/+/y", "+/zz", "zz"]);
        for topic in yes {
            assert_eq!(
                matched(&alone, topic),
                [filter],
                "{filter} should match {topic}"
            );
            assert!(
                matched(&crowd, topic).contains(&filter),
                "{filter} / {topic}"
            );
            assert!(
                net::mqtt::topic::matches(filter, topic),
                "naive {filter} / {topic}"
            );
        }
        for topic in no {
            assert!(
                matched(&alone, topic).is_empty(),
                "{filter} must not match {topic}"
            );
            assert!(
                !matched(&crowd, topic).contains(&filter),
                "{filter} / {topic}"
            );
            assert!(
                !net::mqtt::topic::matches(filter, topic),
                "naive {filter} / {topic}"
            );
        }
    }

    // 4.7.1.2 Multi-level wildcard.
    #[test]
    fn multi_level_wildcard() {
        check(
            "sport/tennis/player1/#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player1/",
            ],
            &[
                "sport/tennis/player2",
                "sport/tennis",
                "sport/tennis/player10",
            ],
        );
        check(
            "sport/#",
            &["sport", "sport/", "sport/a/b/c"],
            &["sports", "/sport"],
        );
        check(
            "#",
            &["a", "/", "a/b/c", "/finance", "sport"],
            &["$SYS", "$SYS/a"],
        );
        check(
            "sport/tennis/#",
            &["sport/tennis", "sport/tennis/x"],
            &["sport/ten"],
        );
    }

    // 4.7.1.3 Single-level wildcard.
    #[test]
    fn single_level_wildcard() {
        check(
            "sport/tennis/+",
            &[
                "sport/tennis/player1",
                "sport/tennis/player2",
                "sport/tennis/",
            ],
            &["sport/tennis/player1/ranking", "sport/tennis"],
        );
        check("sport/+", &["sport/", "sport/x"], &["sport", "sport/x/y"]);
        check("+", &["finance", "x"], &["/finance", "a/", "$SYS", "$"]);
        check("+/+", &["/finance", "a/b", "/"], &["a", "a/b/c", "$SYS/a"]);
        check("/+", &["/finance", "/"], &["finance", "a/finance", "//a"]);
        check(
            "+/tennis/#",
            &["sport/tennis", "sport/tennis/player1", "/tennis"],
            &["sport/golf", "$SYS/tennis"],
        );
        check(
            "sport/+/player1",
            &["sport/tennis/player1", "sport//player1"],
            &[],
        );
    }

    // 4.7.2 Topics beginning with $.
    #[test]
    fn dollar_topics() {
        check(
            "+/monitor/Clients",
            &["a/monitor/Clients"],
            &["$SYS/monitor/Clients"],
        );
        check(
            "$SYS/#",
            &["$SYS/monitor/Clients", "$SYS"],
            &["SYS/a", "a/$SYS"],
        );
        check(
            "$SYS/monitor/+",
            &["$SYS/monitor/Clients"],
            &["$SYS/monitor"],
        );
        check("+/#", &["a/$SYS", "a"], &["$SYS/a", "$"]);
        // The rule is about the first level only.
        check("a/+", &["a/$SYS"], &[]);
        check("a/#", &["a/$SYS/x"], &[]);
    }

    // 4.7.3 Topic semantic and usage.
    #[test]
    fn levels_are_exact() {
        check("ACCOUNTS", &["ACCOUNTS"], &["Accounts", "accounts"]);
        check("Accounts payable", &["Accounts payable"], &["Accounts"]);
        check("/finance", &["/finance"], &["finance", "finance/"]);
        check("a//b", &["a//b"], &["a/b", "a///b"]);
        check("a/+/b", &["a//b", "a/x/b"], &["a/b"]);
        check("/", &["/"], &["//", "a/"]);
        check("é/ü/+", &["é/ü/ß"], &["é/u/ß"]);
    }

    #[test]
    fn insert_remove_prunes() {
        let mut trie: TopicTrie<u32, u8> = TopicTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
        assert_eq!(trie.insert("a/b/c", 1, 10), None);
        assert_eq!(trie.insert("a/b/c", 1, 11), Some(10));
        assert_eq!(trie.insert("a/b/c", 2, 20), None);
        assert_eq!(trie.insert("a/+/#", 1, 30), None);
        assert_eq!(trie.insert("a", 3, 40), None);
        assert_eq!((trie.filter_count(), trie.entry_count()), (3, 4));
        assert_eq!(trie.node_count(), 6); // root, a, a/b, a/b/c, a/+, a/+/#
        assert_eq!(trie.get("a/b/c", &1), Some(&11));
        assert_eq!(trie.get("a/b/c", &3), None);
        assert_eq!(trie.get("a/b", &1), None);
        assert!(trie.contains_filter("a/+/#"));
        assert!(
            !trie.contains_filter("a/b"),
            "an inner node is not a filter"
        );
        assert!(!trie.contains_filter("a/+"));
        *trie.get_mut("a", &3).unwrap() += 1;
        assert_eq!(trie.entries("a"), &[(3, 41)]);

        assert_eq!(trie.remove("a/b/c", &3), None);
        assert_eq!(trie.remove("a/b", &1), None);
        assert_eq!(trie.remove("x/y", &1), None);
        assert_eq!(trie.remove("a/b/c", &1), Some(11));
        assert_eq!(trie.remove("a/b/c", &1), None);
        assert_eq!(
            trie.get("a/b/c", &2),
            Some(&20),
            "swap_remove kept the position"
        );
        assert_eq!(trie.remove("a/b/c", &2), Some(20));
        assert_eq!(trie.node_count(), 4); // root, a, a/+, a/+/#
        assert!(!trie.contains_filter("a/b/c"));
        assert_eq!(trie.remove("a/+/#", &1), Some(30));
        assert_eq!(trie.node_count(), 2);
        assert_eq!(trie.remove("a", &3), Some(41));
        assert!(trie.is_empty());
        assert_eq!((trie.filter_count(), trie.entry_count()), (0, 0));
        assert_eq!(trie.nodes.len(), 1, "the arena is back to the root");
        assert!(trie.children.is_empty());
    }

    #[test]
    fn free_slots_are_reused() {
        let mut trie: TopicTrie<u32, ()> = TopicTrie::new();
        trie.insert("keep", 0, ());
        for i in 0..100 {
            trie.insert(&format!("t/{i}/x"), i, ());
        }
        let arena = trie.nodes.len();
        for i in 0..100 {
            assert_eq!(trie.remove(&format!("t/{i}/x"), &i), Some(()));
        }
        assert_eq!(trie.node_count(), 2);
        for i in 0..100 {
            trie.insert(&format!("u/{i}/y"), i, ());
        }
        assert_eq!(trie.nodes.len(), arena, "freed slots are reused");
        for i in 0..100 {
            trie.remove(&format!("u/{i}/y"), &i);
        }
        trie.shrink_to_fit();
        assert_eq!(trie.nodes.len(), 2);
        assert!(trie.free.is_empty());
        assert!(trie.contains_filter("keep"));
    }

    #[test]
    fn many_keys_on_one_filter() {
        let mut trie: TopicTrie<u32, u32> = TopicTrie::new();
        for k in 0..1000 {
            trie.insert("news/#", k, k * 2);
        }
        for k in (0..1000).filter(|k| k % 10 != 0) {
            assert_eq!(trie.remove("news/#", &k), Some(k * 2));
        }
        let mut seen = Vec::new();
        trie.for_each_match("news/today", |k, v| {
            assert_eq!(*v, k * 2);
            seen.push(*k);
        });
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).step_by(10).collect::<Vec<_>>());
        for k in (0..1000).step_by(10) {
            assert_eq!(trie.get("news/#", &k), Some(&(k * 2)));
        }
        let n = trie.find("news/#").unwrap();
        assert!(trie.node(n).entries.capacity() <= 400, "entries shrink");
        assert!(trie.positions.capacity() <= 800, "positions shrink");
    }

    /// A route table: shard id → number of local subscribers on the filter.
    #[test]
    fn route_table() {
        let mut routes: TopicTrie<u16, u32> = TopicTrie::new();
        // Subscribe: announce the route only on the first subscriber of a shard.
        let subscribe = |routes: &mut TopicTrie<u16, u32>, filter: &str, shard: u16| match routes
            .get_mut(filter, &shard)
        {
            Some(count) => {
                *count += 1;
                false
            }
            None => routes.insert(filter, shard, 1).is_none(),
        };
        assert!(subscribe(&mut routes, "a/+", 0));
        assert!(!subscribe(&mut routes, "a/+", 0));
        assert!(subscribe(&mut routes, "a/+", 3));
        assert!(subscribe(&mut routes, "a/#", 0));
        assert!(subscribe(&mut routes, "#", 5));
        let mut shards = 0u64;
        routes.for_each_match("a/b", |s, _| shards |= 1 << s);
        assert_eq!(shards, 0b10_1001);
        let mut shards = 0u64;
        routes.for_each_match("$SYS/x", |s, _| shards |= 1 << s);
        assert_eq!(shards, 0);
        // Unsubscribe: withdraw on the last one.
        let unsubscribe = |routes: &mut TopicTrie<u16, u32>, filter: &str, shard: u16| {
            let count = routes.get_mut(filter, &shard).unwrap();
            *count -= 1;
            *count == 0 && routes.remove(filter, &shard).is_some()
        };
        assert!(!unsubscribe(&mut routes, "a/+", 0));
        assert!(unsubscribe(&mut routes, "a/+", 0));
        assert!(unsubscribe(&mut routes, "a/+", 3));
        assert!(unsubscribe(&mut routes, "a/#", 0));
        assert!(unsubscribe(&mut routes, "#", 5));
        assert!(routes.is_empty());
        assert_eq!(routes.node_count(), 1);

        // The set flavour.
        let mut set: TopicTrie<u16, ()> = TopicTrie::new();
        assert_eq!(set.insert("x/+", 2, ()), None);
        assert_eq!(set.insert("x/+", 2, ()), Some(()));
        let mut hits = 0;
        set.for_each_match("x/y", |s, ()| {
            assert_eq!(*s, 2);
            hits += 1;
        });
        assert_eq!(hits, 1);
    }

    /// Filters and topics far deeper than `mqtt.max_topic_levels`: the walk does not recurse.
    #[test]
    fn deep_topics() {
        let depth = 5000;
        let topic = vec!["l"; depth].join("/");
        let mut trie: TopicTrie<u32, usize> = TopicTrie::new();
        let plus = vec!["+"; depth].join("/");
        let mixed: String = (0..depth)
            .map(|i| if i % 2 == 0 { "l" } else { "+" })
            .collect::<Vec<_>>()
            .join("/");
        let prefix_hash = format!("{}/#", vec!["l"; depth - 1].join("/"));
        trie.insert(&topic, 0, 1);
        trie.insert(&plus, 0, 2);
        trie.insert(&mixed, 0, 3);
        trie.insert(&prefix_hash, 0, 4);
        trie.insert(&format!("{topic}/l"), 0, 5);
        let mut got = Vec::new();
        trie.for_each_match(&topic, |_, v| got.push(*v));
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4]);
        for f in [&topic, &plus, &mixed, &prefix_hash, &format!("{topic}/l")] {
            assert!(trie.remove(f, &0).is_some());
        }
        assert_eq!(trie.node_count(), 1);
    }

    /// Every `+`/literal combination of a topic of 12 levels: 4096 filters match.
    #[test]
    fn wide_backtracking() {
        let levels = 12;
        let topic = vec!["t"; levels].join("/");
        let mut trie: TopicTrie<u32, ()> = TopicTrie::new();
        for mask in 0u32..1 << levels {
            let f: Vec<&str> = (0..levels)
                .map(|i| if mask & 1 << i != 0 { "+" } else { "t" })
                .collect();
            trie.insert(&f.join("/"), mask, ());
        }
        let mut seen = vec![false; 1 << levels];
        trie.for_each_match(&topic, |k, ()| {
            assert!(!seen[*k as usize], "matched twice");
            seen[*k as usize] = true;
        });
        assert!(seen.iter().all(|s| *s));
        let mut n = 0;
        trie.for_each_match("$/t/t/t/t/t/t/t/t/t/t/t", |_, ()| n += 1);
        assert_eq!(
            n, 0,
            "no `t` at the first level, and `+` is not allowed there"
        );
    }

    #[test]
    fn layout() {
        assert_eq!(mem::size_of::<Node<u32, ()>>(), 40);
        assert_eq!(mem::size_of::<(ChildKey, NonZeroU32)>(), 32);
    }

    #[test]
    fn debug_and_clear() {
        let mut trie: TopicTrie<u32, ()> = TopicTrie::default();
        trie.insert("a/b", 1, ());
        assert_eq!(
            format!("{trie:?}"),
            "TopicTrie { filters: 1, entries: 1, nodes: 3, .. }"
        );
        trie.clear();
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
        assert!(trie.entries("a/b").is_empty());
        trie.insert("a/b", 1, ());
        assert!(trie.contains_filter("a/b"));
    }
}
