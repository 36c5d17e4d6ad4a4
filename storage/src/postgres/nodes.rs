//! Which nodes share the database: each writes a heartbeat, and counts the others'.
//!
//! Every [`HEARTBEAT`] a node stamps its row in `herald_nodes` and counts the rows stamped
//! within [`ALIVE_FOR`]: the nodes alive now, itself included. The count divides a
//! destination's rate limit between the nodes ([`crate::Store::nodes`]): each enforces its
//! share locally, so no attempt waits on a shared counter. A node that dies stops being
//! counted after [`ALIVE_FOR`] (meanwhile the others send below the limit, never above); a node
//! that joins is counted by the others within one [`HEARTBEAT`] (meanwhile the aggregate may
//! exceed the limit by the newcomer's share).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Inner;
use super::schema::ms;

pub(super) const HEARTBEAT: Duration = Duration::from_secs(2);
pub(super) const ALIVE_FOR: Duration = Duration::from_secs(10);

/// Beats until the store is dropped or closed; `alive` holds the last count (at least 1).
pub(super) fn spawn_heartbeat(store: std::sync::Weak<Inner>, alive: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            match beat(&inner).await {
                Ok(count) => alive.store(count.max(1), Ordering::Relaxed),
                // The store's health is the writer's and the probe's business; a missed beat
                // keeps the last count.
                Err(e) => tracing::debug!(error = %e, "node heartbeat failed"),
            }
        }
    });
}

async fn beat(inner: &Inner) -> crate::Result<usize> {
    let client = inner.pool.get().await?;
    let now = crate::postgres::now_ms();
    let beat = client
        .prepare_cached(
            "INSERT INTO herald_nodes (name, seen_ms) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
        )
        .await?;
    client.execute(&beat, &[&inner.node, &ms(now)]).await?;
    let since = now.saturating_sub(u64::try_from(ALIVE_FOR.as_millis()).unwrap_or(0));
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM herald_nodes WHERE seen_ms >= $1",
            &[&ms(since)],
        )
        .await?
        .get(0);
    Ok(usize::try_from(count).unwrap_or(1))
}
