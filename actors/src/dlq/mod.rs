//! The DLQ keeper: every change to the dead-letter queue goes through here.
//!
//! Dead deliveries are stored in `dead_letters` (see `herald_storage::deliveries`); reading
//! them needs no actor. Changing them does: re-queueing one, many (bulk retry, auto-recover
//! when a destination's circuit closes) or discarding one. Large re-queues run in chunks of
//! [`CHUNK`] in the background, so no single commit grows without bound and the caller gets
//! its count at once. After every re-queue the dispatcher is woken.

pub mod messages;

use std::sync::Arc;
use std::time::SystemTime;

use herald_storage::{DeadFilter, DeliveryKey, StorageError, Store};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{Core, unix_ms};
pub use messages::DlqMsg;

/// Deliveries re-queued per commit.
pub const CHUNK: usize = 1000;

#[derive(Debug)]
pub struct DlqKeeper;

impl Actor for DlqKeeper {
    type Msg = DlqMsg;
    type State = Arc<Core>;
    type Arguments = Arc<Core>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        core: Arc<Core>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(core)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        core: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DlqMsg::Retry(keys, reply) => {
                let result = core.store.requeue(keys, now_ms()).await;
                if matches!(result, Ok(n) if n > 0) {
                    core.work.notify_one();
                }
                let _ = reply.send(result);
            }
            DlqMsg::BulkRetry(filter, reply) => match core.store.dead_keys(filter).await {
                Ok(keys) => {
                    let _ = reply.send(Ok(keys.len()));
                    requeue_in_background(Arc::clone(core), keys, None);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            DlqMsg::Discard(key, reply) => {
                let _ = reply.send(core.store.discard(key).await);
            }
            DlqMsg::AutoRecover(destination) => {
                let filter = DeadFilter {
                    destination: Some(destination.clone()),
                    since_ms: None,
                };
                match core.store.dead_keys(filter).await {
                    Ok(keys) if keys.is_empty() => {}
                    Ok(keys) => requeue_in_background(Arc::clone(core), keys, Some(destination)),
                    Err(e) => tracing::error!(%destination, error = %e, "auto-recover failed"),
                }
            }
        }
        Ok(())
    }
}

/// Re-queues `keys` chunk by chunk, waking the dispatcher after each commit.
fn requeue_in_background(core: Arc<Core>, keys: Vec<DeliveryKey>, recovering: Option<String>) {
    tokio::spawn(async move {
        let total = keys.len();
        match requeue_chunks(&core.store, &core.work, keys).await {
            Ok(n) => {
                if let Some(destination) = recovering {
                    tracing::info!(%destination, requeued = n, "auto-recover: dead deliveries re-queued");
                } else {
                    tracing::debug!(requeued = n, of = total, "bulk retry done");
                }
            }
            Err(e) => tracing::error!(error = %e, "re-queueing dead deliveries stopped"),
        }
    });
}

async fn requeue_chunks(
    store: &Store,
    work: &tokio::sync::Notify,
    keys: Vec<DeliveryKey>,
) -> Result<usize, StorageError> {
    let mut requeued = 0;
    for chunk in keys.chunks(CHUNK) {
        requeued += store.requeue(chunk.to_vec(), now_ms()).await?;
        work.notify_one();
    }
    Ok(requeued)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
