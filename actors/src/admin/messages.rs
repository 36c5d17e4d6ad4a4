//! Resending a message: after a receiver lost data, deliver it again with fresh attempts and
//! the same `webhook-id` (the message id), whatever its deliveries' status.

use herald_storage::MessageId;
use serde::Deserialize;
use serde_json::json;

use super::{Admin, AdminError, AdminResult, entry, now_ms};

/// `POST /v1/messages/{id}/resend`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    /// Only to this destination; to every destination the message matched when absent.
    #[serde(default)]
    pub destination: Option<String>,
}

impl Admin {
    /// Re-queues the message's deliveries; how many. A suppressed recipient stays suppressed:
    /// the opt-out check runs again before the attempt.
    pub async fn resend(&self, actor: &str, id: MessageId, req: Resend) -> AdminResult<usize> {
        let subject = id.to_string();
        let (actor, asked) = (actor.to_owned(), req.destination.clone());
        let requeued = self
            .core
            .store
            .resend(id, req.destination.clone(), now_ms(), move |n| {
                entry(
                    &actor,
                    "message.resend",
                    &subject,
                    None,
                    Some(json!({"destination": asked, "requeued": n})),
                )
            })
            .await?
            .ok_or_else(|| AdminError::not_found(format_args!("message {id}")))?;
        if requeued == 0
            && let Some(destination) = &req.destination
        {
            // The audit entry says nobody was re-queued; the caller learns why.
            return Err(AdminError::not_found(format_args!(
                "a delivery of message {id} to destination {destination}"
            )));
        }
        self.core.work.notify_one();
        Ok(requeued)
    }
}
