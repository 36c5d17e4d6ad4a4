use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::RpcReplyPort;

use super::CacheStats;

/// A cached value, type-erased; [`super::get_or_load`] puts the type back.
pub type CacheValue = Arc<dyn Any + Send + Sync>;

/// What a [`Loader`] returns: the value, or why it could not be loaded.
pub type LoadFuture = Pin<Box<dyn Future<Output = Result<CacheValue, String>> + Send>>;

/// Loads a missing value. Run at most once, in a task owned by the cache.
pub type Loader = Box<dyn FnOnce() -> LoadFuture + Send>;

pub enum CacheMsg {
    /// Look a key up. A fresh entry is answered at once; on a miss the value is loaded with
    /// the loader, unless a load of the key is already in flight, which the caller then joins
    /// (its loader is dropped unused). Answers the value or the load's error.
    Get(String, Loader, RpcReplyPort<Result<CacheValue, String>>),
    /// Drop every entry whose key matches the glob pattern (`*` = any run of characters), and
    /// keep the results of loads of matching keys already in flight from being stored.
    /// Answers, if asked, how many fresh entries were removed.
    Invalidate(String, Option<RpcReplyPort<usize>>),
    /// The counters and the current number of entries.
    Stats(RpcReplyPort<CacheStats>),
    /// Internal: a load task finished (or failed, or panicked).
    Loaded {
        key: String,
        /// The load's generation: whether its result may still be stored.
        generation: u64,
        result: Result<CacheValue, String>,
    },
}

impl fmt::Debug for CacheMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Get(key, _loader, reply) => f
                .debug_tuple("Get")
                .field(key)
                .field(&"<loader>")
                .field(reply)
                .finish(),
            Self::Invalidate(pattern, reply) => f
                .debug_tuple("Invalidate")
                .field(pattern)
                .field(reply)
                .finish(),
            Self::Stats(reply) => f.debug_tuple("Stats").field(reply).finish(),
            Self::Loaded {
                key,
                generation,
                result,
            } => f
                .debug_struct("Loaded")
                .field("key", key)
                .field("generation", generation)
                .field("ok", &result.is_ok())
                .finish(),
        }
    }
}
