//! A generational slab: stable small ids for connections and sessions, with stale ids detected
//! instead of aliasing a reused slot.

/// An index into a [`Slab`] with the generation it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// A key no slab issues (generation `u32::MAX` at index `u32::MAX`): the origin of the
    /// broker's own messages.
    pub const SYS: Key = Key {
        index: u32::MAX,
        generation: u32::MAX,
    };

    /// Another key no slab issues (index `u32::MAX - 1`): the origin of messages published
    /// through the REST API.
    pub const API: Key = Key {
        index: u32::MAX - 1,
        generation: u32::MAX,
    };

    /// The slot index (for per-slot arrays and logs).
    pub fn index(self) -> u32 {
        self.index
    }

    /// Packs the key into 64 bits, for messages that cross shards.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The inverse of [`Key::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        Self {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

#[derive(Debug)]
enum Slot<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    Free {
        generation: u32,
        next_free: Option<u32>,
    },
}

/// Values addressed by [`Key`]. Insert and remove are O(1); a removed slot is reused with a new
/// generation, so an old key no longer finds anything.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Option<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: None,
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(index) = self.free {
            let slot = &mut self.slots[index as usize];
            if let Slot::Free {
                generation,
                next_free,
            } = *slot
            {
                let generation = generation.wrapping_add(1);
                self.free = next_free;
                *slot = Slot::Occupied { generation, value };
                return Key { index, generation };
            }
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot::Occupied {
            generation: 0,
            value,
        });
        Key {
            index,
            generation: 0,
        }
    }

    /// Removes and returns the value for `key`, if it is still there.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        match slot {
            Slot::Occupied { generation, .. } if *generation == key.generation => {
                let old = std::mem::replace(
                    slot,
                    Slot::Free {
                        generation: key.generation,
                        next_free: self.free,
                    },
                );
                self.free = Some(key.index);
                self.len -= 1;
                match old {
                    Slot::Occupied { value, .. } => Some(value),
                    Slot::Free { .. } => None,
                }
            }
            _ => None,
        }
    }

    /// The value for `key`, if it is still there.
    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index as usize)? {
            Slot::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// The value for `key`, mutably, if it is still there.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index as usize)? {
            Slot::Occupied { generation, value } if *generation == key.generation => Some(value),
            _ => None,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of slots, free or not: slot indices run below it.
    pub fn slot_count(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The keys and values in the slots `start..end` (clamped to the slots there are): a
    /// walk over the slab in bounded steps.
    pub fn iter_slots(&self, start: u32, end: u32) -> impl Iterator<Item = (Key, &T)> {
        let end = (end as usize).min(self.slots.len());
        let start = (start as usize).min(end);
        self.slots[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| match s {
                Slot::Occupied { generation, value } => Some((
                    Key {
                        index: (start + i) as u32,
                        generation: *generation,
                    },
                    value,
                )),
                Slot::Free { .. } => None,
            })
    }

    /// Every key and value.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Occupied { generation, value } => Some((
                Key {
                    index: i as u32,
                    generation: *generation,
                },
                value,
            )),
            Slot::Free { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_walk_in_steps() {
        let mut s = Slab::default();
        let keys: Vec<Key> = (0..10).map(|i| s.insert(i)).collect();
        s.remove(keys[3]);
        s.remove(keys[7]);
        let mut seen = Vec::new();
        let mut from = 0;
        while from < s.slot_count() {
            seen.extend(s.iter_slots(from, from + 4).map(|(k, v)| (k, *v)));
            from += 4;
        }
        let all: Vec<(Key, i32)> = s.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(seen, all);
        assert_eq!(all.len(), 8);
        assert_eq!(s.iter_slots(8, 100).count(), 2);
        assert_eq!(s.iter_slots(100, 200).count(), 0);
    }

    #[test]
    fn stale_keys_miss() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a.index(), b.index());
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.len(), 1);
        assert_eq!(Key::from_u64(b.to_u64()), b);
    }
}
