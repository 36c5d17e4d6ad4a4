//! The cache's stored entries: a map bounded by capacity with least-recently-used eviction,
//! each entry with an expiry. Pure: time is passed in, so the rules are tested without
//! sleeping.
//!
//! Recency is a logical clock: every insert and every hit stamps the entry with the next
//! tick, and `order` maps ticks to keys, so the least recently used entry is always
//! `order`'s first. Invariant: `map` and `order` hold exactly the same keys, and each
//! entry's `used` is its key's tick in `order`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::CacheValue;

#[derive(Debug)]
pub(super) struct Entries {
    capacity: usize,
    map: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    value: CacheValue,
    expires_at: Instant,
    /// This entry's tick in `order`.
    used: u64,
}

impl Entry {
    fn fresh(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

impl Entries {
    /// A store of at most `capacity` entries; with a capacity of 0 nothing is ever stored.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// The value under `key` if it is fresh, which becomes the most recently used. An
    /// expired entry is dropped and counts as absent.
    pub(super) fn get(&mut self, key: &str, now: Instant) -> Option<CacheValue> {
        let tick = self.tick();
        let entry = self.map.get_mut(key)?;
        if !entry.fresh(now) {
            self.remove(key);
            return None;
        }
        let old = std::mem::replace(&mut entry.used, tick);
        let value = CacheValue::clone(&entry.value);
        if let Some(key) = self.order.remove(&old) {
            self.order.insert(tick, key);
        }
        Some(value)
    }

    /// Stores `value` under `key` as the most recently used, replacing any entry there.
    /// Makes room by evicting the least recently used entries; answers how many of those
    /// were still fresh (dropping an expired one is expiry, not an eviction).
    pub(super) fn insert(
        &mut self,
        key: String,
        value: CacheValue,
        expires_at: Instant,
        now: Instant,
    ) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        self.remove(&key);
        let mut evicted = 0;
        while self.map.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if self.map.remove(&oldest).is_some_and(|e| e.fresh(now)) {
                evicted += 1;
            }
        }
        let used = self.tick();
        self.order.insert(used, key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                expires_at,
                used,
            },
        );
        evicted
    }

    /// Removes every entry whose key satisfies `matches`; answers how many were fresh.
    pub(super) fn remove_matching(
        &mut self,
        matches: impl Fn(&str) -> bool,
        now: Instant,
    ) -> usize {
        let doomed: Vec<String> = self.map.keys().filter(|k| matches(k)).cloned().collect();
        doomed
            .iter()
            .filter(|key| self.remove(key).is_some_and(|e| e.fresh(now)))
            .count()
    }

    /// Drops every expired entry.
    pub(super) fn purge_expired(&mut self, now: Instant) {
        let order = &mut self.order;
        self.map.retain(|_, entry| {
            let fresh = entry.fresh(now);
            if !fresh {
                order.remove(&entry.used);
            }
            fresh
        });
    }

    /// How many entries are stored (expired ones included until they are dropped).
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.order.remove(&entry.used);
        Some(entry)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn value(n: u32) -> CacheValue {
        Arc::new(n)
    }

    fn read(entries: &mut Entries, key: &str, now: Instant) -> Option<u32> {
        entries.get(key, now).map(|v| *v.downcast::<u32>().unwrap())
    }

    fn consistent(entries: &Entries) {
        assert_eq!(entries.map.len(), entries.order.len());
        for (tick, key) in &entries.order {
            assert_eq!(entries.map[key].used, *tick);
        }
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut entries = Entries::new(2);
        assert_eq!(entries.insert("a".into(), value(1), later, now), 0);
        assert_eq!(entries.insert("b".into(), value(2), later, now), 0);
        assert_eq!(read(&mut entries, "a", now), Some(1));
        assert_eq!(entries.insert("c".into(), value(3), later, now), 1);
        assert_eq!(entries.len(), 2);
        assert_eq!(read(&mut entries, "b", now), None);
        assert_eq!(read(&mut entries, "a", now), Some(1));
        assert_eq!(read(&mut entries, "c", now), Some(3));
        consistent(&entries);
    }

    #[test]
    fn expired_entries_are_absent_and_not_evictions() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_secs(60);
        let mut entries = Entries::new(1);
        entries.insert("a".into(), value(1), soon, now);
        assert_eq!(read(&mut entries, "a", now), Some(1));
        // Making room by dropping an expired entry is not an eviction.
        assert_eq!(entries.insert("b".into(), value(2), later, later), 0);
        assert_eq!(read(&mut entries, "a", later), None);
        entries.insert("c".into(), value(3), soon, now);
        assert_eq!(read(&mut entries, "c", later), None);
        assert_eq!(entries.len(), 0);
        consistent(&entries);
    }

    #[test]
    fn replacing_a_key_keeps_one_entry() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut entries = Entries::new(2);
        entries.insert("a".into(), value(1), later, now);
        assert_eq!(entries.insert("a".into(), value(2), later, now), 0);
        assert_eq!(entries.len(), 1);
        assert_eq!(read(&mut entries, "a", now), Some(2));
        consistent(&entries);
    }

    #[test]
    fn capacity_zero_stores_nothing() {
        let now = Instant::now();
        let mut entries = Entries::new(0);
        assert_eq!(
            entries.insert("a".into(), value(1), now + Duration::from_secs(1), now),
            0
        );
        assert_eq!(entries.len(), 0);
        assert_eq!(read(&mut entries, "a", now), None);
    }

    #[test]
    fn remove_matching_counts_fresh_entries_and_purge_drops_expired() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_secs(60);
        let mut entries = Entries::new(8);
        entries.insert("prefs:a".into(), value(1), later, now);
        entries.insert("prefs:b".into(), value(2), soon, now);
        entries.insert("supp:a".into(), value(3), soon, now);
        let mid = now + Duration::from_secs(1);
        let removed = entries.remove_matching(|k| k.starts_with("prefs:"), mid);
        assert_eq!(removed, 1, "the expired prefs:b is dropped but not counted");
        assert_eq!(entries.len(), 1);
        entries.purge_expired(mid);
        assert_eq!(entries.len(), 0);
        consistent(&entries);
    }
}
