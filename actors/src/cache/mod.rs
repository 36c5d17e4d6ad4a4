//! The read-through cache: preference and suppression lookups (the API's
//! `GET /v1/preferences/{recipient}` and the delivery path's checks) go through here.
//!
//! One [`CacheCoordinator`] actor owns every entry and every load, so all decisions about a
//! key are taken one message at a time and need no locks. Values are type-erased
//! ([`CacheValue`]); [`get_or_load`] is the typed door callers use. Keys carry a prefix per
//! kind of value (`prefs:`, `supp:`), so one key never holds two types.
//!
//! # Rules
//!
//! - **Single flight.** On a miss the first caller's loader runs; every other miss for the key
//!   while it runs joins it and gets the same value (the same `Arc`). One load per key at a
//!   time, however many callers.
//! - **The load belongs to the cache.** It runs in a task the actor spawns, not in the first
//!   caller's future: a caller that times out or is cancelled does not cancel it, and the
//!   others still get their answer. A load that fails, panics or outlives [`LOAD_TIMEOUT`]
//!   answers every waiter with an error.
//! - **Errors are not cached.** The next lookup after a failed load loads again.
//! - **TTL and capacity.** An entry lives `ttl` from its load; an expired entry counts as a
//!   miss and is dropped on access. Beyond `capacity` entries the least recently used one is
//!   evicted (a hit makes an entry the most recently used).
//! - **Writes invalidate.** Whoever changes a value invalidates its key (or a pattern)
//!   afterwards; the actor handles messages in order, so every lookup after the invalidation
//!   sees the new value. A load already in flight for a matching key started before the
//!   write and may have read the old value: its generation is retired, so its result is
//!   still given to the callers that were waiting for it (they asked before the write) but
//!   is not stored, and a lookup arriving after the invalidation starts a fresh load rather
//!   than joining the stale one.
//!
//! # Invariants
//!
//! - At most one *current* load per key (`in_flight`); retired loads only have waiters left
//!   to answer (`retired`, by generation). Generations come from one counter, so they never
//!   repeat and a late result can never be mistaken for a newer load's.
//! - A load's result is stored only if its generation is still the key's current one.
//! - Every waiter is answered exactly once, when its load's `Loaded` arrives; if the actor
//!   stops first its reply port is dropped, which callers see as [`CacheError::Unavailable`].
//!
//! # Counters ([`CacheStats`])
//!
//! Each lookup counts one `hit` (a fresh entry) or one `miss`. A miss that starts a load
//! counts one `load`; a miss that joins a load in flight counts `coalesced` instead, so
//! `misses = loads + coalesced`. `evictions` counts only capacity evictions of fresh entries:
//! neither invalidations nor TTL expiry are evictions. `entries` is the number of fresh
//! entries, and `hit_rate = hits / (hits + misses)`, 0 before any lookup.

mod entries;
pub mod messages;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::routing::glob_match;
use entries::Entries;
pub use messages::{CacheMsg, CacheValue, LoadFuture, Loader};

/// How long a load may run before its waiters are answered with an error, so a hung loader
/// cannot block its key for good. The load task is aborted then.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct CacheCoordinator;

/// The cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Entries kept at most; the least recently used is evicted beyond. 0 stores nothing
    /// (loads are still single-flight).
    pub capacity: usize,
    /// How long an entry lives after its load.
    pub ttl: Duration,
}

/// The cache's counters, as `GET /v1/cache/stats` shows them. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub loads: u64,
    pub coalesced: u64,
    pub evictions: u64,
    pub entries: u64,
    pub hit_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The load failed (or panicked, or timed out); nothing was cached.
    #[error("load failed: {0}")]
    Load(String),
    /// The cache actor is gone, or did not answer in time.
    #[error("cache unavailable")]
    Unavailable,
    /// The cached value is not of the type asked for: two callers used one key for
    /// different types, a bug (key prefixes prevent it).
    #[error("cached value has another type")]
    WrongType,
}

type Waiter = RpcReplyPort<Result<CacheValue, String>>;

/// A load in flight, and the callers waiting for it.
#[derive(Debug)]
struct InFlight {
    generation: u64,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
pub struct CacheState {
    ttl: Duration,
    entries: Entries,
    /// The current load of each key being loaded.
    in_flight: HashMap<String, InFlight>,
    /// The waiters of loads retired by an invalidation, by generation: answered, not stored.
    retired: HashMap<u64, Vec<Waiter>>,
    next_generation: u64,
    hits: u64,
    misses: u64,
    loads: u64,
    coalesced: u64,
    evictions: u64,
}

impl Actor for CacheCoordinator {
    type Msg = CacheMsg;
    type State = CacheState;
    type Arguments = CacheSettings;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        settings: CacheSettings,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CacheState {
            ttl: settings.ttl,
            entries: Entries::new(settings.capacity),
            in_flight: HashMap::new(),
            retired: HashMap::new(),
            next_generation: 0,
            hits: 0,
            misses: 0,
            loads: 0,
            coalesced: 0,
            evictions: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CacheMsg::Get(key, loader, reply) => state.get(&myself, key, loader, reply),
            CacheMsg::Invalidate(pattern, reply) => {
                let removed = state.invalidate(&pattern);
                if let Some(reply) = reply {
                    let _ = reply.send(removed);
                }
            }
            CacheMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            CacheMsg::Loaded {
                key,
                generation,
                result,
            } => state.loaded(key, generation, &result),
        }
        Ok(())
    }
}

impl CacheState {
    fn get(&mut self, myself: &ActorRef<CacheMsg>, key: String, loader: Loader, reply: Waiter) {
        if let Some(value) = self.entries.get(&key, Instant::now()) {
            self.hits += 1;
            let _ = reply.send(Ok(value));
            return;
        }
        self.misses += 1;
        match self.in_flight.entry(key) {
            Entry::Occupied(mut load) => {
                self.coalesced += 1;
                load.get_mut().waiters.push(reply);
            }
            Entry::Vacant(slot) => {
                self.loads += 1;
                self.next_generation += 1;
                let generation = self.next_generation;
                spawn_load(myself.clone(), slot.key().clone(), generation, loader);
                slot.insert(InFlight {
                    generation,
                    waiters: vec![reply],
                });
            }
        }
    }

    fn loaded(&mut self, key: String, generation: u64, result: &Result<CacheValue, String>) {
        let waiters = match self.in_flight.entry(key) {
            Entry::Occupied(load) if load.get().generation == generation => {
                let (key, load) = load.remove_entry();
                match result {
                    Ok(value) => {
                        let now = Instant::now();
                        self.evictions +=
                            self.entries
                                .insert(key, CacheValue::clone(value), now + self.ttl, now);
                    }
                    Err(error) => tracing::debug!(%key, %error, "cache load failed"),
                }
                load.waiters
            }
            _ => self.retired.remove(&generation).unwrap_or_default(),
        };
        for waiter in waiters {
            // A waiter that gave up has closed its port; the others still get the value.
            let _ = waiter.send(result.clone());
        }
    }

    fn invalidate(&mut self, pattern: &str) -> usize {
        let removed = self
            .entries
            .remove_matching(|key| glob_match(pattern, key), Instant::now());
        let loading: Vec<String> = self
            .in_flight
            .keys()
            .filter(|key| glob_match(pattern, key))
            .cloned()
            .collect();
        for key in loading {
            if let Some(load) = self.in_flight.remove(&key) {
                self.retired.insert(load.generation, load.waiters);
            }
        }
        removed
    }

    fn stats(&mut self) -> CacheStats {
        self.entries.purge_expired(Instant::now());
        let lookups = self.hits + self.misses;
        // Precision is lost only beyond 2^53 lookups, which is fine for a ratio.
        #[allow(clippy::cast_precision_loss)]
        let hit_rate = if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        };
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            loads: self.loads,
            coalesced: self.coalesced,
            evictions: self.evictions,
            entries: self.entries.len() as u64,
            hit_rate,
        }
    }
}

/// Runs `loader` in a task of its own, so a panic is caught as the task's failure, and casts
/// the outcome back to the cache. Nobody awaits this task but the cache's message: callers
/// going away do not cancel it.
fn spawn_load(cache: ActorRef<CacheMsg>, key: String, generation: u64, loader: Loader) {
    tokio::spawn(async move {
        let mut load = tokio::spawn(async move { loader().await });
        let result = match tokio::time::timeout(LOAD_TIMEOUT, &mut load).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("the load task failed: {e}")),
            Err(_) => {
                load.abort();
                Err(format!("the load timed out after {LOAD_TIMEOUT:?}"))
            }
        };
        // If the cache has stopped, its waiters were already dropped: nobody to tell.
        let _ = cache.cast(CacheMsg::Loaded {
            key,
            generation,
            result,
        });
    });
}

/// Looks `key` up, loading it with `load` on a miss (single-flight); errors are not cached.
///
/// `timeout` bounds this caller's wait only: the load goes on without it, for the others.
pub async fn get_or_load<T, F, Fut>(
    cache: &ActorRef<CacheMsg>,
    key: String,
    timeout: Duration,
    load: F,
) -> Result<Arc<T>, CacheError>
where
    T: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let loader: Loader = Box::new(move || -> LoadFuture {
        Box::pin(async move { load().await.map(|value| Arc::new(value) as CacheValue) })
    });
    match cache
        .call(|reply| CacheMsg::Get(key, loader, reply), Some(timeout))
        .await
    {
        Ok(CallResult::Success(Ok(value))) => {
            value.downcast::<T>().map_err(|_| CacheError::WrongType)
        }
        Ok(CallResult::Success(Err(error))) => Err(CacheError::Load(error)),
        Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => Err(CacheError::Unavailable),
    }
}

/// Drops the entries whose keys match `pattern` (and retires matching loads in flight);
/// waits for, and answers, how many fresh entries were removed. 0 if the cache is gone.
pub async fn invalidate(cache: &ActorRef<CacheMsg>, pattern: &str) -> usize {
    // No timeout: the actor answers without awaiting anything.
    match cache
        .call(
            |reply| CacheMsg::Invalidate(pattern.to_owned(), Some(reply)),
            None,
        )
        .await
    {
        Ok(CallResult::Success(removed)) => removed,
        _ => 0,
    }
}

/// [`invalidate`] without waiting, for sync contexts. Lookups sent after this call (from any
/// task) are handled after the invalidation: the mailbox is in order.
pub fn invalidate_now(cache: &ActorRef<CacheMsg>, pattern: &str) {
    let _ = cache.cast(CacheMsg::Invalidate(pattern.to_owned(), None));
}

/// The cache's counters.
pub async fn stats(
    cache: &ActorRef<CacheMsg>,
    timeout: Duration,
) -> Result<CacheStats, CacheError> {
    match cache.call(CacheMsg::Stats, Some(timeout)).await {
        Ok(CallResult::Success(stats)) => Ok(stats),
        Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => Err(CacheError::Unavailable),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn spawn_cache(capacity: usize, ttl: Duration) -> ActorRef<CacheMsg> {
        let (cache, _handle) =
            Actor::spawn(None, CacheCoordinator, CacheSettings { capacity, ttl })
                .await
                .unwrap();
        cache
    }

    async fn cache() -> ActorRef<CacheMsg> {
        spawn_cache(100, Duration::from_secs(60)).await
    }

    type Counted = std::pin::Pin<Box<dyn Future<Output = Result<usize, String>> + Send>>;

    /// A loader that counts its calls, sleeps `delay`, and returns the call's number.
    fn counting(
        calls: &Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl FnOnce() -> Counted + Send + 'static {
        let calls = Arc::clone(calls);
        move || {
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                Ok(n)
            })
        }
    }

    async fn get(
        cache: &ActorRef<CacheMsg>,
        key: &str,
        calls: &Arc<AtomicUsize>,
    ) -> Result<Arc<usize>, CacheError> {
        get_or_load(cache, key.into(), WAIT, counting(calls, Duration::ZERO)).await
    }

    async fn stats_of(cache: &ActorRef<CacheMsg>) -> CacheStats {
        stats(cache, WAIT).await.unwrap()
    }

    #[tokio::test]
    async fn concurrent_misses_load_once_and_share_the_value() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let cache = cache.clone();
            let load = counting(&calls, Duration::from_millis(50));
            tasks.push(tokio::spawn(async move {
                get_or_load(&cache, "prefs:r".into(), WAIT, load).await
            }));
        }
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await.unwrap().unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        assert_eq!(*values[0], 1);
        let s = stats_of(&cache).await;
        assert_eq!(
            (s.loads, s.misses, s.coalesced, s.hits, s.entries),
            (1, 64, 63, 0, 1)
        );

        let mut tasks = Vec::new();
        for _ in 0..64 {
            let cache = cache.clone();
            let load = counting(&calls, Duration::from_millis(50));
            tasks.push(tokio::spawn(async move {
                get_or_load(&cache, "prefs:r".into(), WAIT, load).await
            }));
        }
        for task in tasks {
            assert!(Arc::ptr_eq(&task.await.unwrap().unwrap(), &values[0]));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let s = stats_of(&cache).await;
        assert_eq!((s.hits, s.misses, s.loads, s.coalesced), (64, 64, 1, 63));
        assert!((s.hit_rate - 0.5).abs() < f64::EPSILON);
    }

    #[tokio::test]
    async fn a_failed_load_answers_every_waiter_and_is_not_cached() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                get_or_load(&cache, "supp:x".into(), WAIT, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Err::<usize, _>("store down".to_owned())
                })
                .await
            }));
        }
        for task in tasks {
            assert_eq!(
                task.await.unwrap(),
                Err(CacheError::Load("store down".into()))
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let s = stats_of(&cache).await;
        assert_eq!((s.loads, s.coalesced, s.entries), (1, 7, 0));

        // Nothing was cached: the next lookup loads again, and succeeds.
        assert_eq!(*get(&cache, "supp:x", &calls).await.unwrap(), 2);
        assert_eq!(stats_of(&cache).await.loads, 2);
    }

    fn explode() -> Result<usize, String> {
        panic!("loader bug")
    }

    #[tokio::test]
    async fn a_panicking_load_answers_with_an_error_and_the_cache_keeps_working() {
        let cache = cache().await;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move {
                get_or_load(&cache, "prefs:p".into(), WAIT, || async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    explode()
                })
                .await
            }));
        }
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Err(CacheError::Load(_))));
        }
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(*get(&cache, "prefs:p", &calls).await.unwrap(), 1);
        assert_eq!(*get(&cache, "prefs:p", &calls).await.unwrap(), 1);
        let s = stats_of(&cache).await;
        assert_eq!((s.loads, s.hits, s.entries), (2, 1, 1));
    }

    #[tokio::test]
    async fn a_cancelled_first_caller_does_not_cancel_the_load() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));

        // The first caller gives up (timeout) while its load is in flight…
        let first = tokio::time::timeout(
            Duration::from_millis(10),
            get_or_load(
                &cache,
                "prefs:c".into(),
                WAIT,
                counting(&calls, Duration::from_millis(100)),
            ),
        )
        .await;
        assert!(first.is_err());

        // …another is aborted outright…
        let aborted = {
            let cache = cache.clone();
            let load = counting(&calls, Duration::from_millis(100));
            tokio::spawn(async move { get_or_load(&cache, "prefs:c".into(), WAIT, load).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        aborted.abort();
        assert!(aborted.await.unwrap_err().is_cancelled());

        // …and one joining meanwhile still gets the value of that one load.
        let value = get_or_load(
            &cache,
            "prefs:c".into(),
            WAIT,
            counting(&calls, Duration::from_millis(100)),
        )
        .await
        .unwrap();
        assert_eq!(*value, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let s = stats_of(&cache).await;
        assert_eq!((s.loads, s.coalesced, s.entries), (1, 2, 1));
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let cache = spawn_cache(100, Duration::from_millis(50)).await;
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(*get(&cache, "prefs:t", &calls).await.unwrap(), 1);
        assert_eq!(*get(&cache, "prefs:t", &calls).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(*get(&cache, "prefs:t", &calls).await.unwrap(), 2);
        let s = stats_of(&cache).await;
        assert_eq!(
            (s.hits, s.misses, s.loads, s.evictions, s.entries),
            (1, 2, 2, 0, 1),
            "expiry is a miss, not an eviction"
        );
    }

    #[tokio::test]
    async fn capacity_evicts_the_least_recently_used() {
        let cache = spawn_cache(2, Duration::from_secs(60)).await;
        let (a, b, c) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        get(&cache, "k:a", &a).await.unwrap();
        get(&cache, "k:b", &b).await.unwrap();
        get(&cache, "k:a", &a).await.unwrap(); // a is now more recent than b
        get(&cache, "k:c", &c).await.unwrap();
        let s = stats_of(&cache).await;
        assert_eq!((s.evictions, s.entries), (1, 2));

        get(&cache, "k:a", &a).await.unwrap();
        get(&cache, "k:c", &c).await.unwrap();
        assert_eq!(a.load(Ordering::SeqCst), 1, "a stayed");
        assert_eq!(c.load(Ordering::SeqCst), 1, "c stayed");
        get(&cache, "k:b", &b).await.unwrap();
        assert_eq!(b.load(Ordering::SeqCst), 2, "b was evicted");
        assert_eq!(stats_of(&cache).await.evictions, 2);
    }

    #[tokio::test]
    async fn pattern_invalidation_removes_matching_keys_only() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        for key in ["prefs:a", "prefs:b", "supp:a"] {
            get(&cache, key, &calls).await.unwrap();
        }
        assert_eq!(invalidate(&cache, "prefs:*").await, 2);
        let s = stats_of(&cache).await;
        assert_eq!(
            (s.entries, s.evictions),
            (1, 0),
            "invalidation is no eviction"
        );

        get(&cache, "supp:a", &calls).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3, "supp:a stayed");
        get(&cache, "prefs:a", &calls).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4, "prefs:a was removed");

        assert_eq!(invalidate(&cache, "prefs:a").await, 1);
        assert_eq!(invalidate(&cache, "nothing:*").await, 0);
        invalidate_now(&cache, "*");
        assert_eq!(stats_of(&cache).await.entries, 0);
    }

    #[tokio::test]
    async fn an_invalidation_during_a_load_keeps_its_result_out_of_the_cache() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let before = {
            let cache = cache.clone();
            let load = counting(&calls, Duration::from_millis(100));
            tokio::spawn(async move { get_or_load(&cache, "prefs:w".into(), WAIT, load).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A write happens, then invalidates: there is no entry yet, but a load in flight.
        assert_eq!(invalidate(&cache, "prefs:*").await, 0);

        // A lookup after the write does not join the stale load: it loads afresh.
        let after = get(&cache, "prefs:w", &calls).await.unwrap();
        assert_eq!(*after, 2);
        // The caller who asked before the write gets the stale load's value…
        assert_eq!(*before.await.unwrap().unwrap(), 1);
        // …which was not stored: the entry is the fresh load's.
        assert_eq!(*get(&cache, "prefs:w", &calls).await.unwrap(), 2);
        let s = stats_of(&cache).await;
        assert_eq!((s.loads, s.hits, s.entries), (2, 1, 1));
    }

    #[tokio::test]
    async fn a_stale_load_finishing_alone_is_not_stored() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let before = {
            let cache = cache.clone();
            let load = counting(&calls, Duration::from_millis(50));
            tokio::spawn(async move { get_or_load(&cache, "prefs:s".into(), WAIT, load).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        invalidate_now(&cache, "prefs:s");
        assert_eq!(*before.await.unwrap().unwrap(), 1);
        assert_eq!(stats_of(&cache).await.entries, 0);
        assert_eq!(*get(&cache, "prefs:s", &calls).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn hit_rate_is_hits_over_lookups() {
        let cache = cache().await;
        let s = stats_of(&cache).await;
        assert_eq!(s, CacheStats::default());
        let calls = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            get(&cache, "prefs:h", &calls).await.unwrap();
        }
        let s = stats_of(&cache).await;
        assert_eq!((s.hits, s.misses), (3, 1));
        assert!((s.hit_rate - 0.75).abs() < f64::EPSILON);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["hit_rate"], 0.75);
        assert_eq!(json["hits"], 3);
    }

    #[tokio::test]
    async fn one_key_read_as_two_types_is_reported() {
        let cache = cache().await;
        let calls = Arc::new(AtomicUsize::new(0));
        get(&cache, "prefs:x", &calls).await.unwrap();
        let wrong = get_or_load(&cache, "prefs:x".into(), WAIT, || async {
            Ok::<String, String>("x".into())
        })
        .await;
        assert_eq!(wrong, Err(CacheError::WrongType));
    }

    #[tokio::test]
    async fn a_stopped_cache_is_unavailable() {
        let cache = cache().await;
        cache.stop(None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(
            get(&cache, "prefs:z", &calls).await,
            Err(CacheError::Unavailable)
        );
        assert_eq!(stats(&cache, WAIT).await, Err(CacheError::Unavailable));
        assert_eq!(invalidate(&cache, "*").await, 0);
    }
}
