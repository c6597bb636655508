//! The retained message index: topic names to retained messages, matched against a topic
//! filter (3.3.1.3, 4.7).
//!
//! [`RetainedIndex`] is the reverse of the [subscription trie](crate::trie): it stores topic
//! names (no wildcards), at most one value per topic, and is queried with a topic filter. Each
//! shard owns the retained messages of the topics that hash to it (see Routing in
//! `docs/architecture.md`); a SUBSCRIBE gathers the matches of every shard. The caller maps
//! 3.3.1.3 onto it: a retained PUBLISH with a payload [`insert`](RetainedIndex::insert)s
//! (replacing the previous message of the topic), one with an empty payload
//! [`remove`](RetainedIndex::remove)s, and [`retain`](RetainedIndex::retain) drops the messages
//! whose Message Expiry Interval has passed.
//!
//! Filters are valid and not shared: the caller splits `$share/{group}/` off (4.8.2; retained
//! messages are not sent for a shared subscription, [MQTT-3.8.4-4]). Matching follows 4.7, as in
//! [`matches`]: `+` matches exactly one level, empty ones included; `#` matches the parent level
//! and any number of levels below (`a/#` matches `a`, `a/`, `a/b/c`); empty levels are levels
//! (`a//b`, `/a`, `a/`); and a filter starting with a wildcard does not match a topic starting
//! with `$` ([MQTT-4.7.2-1]).
//!
//! # Memory layout
//!
//! ```text
//! nodes:    Vec<Node>                                arena, index 0 = root; freed slots are
//!                                                    kept on `free` and reused
//! Node:     entry       Option<(Box<str>, V)>        the full topic name and its value
//!           parent      u32                          arena index of the parent (0 for root)
//!           first_child u32                          head of the child list (0: none)
//!           next, prev  u32                          the sibling list, doubly linked (0: none)
//!           stamp       u32                          allocation stamp (0: free), for cursors
//! dollar:   u32                                      head of the list of root children whose
//!                                                    level starts with `$`
//! children: HashMap<(parent u32, level Box<str>), NonZeroU32>   every edge of the tree
//! ```
//!
//! A node is a topic prefix and exists while it or a longer topic has a value. The edges are
//! kept twice: in `children`, to follow a literal level in one hash lookup, and as an intrusive
//! child list, to enumerate the children for `+` and `#` without allocating. New children go to
//! the head of their list; `prev` makes unlinking `O(1)`. The root keeps its `$` children on a
//! separate list, so `+` and `#` at the first level never see them ([MQTT-4.7.2-1]) and pay
//! nothing for them.
//!
//! A node costs 48 bytes when `V` is 8 bytes (20 bytes of links and stamp, plus
//! `Option<(Box<str>, V)>`, rounded up), an edge one `children` bucket (32 bytes and one control
//! byte) plus its level on the heap, and a topic with a value its full name on the heap once
//! more: [`for_each_match`] hands the stored `&str` to its callback, so no topic is rebuilt per
//! match.
//!
//! Removing a value prunes the nodes left with neither a value nor children; freed slots hold
//! no heap memory but keep their bytes in the arena for reuse, until the index becomes empty
//! (the arena is then cut back to the root) or
//! [`shrink_to_fit`](RetainedIndex::shrink_to_fit) gives back the trailing ones. The `children`
//! map shrinks when it falls below a quarter of its capacity.
//!
//! Measured with the `retained` bench workload (`V` = `u64`, 5-level topics of 27 bytes on
//! average, 2.1 nodes per topic): about 250 bytes requested from the allocator per topic at
//! 100,000 topics as grown, 222 after `shrink_to_fit`; level strings are not shared between
//! nodes, nor with the topic names.
//!
//! # Complexity
//!
//! With `L` the number of levels of a topic or filter (bytes hashed are `O(len)`):
//!
//! * [`insert`](RetainedIndex::insert), [`remove`](RetainedIndex::remove),
//!   [`get`](RetainedIndex::get): `O(L)` expected hash lookups.
//! * [`for_each_match`]: `O(N)` where `N` is the number of nodes visited: the nodes whose topic
//!   prefix matches a prefix of the filter, plus, under a trailing `#`, the whole subtree. A
//!   filter without wildcards visits at most `L + 1` nodes; `+` visits every child of a node and
//!   `#` every descendant, whether or not they hold a value, and `N` never exceeds the size of
//!   the index. The walk allocates nothing and uses `O(1)` memory at any depth: it is an
//!   iterative depth-first walk along the `parent`, `first_child` and `next` links, and finds
//!   the filter position of a parent by scanning back to the previous `/`.
//! * [`retain`](RetainedIndex::retain): `O(arena)`, plus the pruning of what it removes.
//!
//! # Bounded work
//!
//! A wildcard filter over a large index may visit every node, which is too long for one turn
//! of a shard's loop. [`for_each_match_limited`](RetainedIndex::for_each_match_limited) stops
//! after a number of node visits and returns a [`Cursor`]; the shard may answer partially (stop
//! there), or continue later with [`resume_match`](RetainedIndex::resume_match), after other
//! work and even after the index changed:
//!
//! * every topic that has a value for the whole walk (first call to last) and matches the
//!   filter is reported exactly once, with its value at the time of the report;
//! * a topic inserted or removed in between is reported at most once;
//! * the cursor goes stale ([`StaleCursor`]) only when the node it was about to visit has been
//!   pruned in between; the caller then restarts (and may send a topic twice) or stops.
//!
//! The first two hold because the walk is a pre-order over lists that only change by unlinking
//! a node or linking a new one at the head: the surviving nodes keep their order, and a new
//! node sits before every existing sibling, that is before the walk's position if the walk has
//! entered that list already (a topic removed after its report and inserted again is not
//! reported again).
//!
//! The hasher `S` defaults to [`RandomState`]: topic levels come from the network, so a keyed
//! hash keeps a client from publishing colliding topics.
//!
//! [`matches`]: net::mqtt::topic::matches
//! [`for_each_match`]: RetainedIndex::for_each_match
//! [MQTT-3.8.4-4]: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901174
//! [MQTT-4.7.2-1]: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901246

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::mem;
use std::num::NonZeroU32;

/// An index from topic names to one value each (a retained message), matched against topic
/// filters; see the [module documentation](self) for the matching rules, the layout, the costs
/// and the bounded walk.
pub struct RetainedIndex<V, S = RandomState> {
    /// Arena of nodes; index 0 is the root and is never freed.
    nodes: Vec<Node<V>>,
    /// Free arena slots (never 0). A free slot has no entry, no links, no heap memory.
    free: Vec<NonZeroU32>,
    /// Every edge: `(parent, level)` → child.
    children: HashMap<ChildKey, NonZeroU32, S>,
    /// Head of the list of the root's children whose level starts with `$` (0: none). The
    /// root's `first_child` list holds the others.
    dollar: u32,
    /// Number of topics with a value.
    len: usize,
    /// Stamp of the next node allocated; never [`FREE`].
    next_stamp: u32,
}

/// Arena index of the root; as a link (`first_child`, `next`, `prev`, `dollar`), "none".
const ROOT: u32 = 0;

/// The stamp of a free slot.
const FREE: u32 = 0;

/// Below this capacity `children` is not shrunk.
const MIN_SHRINK_CAPACITY: usize = 64;

/// One topic prefix.
struct Node<V> {
    /// The value of the topic ending at this node, with the full topic name.
    entry: Option<(Box<str>, V)>,
    /// Arena index of the parent; 0 (the root) for the root itself and for free slots.
    parent: u32,
    /// First child, 0 if none. For the root, the children whose level does not start with `$`.
    first_child: u32,
    /// Next sibling, 0 if none.
    next: u32,
    /// Previous sibling, 0 if this is the head of its list.
    prev: u32,
    /// Distinguishes the successive nodes of one arena slot; [`FREE`] while free.
    stamp: u32,
}

impl<V> Node<V> {
    fn new(parent: u32, stamp: u32) -> Self {
        Node {
            entry: None,
            parent,
            first_child: ROOT,
            next: ROOT,
            prev: ROOT,
            stamp,
        }
    }
}

/// How far a bounded match walk went; returned by
/// [`for_each_match_limited`](RetainedIndex::for_each_match_limited) and
/// [`resume_match`](RetainedIndex::resume_match).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Every match has been reported.
    Done,
    /// The visit budget ran out with nodes left to visit; pass the cursor to
    /// [`resume_match`](RetainedIndex::resume_match) with the same filter to continue, or drop
    /// it to answer partially.
    Truncated(Cursor),
}

/// Where a bounded match walk stopped: the next node to visit. It holds no borrow, so the index
/// may change before the walk resumes (see Bounded work in the [module documentation](self)).
/// It is only meaningful for the index and the filter it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    step: Step,
    /// The stamp of the node `step` visits, to detect that it was freed (and maybe reused).
    stamp: u32,
    /// [`fingerprint`] of the filter, a guard against resuming with another filter.
    filter: u64,
}

/// The next node visit of a match walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Visit `node`, reached by the filter's levels before byte `pos`; `pos` is the filter's
    /// length plus one when all levels are consumed.
    Filter { node: u32, pos: usize },
    /// Visit `node`, a descendant of `top`, to which the trailing `#` at byte `pos` applies.
    Subtree { top: u32, pos: usize, node: u32 },
}

impl Step {
    fn node(&self) -> u32 {
        match *self {
            Step::Filter { node, .. } | Step::Subtree { node, .. } => node,
        }
    }

    fn pos(&self) -> usize {
        match *self {
            Step::Filter { pos, .. } | Step::Subtree { pos, .. } => pos,
        }
    }
}

/// [`resume_match`](RetainedIndex::resume_match) was given a cursor whose next node has been
/// removed since, or a cursor of another filter; the walk cannot continue where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleCursor;

impl fmt::Display for StaleCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the retained index changed under the match cursor")
    }
}

impl std::error::Error for StaleCursor {}

impl<V> RetainedIndex<V, RandomState> {
    /// An empty index with the default, randomly keyed hasher.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<V, S: Default> Default for RetainedIndex<V, S> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<V, S> RetainedIndex<V, S> {
    /// An empty index hashing levels with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        RetainedIndex {
            nodes: vec![Node::new(ROOT, FREE + 1)],
            free: Vec::new(),
            children: HashMap::with_hasher(hasher),
            dollar: ROOT,
            len: 0,
            next_stamp: FREE + 2,
        }
    }

    /// Number of topics with a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic has a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of live nodes, the root included: 1 when the index is empty.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Every `(topic, value)`, `$` topics included, in no particular order (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.entry.as_ref().map(|(t, v)| (&**t, v)))
    }

    fn node(&self, n: u32) -> &Node<V> {
        &self.nodes[n as usize]
    }

    fn node_mut(&mut self, n: u32) -> &mut Node<V> {
        &mut self.nodes[n as usize]
    }

    /// Whether `n` has at least one child.
    fn has_children(&self, n: u32) -> bool {
        self.node(n).first_child != ROOT || (n == ROOT && self.dollar != ROOT)
    }

    /// The node after `n` in a pre-order walk of the subtree of `top` (`n` is below `top`):
    /// `n`'s first child, else the next sibling of `n` or of its nearest ancestor below `top`.
    fn subtree_next(&self, top: u32, mut n: u32) -> Option<u32> {
        let first = self.node(n).first_child;
        if first != ROOT {
            return Some(first);
        }
        while n != top {
            let node = self.node(n);
            if node.next != ROOT {
                return Some(node.next);
            }
            n = node.parent;
        }
        None
    }

    /// The step after node `n` (reached by the filter's levels before byte `pos`) and its
    /// matches: the next sibling if `n` consumed a `+`, else the same for its parent, up to the
    /// root.
    fn backtrack(&self, filter: &str, mut n: u32, mut pos: usize) -> Option<Step> {
        while n != ROOT {
            // The level `n` consumed ends at `pos - 1` (a `/` or the end of the filter).
            let start = filter[..pos - 1].rfind('/').map_or(0, |i| i + 1);
            let node = self.node(n);
            if node.next != ROOT && &filter[start..pos - 1] == "+" {
                return Some(Step::Filter {
                    node: node.next,
                    pos,
                });
            }
            n = node.parent;
            pos = start;
        }
        None
    }
}

/// Calls `f` with the entry of `node`, if any.
fn emit<V>(node: &Node<V>, f: &mut impl FnMut(&str, &V)) {
    if let Some((topic, value)) = &node.entry {
        f(topic, value);
    }
}

impl<V, S: BuildHasher> RetainedIndex<V, S> {
    /// Sets the value of `topic`; returns the value it replaces.
    ///
    /// `topic` must be a valid topic name (checked in debug builds).
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        debug_assert!(
            net::mqtt::topic::validate_topic_name(topic).is_ok(),
            "invalid topic name {topic:?}"
        );
        let n = self.find_or_create(topic);
        let node = self.node_mut(n);
        match &mut node.entry {
            Some((_, old)) => Some(mem::replace(old, value)),
            None => {
                node.entry = Some((topic.into(), value));
                self.len += 1;
                None
            }
        }
    }

    /// Removes the value of `topic` and returns it; prunes the nodes this leaves unused.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let n = self.find(topic)?;
        let (_, value) = self.node_mut(n).entry.take()?;
        self.len -= 1;
        self.prune(n, topic);
        Some(value)
    }

    /// The value of `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let n = self.find(topic)?;
        self.node(n).entry.as_ref().map(|(_, v)| v)
    }

    /// The value of `topic`, mutably.
    pub fn get_mut(&mut self, topic: &str) -> Option<&mut V> {
        let n = self.find(topic)?;
        self.node_mut(n).entry.as_mut().map(|(_, v)| v)
    }

    /// Calls `f` with every `(topic, value)` whose topic the topic filter `filter` matches, in
    /// no particular order. Allocates nothing; the walk is not bounded (see
    /// [`for_each_match_limited`](Self::for_each_match_limited)).
    ///
    /// `filter` must be a valid, non-shared topic filter (checked in debug builds).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        // Each node is visited at most once per walk, and there are fewer than `u32::MAX`.
        let done = self.walk(
            filter,
            Step::Filter { node: ROOT, pos: 0 },
            usize::MAX,
            &mut f,
        );
        debug_assert_eq!(done, Completion::Done);
    }

    /// As [`for_each_match`](Self::for_each_match), but stops after `max_visits` node visits
    /// (at least one, so that each call makes progress) and says where. `f` is called at most
    /// once per visit. A visit is the unit of work: one node of the walk, with a value or not
    /// (see Complexity in the [module documentation](self)).
    pub fn for_each_match_limited(
        &self,
        filter: &str,
        max_visits: usize,
        mut f: impl FnMut(&str, &V),
    ) -> Completion {
        self.walk(
            filter,
            Step::Filter { node: ROOT, pos: 0 },
            max_visits,
            &mut f,
        )
    }

    /// Continues the walk of `cursor` over the same `filter`, for at most `max_visits` more
    /// node visits (at least one). The index may have changed since the cursor was returned;
    /// see Bounded work in the [module documentation](self) for what is reported then.
    ///
    /// # Errors
    ///
    /// [`StaleCursor`] if the node the walk was about to visit has been removed since, or if
    /// `filter` is not the cursor's filter (told by a 64-bit fingerprint); nothing is reported.
    pub fn resume_match(
        &self,
        filter: &str,
        cursor: &Cursor,
        max_visits: usize,
        mut f: impl FnMut(&str, &V),
    ) -> Result<Completion, StaleCursor> {
        let n = cursor.step.node();
        let pos = cursor.step.pos();
        let live = self
            .nodes
            .get(n as usize)
            .is_some_and(|node| node.stamp != FREE && node.stamp == cursor.stamp);
        // `pos` starts a level (or is one past the end); checked so that even a fingerprint
        // collision cannot make it split a character.
        let same_filter = cursor.filter == fingerprint(filter)
            && (pos == filter.len() + 1
                || pos == 0
                || (pos <= filter.len() && filter.as_bytes()[pos - 1] == b'/'));
        if !live || !same_filter {
            return Err(StaleCursor);
        }
        Ok(self.walk(filter, cursor.step, max_visits, &mut f))
    }

    /// Keeps the `(topic, value)` entries for which `f` returns `true` and removes the others
    /// (expired messages), pruning as [`remove`](Self::remove) does. `f` may update a value it
    /// keeps.
    pub fn retain(&mut self, mut f: impl FnMut(&str, &mut V) -> bool) {
        // Pruning frees nodes without values (skipped anyway) and never moves a node, but may
        // cut the arena back to the root: re-read its length.
        let mut i = 1;
        while i < self.nodes.len() {
            if let Some((topic, value)) = &mut self.nodes[i].entry {
                if !f(topic, value) {
                    if let Some((topic, _)) = self.nodes[i].entry.take() {
                        self.len -= 1;
                        self.prune(index_u32(i), &topic);
                    }
                }
            }
            i += 1;
        }
    }

    /// Removes every value and gives back the memory of the nodes and the map. Outstanding
    /// cursors go stale.
    pub fn clear(&mut self) {
        self.nodes.truncate(1);
        self.nodes.shrink_to_fit();
        let stamp = self.node(ROOT).stamp;
        self.nodes[ROOT as usize] = Node::new(ROOT, stamp);
        self.free = Vec::new();
        self.children.clear();
        self.children.shrink_to_fit();
        self.dollar = ROOT;
        self.len = 0;
    }

    /// Gives back the trailing free arena slots and the spare capacity of the map.
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
    }

    /// Runs the match walk from `step` for at most `max_visits` node visits (at least one).
    fn walk<F: FnMut(&str, &V)>(
        &self,
        filter: &str,
        mut step: Step,
        max_visits: usize,
        f: &mut F,
    ) -> Completion {
        debug_assert!(
            net::mqtt::topic::validate_topic_filter(filter).is_ok()
                && net::mqtt::topic::split_shared(filter).is_none(),
            "invalid or shared topic filter {filter:?}"
        );
        let end = filter.len() + 1;
        let max_visits = max_visits.max(1);
        let mut visits = 0;
        loop {
            if visits == max_visits {
                return Completion::Truncated(Cursor {
                    step,
                    stamp: self.node(step.node()).stamp,
                    filter: fingerprint(filter),
                });
            }
            visits += 1;
            let next = match step {
                Step::Filter { node: n, pos } => {
                    let node = self.node(n);
                    if pos == end {
                        emit(node, f);
                        self.backtrack(filter, n, pos)
                    } else {
                        let (level, next) = match filter[pos..].find('/') {
                            Some(i) => (&filter[pos..pos + i], pos + i + 1),
                            None => (&filter[pos..], end),
                        };
                        match level {
                            // The parent level and everything below; at the root, only the
                            // children without `$` (`first_child`).
                            "#" => {
                                emit(node, f);
                                match node.first_child {
                                    ROOT => self.backtrack(filter, n, pos),
                                    c => Some(Step::Subtree {
                                        top: n,
                                        pos,
                                        node: c,
                                    }),
                                }
                            }
                            "+" => match node.first_child {
                                ROOT => self.backtrack(filter, n, pos),
                                c => Some(Step::Filter { node: c, pos: next }),
                            },
                            _ => match self.child(n, level) {
                                Some(c) => Some(Step::Filter { node: c, pos: next }),
                                None => self.backtrack(filter, n, pos),
                            },
                        }
                    }
                }
                Step::Subtree { top, pos, node: n } => {
                    emit(self.node(n), f);
                    match self.subtree_next(top, n) {
                        Some(c) => Some(Step::Subtree { top, pos, node: c }),
                        None => self.backtrack(filter, top, pos),
                    }
                }
            };
            match next {
                Some(s) => step = s,
                None => return Completion::Done,
            }
        }
    }

    /// The child of `parent` for `level`.
    fn child(&self, parent: u32, level: &str) -> Option<u32> {
        if !self.has_children(parent) {
            return None; // Most nodes are leaves: skip hashing.
        }
        self.children
            .get(&(parent, level) as &dyn LevelKey)
            .map(|c| c.get())
    }

    /// The node of `topic`, if it exists.
    fn find(&self, topic: &str) -> Option<u32> {
        let mut n = ROOT;
        for level in topic.split('/') {
            n = self.child(n, level)?;
        }
        Some(n)
    }

    /// The node of `topic`, created with its missing ancestors.
    fn find_or_create(&mut self, topic: &str) -> u32 {
        let mut n = ROOT;
        for level in topic.split('/') {
            n = match self.child(n, level) {
                Some(c) => c,
                None => {
                    let c = self.alloc(n);
                    self.link(n, c.get(), level.starts_with('$'));
                    let key = ChildKey {
                        parent: n,
                        level: level.into(),
                    };
                    self.children.insert(key, c);
                    c.get()
                }
            };
        }
        n
    }

    /// A fresh, unlinked node under `parent`.
    fn alloc(&mut self, parent: u32) -> NonZeroU32 {
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1).max(FREE + 1);
        match self.free.pop() {
            Some(c) => {
                self.nodes[c.get() as usize] = Node::new(parent, stamp);
                c
            }
            None => {
                // The arena is never empty: it holds the root.
                let c = nonzero_index(self.nodes.len());
                self.nodes.push(Node::new(parent, stamp));
                c
            }
        }
    }

    /// Links `c` at the head of `parent`'s child list (the `$` list for a `$` child of the
    /// root): a new node comes before every node a resumed walk may have passed.
    fn link(&mut self, parent: u32, c: u32, dollar: bool) {
        let head = if parent == ROOT && dollar {
            mem::replace(&mut self.dollar, c)
        } else {
            mem::replace(&mut self.node_mut(parent).first_child, c)
        };
        self.node_mut(c).next = head;
        if head != ROOT {
            self.node_mut(head).prev = c;
        }
    }

    /// Takes `n` out of its parent's child list.
    fn unlink(&mut self, n: u32) {
        let node = self.node(n);
        let (parent, next, prev) = (node.parent, node.next, node.prev);
        if prev != ROOT {
            self.node_mut(prev).next = next;
        } else if parent == ROOT && self.dollar == n {
            self.dollar = next;
        } else {
            self.node_mut(parent).first_child = next;
        }
        if next != ROOT {
            self.node_mut(next).prev = prev;
        }
    }

    /// Frees `n` (the node of `topic`, now without a value) and its ancestors while they have
    /// neither a value nor children.
    fn prune(&mut self, mut n: u32, topic: &str) {
        let mut levels = topic.rsplit('/');
        while n != ROOT && self.node(n).entry.is_none() && !self.has_children(n) {
            let Some(level) = levels.next() else {
                debug_assert!(false, "node deeper than its topic");
                return;
            };
            let parent = self.node(n).parent;
            self.children.remove(&(parent, level) as &dyn LevelKey);
            self.unlink(n);
            // Drop the entry's memory: a free slot holds no heap memory.
            self.nodes[n as usize] = Node::new(ROOT, FREE);
            self.free.push(nonzero_index(n as usize));
            n = parent;
        }
        if self.children.capacity() >= MIN_SHRINK_CAPACITY
            && self.children.len() * 4 < self.children.capacity()
        {
            self.children.shrink_to(self.children.len() * 2);
        }
        if !self.has_children(ROOT) {
            self.nodes.truncate(1);
            self.nodes.shrink_to_fit();
            self.free = Vec::new();
            self.children.shrink_to_fit();
        }
    }
}

impl<V, S> fmt::Debug for RetainedIndex<V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .field("nodes", &self.node_count())
            .finish_non_exhaustive()
    }
}

/// FNV-1a of `filter`: tells a cursor's filter from another one, in `O(len)`.
fn fingerprint(filter: &str) -> u64 {
    filter.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// `n` as a `u32` arena index.
// Invariant: fewer than `u32::MAX` nodes; a node takes 40 bytes or more, so memory runs out
// long before.
#[allow(clippy::expect_used)]
fn index_u32(n: usize) -> u32 {
    u32::try_from(n).expect("retained index overflows u32")
}

/// `n` as a child link.
// Invariant: `n` is never 0, the root's index: the root is never allocated nor freed.
#[allow(clippy::expect_used)]
fn nonzero_index(n: usize) -> NonZeroU32 {
    NonZeroU32::new(index_u32(n)).expect("the root is not a child")
}

/// Key of an edge in `RetainedIndex::children`.
struct ChildKey {
    parent: u32,
    level: Box<str>,
}

/// An edge, owned ([`ChildKey`]) or borrowed (`(u32, &str)`), so that the map can be queried
/// without allocating a `Box<str>`. Both hash and compare through this trait.
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

    /// The topics of `index` matched by `filter`, sorted; checks that each comes with its own
    /// value (the topic itself).
    fn matched(index: &RetainedIndex<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        index.for_each_match(filter, |t, v| {
            assert_eq!(t, v);
            out.push(t.to_owned());
        });
        out.sort_unstable();
        out
    }

    fn index_of(topics: &[&str]) -> RetainedIndex<String> {
        let mut index = RetainedIndex::new();
        for &t in topics {
            index.insert(t, t.to_owned());
        }
        index
    }

    /// Asserts `filter` matches exactly the topics in `yes` and none in `no`, in an index of
    /// both and among other topics, and agrees with the naive matcher.
    fn check(filter: &str, yes: &[&str], no: &[&str]) {
        let mut want: Vec<String> = yes.iter().map(|t| (*t).to_owned()).collect();
        want.sort_unstable();
        want.dedup();
        let both: Vec<&str> = yes.iter().chain(no).copied().collect();
        assert_eq!(matched(&index_of(&both), filter), want, "{filter}");
        let mut crowd = both.clone();
        crowd.extend(["zz", "zz/y", "zz//y", "/zz", "$zz/y"]);
        let got = matched(&index_of(&crowd), filter);
        for t in yes {
            assert!(got.iter().any(|g| g == t), "{filter} should match {t}");
            assert!(net::mqtt::topic::matches(filter, t), "naive {filter} / {t}");
        }
        for t in no {
            assert!(!got.iter().any(|g| g == t), "{filter} must not match {t}");
            assert!(
                !net::mqtt::topic::matches(filter, t),
                "naive {filter} / {t}"
            );
        }
        for t in &got {
            assert!(net::mqtt::topic::matches(filter, t), "{filter} / {t}");
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
                "sport",
            ],
        );
        check(
            "sport/#",
            &["sport", "sport/", "sport/a/b/c"],
            &["sports", "/sport"],
        );
        check(
            "#",
            &["a", "/", "a/b/c", "/finance", "sport", "a/$SYS"],
            &["$SYS", "$SYS/a", "$"],
        );
        check(
            "sport/tennis/#",
            &["sport/tennis", "sport/tennis/x"],
            &["sport/ten", "sport"],
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
            &["sport/player1"],
        );
        check("+/+/+", &["a/b/c", "//"], &["a/b", "a/b/c/d", "/"]);
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
            &["SYS/a", "a/$SYS", "$SYSX"],
        );
        check(
            "$SYS/monitor/+",
            &["$SYS/monitor/Clients"],
            &["$SYS/monitor"],
        );
        check("+/#", &["a/$SYS", "a"], &["$SYS/a", "$"]);
        check("$", &["$"], &["$SYS"]);
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
        check("//#", &["/", "//", "///", "//a"], &["a//", "/a"]);
        check("é/ü/+", &["é/ü/ß"], &["é/u/ß"]);
    }

    #[test]
    fn insert_remove_prunes() {
        let mut index: RetainedIndex<u8> = RetainedIndex::new();
        assert!(index.is_empty());
        assert_eq!(index.node_count(), 1);
        assert_eq!(index.insert("a/b/c", 10), None);
        assert_eq!(index.insert("a/b/c", 11), Some(10));
        assert_eq!(index.insert("a", 40), None);
        assert_eq!(index.insert("a/x", 50), None);
        assert_eq!(index.insert("$SYS/a", 60), None);
        assert_eq!(index.len(), 4);
        // root, a, a/b, a/b/c, a/x, $SYS, $SYS/a
        assert_eq!(index.node_count(), 7);
        assert_eq!(index.get("a/b/c"), Some(&11));
        assert_eq!(index.get("a/b"), None, "an inner node has no value");
        assert_eq!(index.get("a/b/c/d"), None);
        *index.get_mut("a").unwrap() += 1;
        assert_eq!(index.get("a"), Some(&41));

        assert_eq!(index.remove("a/b"), None);
        assert_eq!(index.remove("x/y"), None);
        assert_eq!(index.node_count(), 7, "a failed remove prunes nothing");
        check_links(&index);
        assert_eq!(index.remove("a/b/c"), Some(11));
        assert_eq!(index.remove("a/b/c"), None);
        assert_eq!(index.node_count(), 5); // root, a, a/x, $SYS, $SYS/a
        assert_eq!(index.remove("a"), Some(41));
        assert_eq!(index.node_count(), 5, "a keeps its child");
        assert_eq!(index.get("a/x"), Some(&50));
        assert_eq!(index.remove("a/x"), Some(50));
        assert_eq!(index.node_count(), 3);
        assert_eq!(index.remove("$SYS/a"), Some(60));
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        assert_eq!(index.node_count(), 1);
        assert_eq!(index.nodes.len(), 1, "the arena is back to the root");
        assert!(index.children.is_empty());
        assert_eq!((index.dollar, index.node(ROOT).first_child), (ROOT, ROOT));
        let mut n = 0;
        index.for_each_match("#", |_, _| n += 1);
        assert_eq!(n, 0);
    }

    /// Checks the links: every live node is reached once from the root's two lists, `prev`
    /// and `parent` agree with the lists, each edge of `children` is a listed child, and a root
    /// child is on the `$` list exactly when its level starts with `$`.
    fn check_links<V>(index: &RetainedIndex<V>) {
        let mut reached = vec![false; index.nodes.len()];
        reached[ROOT as usize] = true;
        let mut stack = vec![ROOT];
        while let Some(p) = stack.pop() {
            let heads = if p == ROOT {
                vec![index.node(ROOT).first_child, index.dollar]
            } else {
                vec![index.node(p).first_child]
            };
            for head in heads {
                let (mut prev, mut c) = (ROOT, head);
                while c != ROOT {
                    assert!(!reached[c as usize], "node {c} listed twice");
                    reached[c as usize] = true;
                    let node = index.node(c);
                    assert_ne!(node.stamp, FREE, "free node {c} listed");
                    assert_eq!((node.parent, node.prev), (p, prev), "links of {c}");
                    stack.push(c);
                    (prev, c) = (c, node.next);
                }
            }
        }
        let live = reached.iter().filter(|r| **r).count();
        assert_eq!(live, index.node_count(), "unreachable live nodes");
        assert_eq!(index.children.len(), live - 1);
        for (key, c) in &index.children {
            assert_eq!(index.node(c.get()).parent, key.parent);
            if key.parent == ROOT {
                let mut d = index.dollar;
                while d != ROOT && d != c.get() {
                    d = index.node(d).next;
                }
                assert_eq!(d == c.get(), key.level.starts_with('$'), "{:?}", key.level);
            }
        }
        for f in &index.free {
            assert_eq!(index.node(f.get()).stamp, FREE);
            assert!(index.node(f.get()).entry.is_none());
        }
    }

    /// Unlinking from the head, the middle and the tail of both root lists and a deeper one.
    #[test]
    fn sibling_lists() {
        let topics = ["a", "b", "c", "$a", "$b", "$c", "x/1", "x/2", "x/3"];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let mut index = index_of(&topics);
            check_links(&index);
            let mut left: Vec<&str> = topics.to_vec();
            for group in [0, 3, 6] {
                for i in order {
                    let t = topics[group + i];
                    assert_eq!(index.remove(t).as_deref(), Some(t));
                    left.retain(|l| *l != t);
                    check_links(&index);
                    let mut all: Vec<&str> = index.iter().map(|(t, _)| t).collect();
                    all.sort_unstable();
                    let mut want = left.clone();
                    want.sort_unstable();
                    assert_eq!(all, want);
                    want.retain(|t| !t.starts_with('$'));
                    assert_eq!(matched(&index, "#"), want);
                }
            }
            assert_eq!(index.node_count(), 1);
        }
    }

    #[test]
    fn free_slots_are_reused() {
        let mut index: RetainedIndex<u32> = RetainedIndex::new();
        index.insert("keep", 0);
        for i in 0..100 {
            index.insert(&format!("t/{i}/x"), i);
        }
        let arena = index.nodes.len();
        for i in 0..100 {
            assert_eq!(index.remove(&format!("t/{i}/x")), Some(i));
        }
        assert_eq!(index.node_count(), 2);
        for i in 0..100 {
            index.insert(&format!("u/{i}/y"), i);
        }
        assert_eq!(index.nodes.len(), arena, "freed slots are reused");
        for i in 0..100 {
            index.remove(&format!("u/{i}/y"));
        }
        index.shrink_to_fit();
        assert_eq!(index.nodes.len(), 2);
        assert!(index.free.is_empty());
        assert_eq!(index.get("keep"), Some(&0));
    }

    #[test]
    fn retain_drops_and_prunes() {
        let mut index: RetainedIndex<u32> = RetainedIndex::new();
        for i in 0..200 {
            index.insert(&format!("d/{}/{i}", i % 7), i);
        }
        index.insert("$SYS/uptime", 1000);
        let mut seen = 0;
        index.retain(|t, v| {
            seen += 1;
            assert!(t.starts_with("d/") || t == "$SYS/uptime");
            *v += 1; // Kept values may be updated.
            *v % 2 == 0
        });
        assert_eq!(seen, 201);
        assert_eq!(index.len(), 100);
        assert_eq!(index.get("d/0/0"), None);
        assert_eq!(index.get("d/1/1"), Some(&2));
        assert_eq!(index.get("$SYS/uptime"), None);
        assert_eq!(index.node_count(), 1 + 1 + 7 + 100);
        check_links(&index);
        let mut n = 0;
        index.for_each_match("d/+/#", |t, v| {
            assert_eq!(t.rsplit('/').next(), Some(&*(v - 1).to_string()));
            n += 1;
        });
        assert_eq!(n, 100);
        index.retain(|_, _| false);
        assert!(index.is_empty());
        assert_eq!(index.nodes.len(), 1);
        assert!(index.children.is_empty());
    }

    /// Walks `filter` `budget` visits at a time; returns the topics and the number of calls.
    fn limited(index: &RetainedIndex<String>, filter: &str, budget: usize) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let mut calls = 1;
        let mut state = index.for_each_match_limited(filter, budget, |t, _| out.push(t.to_owned()));
        while let Completion::Truncated(cursor) = state {
            calls += 1;
            state = index
                .resume_match(filter, &cursor, budget, |t, _| out.push(t.to_owned()))
                .unwrap();
        }
        out.sort_unstable();
        (out, calls)
    }

    #[test]
    fn bounded_walks() {
        let mut topics = Vec::new();
        for a in ["", "a", "b", "$s"] {
            for b in ["", "x", "y"] {
                topics.push(format!("{a}/{b}"));
                topics.push(format!("{a}/{b}/z"));
            }
            topics.push(a.to_owned());
        }
        topics.retain(|t| !t.is_empty());
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let index = index_of(&refs);
        for filter in [
            "#", "+", "+/+", "+/#", "a/#", "$s/+/#", "+/x/z", "a/x", "/", "b/+/z",
        ] {
            let all = matched(&index, filter);
            for budget in [0, 1, 2, 3, 5, 100] {
                let (got, calls) = limited(&index, filter, budget);
                assert_eq!(got, all, "{filter} by {budget}");
                if budget == 100 {
                    assert_eq!(calls, 1);
                }
            }
        }
        // Without wildcards a walk visits at most one node per level plus the root.
        for filter in ["a/x/z", "a/q/z", "q"] {
            let levels = filter.split('/').count();
            let done = index.for_each_match_limited(filter, levels + 1, |_, _| {});
            assert_eq!(done, Completion::Done, "{filter}");
        }
        // `#` visits the whole subtree: root, a, a/, a/x, a/y, and the three a/*/z.
        let done = index.for_each_match_limited("a/#", 8, |_, _| {});
        assert_eq!(done, Completion::Done);
        assert!(matches!(
            index.for_each_match_limited("a/#", 7, |_, _| {}),
            Completion::Truncated(_)
        ));
    }

    #[test]
    fn cursors_survive_changes_or_go_stale() {
        let mut index = index_of(&["a/1", "a/2", "a/3", "a/4", "b"]);
        let mut seen = Vec::new();
        let Completion::Truncated(cursor) =
            index.for_each_match_limited("a/+", 4, |t, _| seen.push(t.to_owned()))
        else {
            panic!("four visits: root, a, two children");
        };
        assert_eq!(seen.len(), 2);
        let next = cursor.step.node();
        let (first, second) = (seen[0].clone(), seen[1].clone());
        // Changes elsewhere and new siblings do not disturb the walk.
        index.insert("a/5", "a/5".to_owned());
        index.remove(&first);
        index.insert(&first, first.clone()); // Re-inserted at the head: not reported twice.
        index.insert("c/d", "c/d".to_owned());
        let mut rest = Vec::new();
        let done = index
            .resume_match("a/+", &cursor, usize::MAX, |t, _| rest.push(t.to_owned()))
            .unwrap();
        assert_eq!(done, Completion::Done);
        assert_eq!(rest.len(), 2, "{seen:?} then {rest:?}");
        assert!(!rest.contains(&first) && !rest.contains(&second));
        assert!(!rest.contains(&"a/5".to_owned()));

        // Another filter is refused.
        assert_eq!(
            index.resume_match("a/#", &cursor, 10, |_, _| panic!()),
            Err(StaleCursor)
        );
        assert_eq!(
            index.resume_match("é/+", &cursor, 10, |_, _| panic!()),
            Err(StaleCursor)
        );
        // The node to visit next is removed: stale, also once its slot is reused.
        let next_topic = index.node(next).entry.as_ref().map(|(t, _)| t.to_string());
        assert_eq!(next_topic.as_deref(), Some("a/2"));
        index.remove("a/2");
        assert_eq!(
            index.resume_match("a/+", &cursor, 10, |_, _| panic!()),
            Err(StaleCursor)
        );
        index.insert("q/r", "q/r".to_owned());
        assert!(index.nodes[next as usize].stamp != FREE, "slot reused");
        assert_eq!(
            index.resume_match("a/+", &cursor, 10, |_, _| panic!()),
            Err(StaleCursor)
        );
        index.clear();
        assert_eq!(
            index.resume_match("a/+", &cursor, 10, |_, _| panic!()),
            Err(StaleCursor)
        );
    }

    /// Topics and filters far deeper than `mqtt.max_topic_levels`: the walk does not recurse.
    #[test]
    fn deep_topics() {
        let depth = 5000;
        let topic = vec!["l"; depth].join("/");
        let mut index: RetainedIndex<usize> = RetainedIndex::new();
        index.insert(&topic, 1);
        index.insert(&format!("{topic}/m"), 2);
        index.insert(&vec!["l"; depth / 2].join("/"), 3);
        let plus = vec!["+"; depth].join("/");
        let mixed: String = (0..depth)
            .map(|i| if i % 2 == 0 { "l" } else { "+" })
            .collect::<Vec<_>>()
            .join("/");
        for (filter, want) in [
            (&topic, &[1][..]),
            (&plus, &[1]),
            (&mixed, &[1]),
            (&format!("{plus}/#"), &[1, 2]),
            (&"#".to_owned(), &[1, 2, 3]),
            (&format!("{}/#", vec!["l"; depth / 2].join("/")), &[1, 2, 3]),
        ] {
            let mut got = Vec::new();
            index.for_each_match(filter, |_, v| got.push(*v));
            got.sort_unstable();
            assert_eq!(got, want);
        }
        assert_eq!(index.remove(&topic), Some(1));
        assert_eq!(index.remove(&format!("{topic}/m")), Some(2));
        assert_eq!(index.node_count(), depth / 2 + 1);
        index.clear();
        assert_eq!(index.node_count(), 1);
    }

    /// All 2^10 topics over two words: each `+`/literal filter matches its instances once.
    #[test]
    fn wide_backtracking() {
        let levels = 10;
        let mut index: RetainedIndex<u32> = RetainedIndex::new();
        for mask in 0u32..1 << levels {
            let t: Vec<&str> = (0..levels)
                .map(|i| if mask & 1 << i != 0 { "b" } else { "a" })
                .collect();
            index.insert(&t.join("/"), mask);
        }
        for filter_mask in [0u32, 1, 0b1010_1010, 0x3FF] {
            let f: Vec<&str> = (0..levels)
                .map(|i| if filter_mask & 1 << i != 0 { "+" } else { "a" })
                .collect();
            let mut seen = vec![false; 1 << levels];
            index.for_each_match(&f.join("/"), |_, k| {
                assert!(!seen[*k as usize], "matched twice");
                seen[*k as usize] = true;
            });
            for (k, s) in seen.iter().enumerate() {
                assert_eq!(*s, k as u32 & !filter_mask == 0, "{k:b}");
            }
        }
    }

    #[test]
    fn layout() {
        assert_eq!(mem::size_of::<Node<u64>>(), 48);
        assert_eq!(mem::size_of::<Node<std::sync::Arc<()>>>(), 48);
        assert_eq!(mem::size_of::<(ChildKey, NonZeroU32)>(), 32);
    }

    #[test]
    fn debug_iter_and_clear() {
        let mut index: RetainedIndex<u32> = RetainedIndex::default();
        index.insert("a/b", 1);
        index.insert("$SYS/x", 2);
        assert_eq!(
            format!("{index:?}"),
            "RetainedIndex { len: 2, nodes: 5, .. }"
        );
        let mut all: Vec<(&str, &u32)> = index.iter().collect();
        all.sort_unstable();
        assert_eq!(all, [("$SYS/x", &2), ("a/b", &1)]);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.node_count(), 1);
        assert_eq!(index.get("a/b"), None);
        assert_eq!(index.iter().count(), 0);
        index.insert("a/b", 3);
        assert_eq!(index.get("a/b"), Some(&3));
    }
}
