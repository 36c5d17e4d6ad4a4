//! The dead-letter queue: retry one, retry in bulk, discard. Reading it needs no actor; every
//! change goes through the DLQ keeper, which writes it with its audit entry in one commit.

use herald_storage::{AuditEntry, DeadFilter, DeliveryKey};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminError, AdminResult, entry};
use crate::dlq::DlqMsg;
use crate::time::parse_rfc3339;

/// `POST /v1/dlq/retry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    #[serde(default)]
    pub destination: Option<String>,
    /// RFC 3339, any offset: only deliveries that died at or after this time.
    #[serde(default)]
    pub since: Option<String>,
}

/// What the keeper writes beside a re-queue, told how many were re-queued.
pub struct RequeueAudit(Box<dyn Fn(usize) -> Option<AuditEntry> + Send + Sync>);

impl RequeueAudit {
    pub fn new(f: impl Fn(usize) -> Option<AuditEntry> + Send + Sync + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Writes nothing.
    pub fn none() -> Self {
        Self::new(|_| None)
    }

    pub fn entry(&self, requeued: usize) -> Option<AuditEntry> {
        (self.0)(requeued)
    }
}

impl std::fmt::Debug for RequeueAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequeueAudit")
    }
}

impl Admin {
    /// Re-queues one dead delivery with fresh attempts.
    pub async fn retry_dead(&self, actor: &str, key: DeliveryKey) -> AdminResult<()> {
        let id = key.to_string();
        let audit = entry(actor, "dlq.retry", &id, None, None);
        let audit = RequeueAudit::new(move |n| (n > 0).then(|| audit.clone()));
        let requeued = self
            .dlq_call(|reply| DlqMsg::Retry(vec![key], audit, reply))
            .await?;
        if requeued == 0 {
            return Err(AdminError::not_found(format_args!("dead delivery {id}")));
        }
        Ok(())
    }

    /// Re-queues every dead delivery matching the request; answers the count at once (the
    /// keeper re-queues large sets in chunks in the background). Audited as one entry.
    pub async fn retry_dead_in_bulk(&self, actor: &str, req: BulkRetry) -> AdminResult<usize> {
        let since_ms = req
            .since
            .as_deref()
            .map(|t| parse_rfc3339(t).map_err(|e| AdminError::invalid("since", e)))
            .transpose()?;
        let asked = json!({"destination": req.destination, "since": req.since});
        let filter = DeadFilter {
            destination: req.destination,
            since_ms,
        };
        let actor = actor.to_owned();
        let audit = RequeueAudit::new(move |n| {
            let mut after = asked.clone();
            after["requeued"] = n.into();
            Some(entry(&actor, "dlq.bulk_retry", "*", None, Some(after)))
        });
        let count = self
            .dlq_call(|reply| DlqMsg::BulkRetry(filter, audit, reply))
            .await?;
        self.core
            .perf_event(crate::perf::monitor::PerfEvent::BulkOperation {
                what: "dlq.bulk_retry".into(),
                count,
            });
        Ok(count)
    }

    /// Removes a dead delivery for good.
    pub async fn discard_dead(&self, actor: &str, key: DeliveryKey) -> AdminResult<()> {
        let id = key.to_string();
        let audit = entry(actor, "dlq.discard", &id, None, None);
        let discarded = self
            .dlq_call(|reply| DlqMsg::Discard(key, audit, reply))
            .await?;
        if discarded {
            Ok(())
        } else {
            Err(AdminError::not_found(format_args!("dead delivery {id}")))
        }
    }

    async fn dlq_call<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<Result<T, herald_storage::StorageError>>) -> DlqMsg,
    ) -> AdminResult<T> {
        use ractor::rpc::CallResult;
        let timeout = self.core.settings.request_timeout;
        match self.children.dlq.get().call(message, Some(timeout)).await {
            Ok(CallResult::Success(result)) => Ok(result?),
            Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => {
                Err(AdminError::Unavailable)
            }
        }
    }
}
