//! Where the rest of herald finds an actor that may have been restarted.
//!
//! A restarted actor has a new [`ActorRef`]. Callers hold a [`Slot`] instead; the supervisor
//! swaps the new reference in, and the next `get` sees it. Reading is one atomic load, so the
//! HTTP edge can use it on every request.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ractor::ActorRef;

pub struct Slot<M>(Arc<ArcSwap<ActorRef<M>>>);

impl<M> Slot<M> {
    pub fn new(actor: ActorRef<M>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(actor)))
    }

    /// The current incarnation.
    pub fn get(&self) -> Arc<ActorRef<M>> {
        self.0.load_full()
    }

    pub(crate) fn replace(&self, actor: ActorRef<M>) {
        self.0.store(Arc::new(actor));
    }
}

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M> std::fmt::Debug for Slot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.0.load().get_id())
    }
}
