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

use herald_storage::{AuditEntry, DeadFilter, DeliveryKey};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::admin::dlq::RequeueAudit;
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

    /// Every storage call runs in a task of its own that answers the caller, so the keeper
    /// never awaits a commit or a scan in its handler and one slow bulk retry delays nothing.
    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        core: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let core = Arc::clone(core);
        match msg {
            DlqMsg::Retry(keys, audit, reply) => {
                tokio::spawn(async move {
                    let result = core
                        .store
                        .requeue(keys, now_ms(), move |n| audit.entry(n))
                        .await;
                    if matches!(result, Ok(n) if n > 0) {
                        core.work.notify_one();
                    }
                    let _ = reply.send(result);
                });
            }
            DlqMsg::BulkRetry(filter, audit, reply) => {
                tokio::spawn(async move {
                    match core.store.dead_keys(filter).await {
                        Ok(keys) => {
                            let _ = reply.send(Ok(keys.len()));
                            let total = keys.len();
                            let audit = RequeueAudit::new(move |_| audit.entry(total));
                            requeue_chunks(&core, keys, audit, None).await;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                });
            }
            DlqMsg::Discard(key, audit, reply) => {
                tokio::spawn(async move {
                    let _ = reply.send(core.store.discard(key, audit).await);
                });
            }
            DlqMsg::AutoRecover(destination) => {
                tokio::spawn(async move {
                    let filter = DeadFilter {
                        destination: Some(destination.clone()),
                        since_ms: None,
                    };
                    match core.store.dead_keys(filter).await {
                        Ok(keys) if keys.is_empty() => {}
                        Ok(keys) => {
                            let (total, subject) = (keys.len(), destination.clone());
                            let audit = RequeueAudit::new(move |_| {
                                Some(AuditEntry {
                                    at_ms: now_ms(),
                                    actor: "system".into(),
                                    action: "dlq.auto_recover".into(),
                                    subject: subject.clone(),
                                    before: None,
                                    after: Some(serde_json::json!({"requeued": total})),
                                })
                            });
                            requeue_chunks(&core, keys, audit, Some(destination)).await;
                        }
                        Err(e) => {
                            tracing::error!(%destination, error = %e, "auto-recover failed");
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// Re-queues `keys` chunk by chunk, waking the dispatcher after each commit. The audit entry
/// is written with the first chunk (or alone, when there is nothing to re-queue).
async fn requeue_chunks(
    core: &Core,
    keys: Vec<DeliveryKey>,
    audit: RequeueAudit,
    recovering: Option<String>,
) {
    let total = keys.len();
    let mut audit = Some(audit);
    let mut requeued = 0;
    let mut chunks: Vec<Vec<DeliveryKey>> = keys.chunks(CHUNK).map(<[_]>::to_vec).collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    for chunk in chunks {
        let this = audit.take().unwrap_or_else(RequeueAudit::none);
        match core
            .store
            .requeue(chunk, now_ms(), move |n| this.entry(n))
            .await
        {
            Ok(n) => requeued += n,
            Err(e) => {
                tracing::error!(error = %e, "re-queueing dead deliveries stopped");
                return;
            }
        }
        core.work.notify_one();
    }
    if let Some(destination) = recovering {
        tracing::info!(%destination, requeued, "auto-recover: dead deliveries re-queued");
    } else {
        tracing::debug!(requeued, of = total, "bulk retry done");
    }
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
