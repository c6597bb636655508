//! The topic trie: topic filters to subscribers, matched against topic names.
