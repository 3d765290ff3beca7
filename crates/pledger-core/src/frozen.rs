//! Append-mostly tables that copies of a state share: the rows up to the last freeze in one
//! contiguous allocation behind an [`Arc`], and the rows appended since owned by each copy.
//!
//! A prompt's history tables (its versions, its ended releases, the ids of its events) grow
//! with history while each reader adds a few rows to them. Kept as one block, a table costs
//! its rows and nothing per row, a copy of a state costs a reference count and its few recent
//! rows, and a long-running process does not scatter a table's rows across the allocator's
//! pages among short-lived allocations (which kept its resident memory growing with history
//! while the rows themselves were a small part of it). Freezing copies the table once into a
//! new block: readers freeze when they keep a snapshot, and a table freezes by itself when
//! its unfrozen rows reach [`TAIL_MAX`].

use std::sync::Arc;

/// Rows appended since the last freeze past which a table freezes by itself.
pub const TAIL_MAX: usize = 1024;

/// A table's rows: `base` (frozen, shared) then `tail` (appended since, owned).
#[derive(Clone, Debug)]
pub struct Frozen<T> {
    base: Arc<[T]>,
    tail: Vec<T>,
}

impl<T> Default for Frozen<T> {
    fn default() -> Frozen<T> {
        Frozen {
            base: Arc::from(Vec::new()),
            tail: Vec::new(),
        }
    }
}

impl<T: Clone + PartialEq> PartialEq for Frozen<T> {
    fn eq(&self, other: &Frozen<T>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Clone> Frozen<T> {
    /// A table of `rows`, all frozen.
    pub fn from_vec(rows: Vec<T>) -> Frozen<T> {
        Frozen {
            base: Arc::from(rows),
            tail: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.base.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        match i.checked_sub(self.base.len()) {
            None => self.base.get(i),
            Some(t) => self.tail.get(t),
        }
    }

    pub fn last(&self) -> Option<&T> {
        self.tail.last().or_else(|| self.base.last())
    }

    /// The rows in order.
    pub fn iter(&self) -> std::iter::Chain<std::slice::Iter<'_, T>, std::slice::Iter<'_, T>> {
        self.base.iter().chain(self.tail.iter())
    }

    /// The frozen rows.
    pub fn frozen(&self) -> &[T] {
        &self.base
    }

    /// The rows appended since the last freeze.
    pub fn tail(&self) -> &[T] {
        &self.tail
    }

    /// Appends a row (the caller freezes when [`Frozen::needs_freeze`] says so).
    pub fn push(&mut self, row: T) {
        self.tail.push(row);
    }

    /// Whether the unfrozen rows have reached [`TAIL_MAX`].
    pub fn needs_freeze(&self) -> bool {
        self.tail.len() >= TAIL_MAX
    }

    /// Moves the appended rows into a new frozen block (other copies keep the old one).
    pub fn freeze(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let mut rows = Vec::with_capacity(self.len());
        rows.extend_from_slice(&self.base);
        rows.append(&mut self.tail);
        self.base = Arc::from(rows);
        self.tail = Vec::new();
    }

    /// Replaces row `i` (copying the frozen block when the row is in it: a rare change).
    pub fn set(&mut self, i: usize, row: T) {
        match i.checked_sub(self.base.len()) {
            Some(t) => self.tail[t] = row,
            None => {
                let mut rows = self.base.to_vec();
                rows[i] = row;
                self.base = Arc::from(rows);
            }
        }
    }

    /// Inserts a row at `i`, the rest moving up: in the tail when `i` is in it, else by
    /// freezing the whole table anew with the row in place.
    pub fn insert(&mut self, i: usize, row: T) {
        match i.checked_sub(self.base.len()) {
            Some(t) => {
                self.tail.insert(t, row);
            }
            None => {
                let mut rows = Vec::with_capacity(self.len() + 1);
                rows.extend_from_slice(&self.base[..i]);
                rows.push(row);
                rows.extend_from_slice(&self.base[i..]);
                rows.append(&mut self.tail);
                self.base = Arc::from(rows);
            }
        }
    }

    /// Whether `other` shares this table's frozen block (for tests).
    pub fn shares_frozen_with(&self, other: &Frozen<T>) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
    }
}

/// The rows of `a` and `b`, both sorted by `in_order` (whether a row may come before
/// another), merged into one sorted vector; a row of `a` comes before an equal one of `b`.
pub fn merge_sorted<T: Copy>(a: &[T], b: &[T], in_order: impl Fn(&T, &T) -> bool) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if in_order(&a[i], &b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl<T: Clone> Frozen<T> {
    /// The position of `key` in a table sorted by `key_of` (or where it would go).
    pub fn binary_search_by_key<K: Ord>(
        &self,
        key: &K,
        key_of: impl Fn(&T) -> K,
    ) -> Result<usize, usize> {
        let base = self.base.len();
        match self.tail.first() {
            Some(first) if key_of(first) <= *key => self
                .tail
                .binary_search_by_key(key, &key_of)
                .map(|i| i + base)
                .map_err(|i| i + base),
            _ => self.base.binary_search_by_key(key, &key_of),
        }
    }
}
