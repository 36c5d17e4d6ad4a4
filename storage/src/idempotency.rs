//! The idempotency index: which dedupe keys were accepted within the window, and the message
//! each one became.
//!
//! # Why not one B-tree keyed by the key
//! Dedupe keys are uniform hashes, so in a table keyed by them every accepted message dirties
//! its own 4 KiB leaf in every commit: with 2M keys stored that alone cut a batch of appends
//! from 92k to 25k messages/s (issue 13). Here accepting a message writes nothing but the
//! message itself, whose key is time-ordered; the index is a derivative of the messages table.
//!
//! # The three parts (layouts in [`crate::tables`])
//! - **Open bucket**, in memory only: the keys of the messages whose id (a ULID, so a time) is
//!   at or after the *boundary*. Durable already: a message stored with a dedupe key carries it
//!   in its value ([`crate::messages`]), so at start the open bucket is rebuilt by scanning the
//!   messages from the boundary.
//! - **Sealed runs** (`idempotency_runs`, `idempotency_run_dir`): when the open bucket holds
//!   [`IdempotencyOptions::seal_keys`] keys or spans [`IdempotencyOptions::seal_span_ms`], the
//!   writer moves the keys older than its newest minus [`IdempotencyOptions::seal_lag_ms`] into
//!   a new run, written once in key order under a new, larger run number (so a seal appends to
//!   the table's right edge), and advances the boundary. Each run has an in-memory blocked Bloom
//!   filter, so a lookup reads a run from disk only when the key may be in it.
//! - **Loose keys** (`idempotency_loose`, mirrored in memory): the rare keys that fit neither:
//!   a message committed after the boundary passed its id (it waited longer than the lag), or a
//!   deleted message (an erasure), whose key no rebuild from the messages would find.
//!
//! # Invariants
//! 1. A committed message with a dedupe key and an id at or after the boundary is in `messages`,
//!    or its key is loose.
//! 2. A committed message with a dedupe key and an id before the boundary has its key in a run
//!    or loose.
//! 3. A run is dropped only once its whole span is older than the sweep's cutoff, a loose key
//!    once its message's time is: every key is remembered at least the dedupe window.
//!
//! So a lookup that misses the open bucket, the loose keys and every run whose filter may hold
//! the key is a true miss. A transaction's changes are staged and reach the in-memory parts
//! only once it committed ([`Index::commit`]); an aborted one leaves them as they were.
//!
//! # Trust
//! At start every run is read back to build its filter; a run whose entries are not the count
//! its directory entry recorded, or that has no directory entry, is rebuilt from the messages
//! of its span (its keys are in their values), not trusted.
//!
//! # Memory per remembered id
//! 2 bytes in a sealed run (16 filter bits), about 40-70 bytes while in the open bucket (at most
//! `seal_keys` of them: ~4 MiB at the default 65,536), 40-70 bytes for a loose key. Per lookup,
//! one 64-byte filter block per live run; a true duplicate costs one B-tree read.

use std::collections::HashMap;

use redb::{ReadableTable as _, WriteTransaction};

use crate::error::Result;
use crate::tables::{
    IDEMPOTENCY_BOUNDARY_KEY, IDEMPOTENCY_LOOSE, IDEMPOTENCY_RUN_DIR, IDEMPOTENCY_RUNS, MESSAGES,
    META,
};
use crate::tx::Tx;

/// When the writer seals the open bucket into a run.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyOptions {
    /// Seal once the open bucket holds this many keys (bounds its memory and the start-up scan).
    pub seal_keys: usize,
    /// ... or once its keys span this long (bounds how many runs a window holds at low rates).
    pub seal_span_ms: u64,
    /// The newest keys of this age stay open, so messages still on their way to the writer
    /// land in the open bucket rather than as loose keys.
    pub seal_lag_ms: u64,
}

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self {
            seal_keys: 1 << 16,
            seal_span_ms: 60 * 60 * 1000,
            seal_lag_ms: 2_000,
        }
    }
}

/// The millisecond timestamp of a message id (a ULID's top 48 bits).
pub(crate) fn id_ms(id: u128) -> u64 {
    u64::try_from(id >> 80).unwrap_or(u64::MAX)
}

/// The smallest message id at `ms`.
fn first_id_at(ms: u64) -> u128 {
    u128::from(ms) << 80
}

/// A run's directory entry: the span of message times it covers and its number of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    from_ms: u64,
    /// Exclusive: every key of the run belongs to a message before this.
    until_ms: u64,
    keys: u64,
}

#[derive(Debug)]
struct Run {
    number: u64,
    span: Span,
    filter: Filter,
}

/// A change made by the open transaction, applied to memory only once it commits.
#[derive(Debug)]
enum Change {
    /// A new key; open or loose by its id and the boundary at commit.
    Remember(u128, u128),
    /// A key written to the loose table.
    Loose(u128, u128),
    Seal {
        run: Run,
        boundary_ms: u64,
    },
    DropRun(u64),
    ForgetLoose(u128),
}

/// The in-memory side of the index, owned by the writer thread.
#[derive(Debug)]
pub(crate) struct Index {
    options: IdempotencyOptions,
    boundary_ms: u64,
    open: HashMap<u128, u128>,
    /// The times of the oldest and newest open keys (0 when there is none).
    open_oldest_ms: u64,
    open_newest_ms: u64,
    loose: HashMap<u128, u128>,
    /// Oldest first.
    runs: Vec<Run>,
    next_run: u64,
    staged: Vec<Change>,
    /// `Remember`s of the open transaction, for duplicates within one batch.
    staged_keys: HashMap<u128, u128>,
}

impl Index {
    /// An empty index that belongs to no file: for the migrations, which run before the index
    /// is loaded and write nothing through it.
    pub(crate) fn detached() -> Self {
        Self {
            options: IdempotencyOptions::default(),
            boundary_ms: 0,
            open: HashMap::new(),
            open_oldest_ms: 0,
            open_newest_ms: 0,
            loose: HashMap::new(),
            runs: Vec::new(),
            next_run: 0,
            staged: Vec::new(),
            staged_keys: HashMap::new(),
        }
    }

    /// Loads the index in `txn`, rebuilding what it cannot trust; the caller commits.
    pub(crate) fn load(txn: &WriteTransaction, options: IdempotencyOptions) -> Result<Self> {
        let boundary_ms = txn
            .open_table(META)?
            .get(IDEMPOTENCY_BOUNDARY_KEY)?
            .map_or(0, |v| v.value());
        let mut index = Self {
            options,
            boundary_ms,
            ..Self::detached()
        };
        index.load_runs(txn)?;
        for entry in txn.open_table(IDEMPOTENCY_LOOSE)?.iter()? {
            let (key, id) = entry?;
            index.loose.insert(key.value(), id.value());
        }
        let messages = txn.open_table(MESSAGES)?;
        for entry in messages.range(first_id_at(boundary_ms)..)? {
            let (id, value) = entry?;
            if let Some(key) = crate::messages::decode_key(value.value())? {
                index.open_insert(key, id.value());
            }
        }
        Ok(index)
    }

    /// Reads every run back, builds its filter and rebuilds the runs that do not match their
    /// directory entry (or have none) from the messages of their span.
    fn load_runs(&mut self, txn: &WriteTransaction) -> Result<()> {
        let mut dir: Vec<(u64, Span)> = txn
            .open_table(IDEMPOTENCY_RUN_DIR)?
            .iter()?
            .map(|e| {
                let (number, (from_ms, until_ms, keys)) = e.map(|(k, v)| (k.value(), v.value()))?;
                Ok((
                    number,
                    Span {
                        from_ms,
                        until_ms,
                        keys,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        // What the runs table holds: per run number, its keys (for the filter) and id range.
        let mut found: Vec<(u64, Vec<u128>, u128, u128)> = Vec::new();
        for entry in txn.open_table(IDEMPOTENCY_RUNS)?.iter()? {
            let (key, id) = entry?;
            let ((number, key), id) = (key.value(), id.value());
            match found.last_mut() {
                Some((n, keys, lo, hi)) if *n == number => {
                    keys.push(key);
                    *lo = (*lo).min(id);
                    *hi = (*hi).max(id);
                }
                _ => found.push((number, vec![key], id, id)),
            }
        }
        // A run without a directory entry: adopt it with the span of its ids, then rebuild it.
        for (number, _, lo, hi) in &found {
            if !dir.iter().any(|(n, _)| n == number) {
                tracing::warn!(run = number, "idempotency run without a directory entry");
                let span = Span {
                    from_ms: id_ms(*lo),
                    until_ms: id_ms(*hi).saturating_add(1),
                    keys: u64::MAX, // never matches: forces the rebuild below
                };
                dir.push((*number, span));
            }
        }
        dir.sort_by_key(|(n, _)| *n);
        for (number, mut span) in dir {
            let keys = found
                .iter()
                .position(|(n, ..)| *n == number)
                .map(|i| std::mem::take(&mut found[i].1))
                .unwrap_or_default();
            let keys = if keys.len() as u64 == span.keys {
                keys
            } else {
                tracing::warn!(
                    run = number,
                    expected = span.keys,
                    found = keys.len(),
                    "idempotency run does not match its directory entry; rebuilding it from the messages"
                );
                let keys = rebuild_run(txn, number, span)?;
                span.keys = keys.len() as u64;
                keys
            };
            let mut filter = Filter::with_capacity(keys.len());
            for key in &keys {
                filter.insert(*key);
            }
            self.next_run = self.next_run.max(number + 1);
            self.runs.push(Run {
                number,
                span,
                filter,
            });
        }
        Ok(())
    }

    /// The first message accepted with `key`, if it is remembered.
    pub(crate) fn lookup(tx: &mut Tx<'_>, key: u128) -> Result<Option<u128>> {
        let index = tx.index();
        if let Some(id) = index
            .staged_keys
            .get(&key)
            .or_else(|| index.open.get(&key))
            .or_else(|| index.loose.get(&key))
        {
            return Ok(Some(*id));
        }
        // Newest first: a partner's retry is most often of a recent message.
        let candidates: Vec<u64> = index
            .runs
            .iter()
            .rev()
            .filter(|run| run.filter.may_contain(key))
            .map(|run| run.number)
            .collect();
        let runs = tx.idempotency_runs()?;
        for number in candidates {
            if let Some(id) = runs.get((number, key))? {
                return Ok(Some(id.value()));
            }
        }
        Ok(None)
    }

    /// Remembers that `key` became message `id` (after a [`Self::lookup`] miss).
    pub(crate) fn remember(tx: &mut Tx<'_>, key: u128, id: u128) -> Result<()> {
        if id_ms(id) < tx.index().boundary_ms {
            // Its bucket is sealed already: a rare, random write.
            tx.idempotency_loose()?.insert(key, id)?;
            tx.index().staged.push(Change::Loose(key, id));
        } else {
            tx.index().staged.push(Change::Remember(key, id));
        }
        tx.index().staged_keys.insert(key, id);
        Ok(())
    }

    /// A message with `key` is being deleted: keep its key loose, since neither the open
    /// bucket's rebuild nor a run's would find it any more.
    pub(crate) fn keep_deleted(tx: &mut Tx<'_>, key: u128, id: u128) -> Result<()> {
        tx.idempotency_loose()?.insert(key, id)?;
        tx.index().staged.push(Change::Loose(key, id));
        Ok(())
    }

    /// Forgets the keys of messages accepted before `before_ms`: whole runs, and loose keys.
    /// Returns how many keys.
    pub(crate) fn sweep(tx: &mut Tx<'_>, before_ms: u64) -> Result<usize> {
        let expired: Vec<(u64, u64)> = tx
            .index()
            .runs
            .iter()
            .take_while(|run| run.span.until_ms <= before_ms)
            .map(|run| (run.number, run.span.keys))
            .collect();
        let mut removed = 0;
        for (number, keys) in expired {
            tx.idempotency_runs()?
                .retain_in((number, 0)..=(number, u128::MAX), |_, _| false)?;
            tx.idempotency_run_dir()?.remove(number)?;
            tx.index().staged.push(Change::DropRun(number));
            removed += usize::try_from(keys).unwrap_or(usize::MAX);
        }
        let old: Vec<u128> = tx
            .index()
            .loose
            .iter()
            .filter(|(_, id)| id_ms(**id) < before_ms)
            .map(|(key, _)| *key)
            .collect();
        for key in old {
            tx.idempotency_loose()?.remove(key)?;
            tx.index().staged.push(Change::ForgetLoose(key));
            removed += 1;
        }
        Ok(removed)
    }

    fn open_insert(&mut self, key: u128, id: u128) {
        let ms = id_ms(id);
        if self.open.is_empty() || ms < self.open_oldest_ms {
            self.open_oldest_ms = ms;
        }
        self.open_newest_ms = self.open_newest_ms.max(ms);
        self.open.insert(key, id);
    }

    /// Whether the open bucket should be sealed now: it is full or spans long enough, and a
    /// seal would move some of its keys.
    pub(crate) fn wants_seal(&self) -> bool {
        !self.open.is_empty()
            && self.open_oldest_ms < self.seal_boundary()
            && (self.open.len() >= self.options.seal_keys
                || self.open_newest_ms - self.open_oldest_ms >= self.options.seal_span_ms)
    }

    fn seal_boundary(&self) -> u64 {
        self.open_newest_ms.saturating_sub(self.options.seal_lag_ms)
    }

    /// Moves the open keys before the new boundary into a new run, in `tx`.
    pub(crate) fn seal(tx: &mut Tx<'_>) -> Result<()> {
        let index = tx.index();
        let boundary_ms = index.seal_boundary();
        let from_ms = index.boundary_ms;
        let cut = first_id_at(boundary_ms);
        let mut moved: Vec<(u128, u128)> = index
            .open
            .iter()
            .filter(|(_, id)| **id < cut)
            .map(|(key, id)| (*key, *id))
            .collect();
        moved.sort_unstable();
        let number = index.next_run;
        let span = Span {
            from_ms,
            until_ms: boundary_ms,
            keys: moved.len() as u64,
        };
        let runs = tx.idempotency_runs()?;
        let mut filter = Filter::with_capacity(moved.len());
        for (key, id) in &moved {
            runs.insert((number, *key), *id)?;
            filter.insert(*key);
        }
        tx.idempotency_run_dir()?
            .insert(number, (span.from_ms, span.until_ms, span.keys))?;
        tx.meta()?.insert(IDEMPOTENCY_BOUNDARY_KEY, boundary_ms)?;
        let index = tx.index();
        index.next_run = number + 1;
        index.staged.push(Change::Seal {
            run: Run {
                number,
                span,
                filter,
            },
            boundary_ms,
        });
        Ok(())
    }

    /// The open transaction committed: its changes take effect.
    pub(crate) fn commit(&mut self) {
        self.staged_keys.clear();
        for change in std::mem::take(&mut self.staged) {
            match change {
                Change::Remember(key, id) if id_ms(id) >= self.boundary_ms => {
                    self.open_insert(key, id);
                }
                // Sealed meanwhile (cannot happen: seals run in their own transaction).
                Change::Remember(key, id) | Change::Loose(key, id) => {
                    self.loose.insert(key, id);
                }
                Change::Seal { run, boundary_ms } => {
                    let cut = first_id_at(boundary_ms);
                    self.open.retain(|_, id| *id >= cut);
                    self.open_oldest_ms =
                        self.open.values().map(|id| id_ms(*id)).min().unwrap_or(0);
                    self.boundary_ms = boundary_ms;
                    self.runs.push(run);
                }
                Change::DropRun(number) => self.runs.retain(|run| run.number != number),
                Change::ForgetLoose(key) => {
                    self.loose.remove(&key);
                }
            }
        }
    }

    /// The open transaction was aborted or failed to commit: forget its changes.
    pub(crate) fn abort(&mut self) {
        if let Some(Change::Seal { .. }) = self.staged.last() {
            self.next_run = self.next_run.saturating_sub(1);
        }
        self.staged.clear();
        self.staged_keys.clear();
    }

    /// How many keys are remembered in memory (open and loose) and in runs, and how many runs.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let sealed = self.runs.iter().map(|r| r.span.keys as usize).sum();
        (self.open.len() + self.loose.len(), sealed, self.runs.len())
    }
}

/// Rewrites run `number` from the keyed messages of its span; returns its keys.
fn rebuild_run(txn: &WriteTransaction, number: u64, span: Span) -> Result<Vec<u128>> {
    let mut entries = Vec::new();
    {
        let messages = txn.open_table(MESSAGES)?;
        for entry in messages.range(first_id_at(span.from_ms)..first_id_at(span.until_ms))? {
            let (id, value) = entry?;
            if let Some(key) = crate::messages::decode_key(value.value())? {
                entries.push((key, id.value()));
            }
        }
    }
    entries.sort_unstable();
    let mut runs = txn.open_table(IDEMPOTENCY_RUNS)?;
    runs.retain_in((number, 0)..=(number, u128::MAX), |_, _| false)?;
    for (key, id) in &entries {
        runs.insert((number, *key), *id)?;
    }
    txn.open_table(IDEMPOTENCY_RUN_DIR)?
        .insert(number, (span.from_ms, span.until_ms, entries.len() as u64))?;
    Ok(entries.into_iter().map(|(key, _)| key).collect())
}

/// A blocked Bloom filter over uniform 128-bit keys: one 64-byte block per key, one bit in each
/// of its eight words. 16 bits per key: about 0.1 % false positives; never a false negative.
#[derive(Debug)]
struct Filter {
    blocks: Box<[[u64; 8]]>,
}

const FILTER_BITS_PER_KEY: usize = 16;

impl Filter {
    fn with_capacity(keys: usize) -> Self {
        let blocks = (keys.max(1) * FILTER_BITS_PER_KEY).div_ceil(512);
        Self {
            blocks: vec![[0; 8]; blocks].into_boxed_slice(),
        }
    }

    /// The block and the bit of each word: the key is a hash already, so its low half picks
    /// the block (multiply-shift, no division) and 48 bits of its high half the eight bits.
    #[allow(clippy::cast_possible_truncation)] // taking the halves of the key
    fn locate(&self, key: u128) -> (usize, [u64; 8]) {
        let [high, low] = [(key >> 64) as u64, key as u64];
        let block = (u128::from(low) * self.blocks.len() as u128) >> 64;
        let mut bits = [0; 8];
        for (i, bit) in bits.iter_mut().enumerate() {
            *bit = 1 << ((high >> (6 * i)) & 63);
        }
        (usize::try_from(block).unwrap_or(0), bits)
    }

    fn insert(&mut self, key: u128) {
        let (block, bits) = self.locate(key);
        if let Some(block) = self.blocks.get_mut(block) {
            for (word, bit) in block.iter_mut().zip(bits) {
                *word |= bit;
            }
        }
    }

    fn may_contain(&self, key: u128) -> bool {
        let (block, bits) = self.locate(key);
        self.blocks
            .get(block)
            .is_none_or(|block| block.iter().zip(bits).all(|(word, bit)| word & bit != 0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let keys: Vec<u128> = (0..10_000u32)
            .map(|i| crate::DedupeKey::new("s", &i.to_string()).0)
            .collect();
        let mut filter = Filter::with_capacity(keys.len());
        for key in &keys {
            filter.insert(*key);
        }
        assert!(keys.iter().all(|key| filter.may_contain(*key)));
        let false_positives = (10_000..110_000u32)
            .filter(|i| filter.may_contain(crate::DedupeKey::new("s", &i.to_string()).0))
            .count();
        assert!(false_positives < 300, "{false_positives} of 100,000");
    }

    #[test]
    fn counts_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("i.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        crate::embedded::create_tables(&txn).unwrap();
        let index = Index::load(&txn, IdempotencyOptions::default()).unwrap();
        assert_eq!(index.counts(), (0, 0, 0));
    }
}
