//! The verifier: a small pool of identical actors that check signatures.
//!
//! Verification is pure CPU (about a microsecond of HMAC for 1 KiB), so the pool has one worker
//! per core and keeps no state but the compiled source rules. A genuine webhook is turned into
//! a [`NewMessage`] (id, routing fields, fan-out) and cast to the ingress with the caller's
//! reply port: the caller's one round trip covers verification and the durable commit. A bad
//! signature goes to the ingress too, which counts it towards blocking the client and then
//! answers; so a client's next request already sees its block.

pub mod messages;
pub mod probe;
pub mod schemes;

use std::sync::Arc;

use herald_storage::{
    AuditEntry, Channel, DedupeKey, MessageId, MessageRecord, NewMessage, NewSuppression,
    Recipient, SuppressionRecord,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::ingress::IngressMsg;
use crate::slot::Slot;
use crate::{Core, InboundWebhook, IngestError, unix_ms};
pub use messages::VerifierMsg;
use schemes::VerifyError;

#[derive(Debug)]
pub struct Verifier;

#[derive(Debug)]
pub struct VerifierArgs {
    pub core: Arc<Core>,
    pub ingress: Slot<IngressMsg>,
}

impl Actor for Verifier {
    type Msg = VerifierMsg;
    type State = VerifierArgs;
    type Arguments = VerifierArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: VerifierArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let VerifierMsg::Verify(webhook, reply) = msg;
        let ingress = state.ingress.get();
        let forwarded = match verify(&state.core, &webhook) {
            Ok(message) => ingress.cast(IngressMsg::Accept(Box::new(message), reply)),
            Err(VerifyError::InvalidSignature) => {
                ingress.cast(IngressMsg::InvalidSignature(webhook.client, reply))
            }
            Err(e) => {
                if e == VerifyError::StaleTimestamp {
                    state
                        .core
                        .perf_event(crate::perf::monitor::PerfEvent::StaleTimestamp {
                            source: webhook.source.clone(),
                        });
                }
                let _ = reply.send(Err(IngestError::Rejected(e)));
                Ok(())
            }
        };
        if forwarded.is_err() {
            // The ingress is restarting; the caller's reply port was dropped with the message,
            // so it sees the request fail and answers 503. Nothing was stored.
            tracing::warn!("ingress unavailable; webhook not accepted");
        }
        Ok(())
    }
}

/// Checks the webhook against its source's rule and builds the message to store.
fn verify(core: &Core, webhook: &InboundWebhook) -> Result<NewMessage, VerifyError> {
    let source = core
        .source(&webhook.source)
        .ok_or(VerifyError::InvalidSignature)?;
    let now_ms = unix_ms(webhook.received_at);
    let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let verified = source
        .rule
        .verify(&webhook.headers, &webhook.body, now_secs)?;
    let fields = probe::body_fields(&webhook.body);
    let event_type = verified.event_type.or_else(|| fields.event_type.clone());
    let destinations = core.destinations_for(Some(&webhook.source), event_type.as_deref());
    let suppress = feedback(
        source,
        &webhook.source,
        event_type.as_deref(),
        &fields,
        now_ms,
    );
    let content_type = webhook
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(NewMessage {
        id: MessageId::generate(now_ms),
        dedupe_key: Some(DedupeKey::new(&webhook.source, &verified.id)),
        record: MessageRecord {
            source: Some(webhook.source.clone()),
            external_id: Some(verified.id),
            event_type,
            content_type,
            // The one canonical form of the recipient; a field that is not one is ignored.
            recipient: fields
                .recipient
                .as_deref()
                .and_then(|r| Recipient::parse(r).ok()),
            channel: fields.channel,
            category: fields.category,
            received_at_ms: now_ms,
            body_len: webhook.body.len() as u64,
        },
        body: webhook.body.clone(),
        destinations,
        suppress,
    })
}

/// The feedback loop: a verified event whose type the source maps to a reason (a bounce, a
/// complaint) suppresses the body's `recipient` on its `channel` (default `email`).
fn feedback(
    source: &crate::Source,
    source_name: &str,
    event_type: Option<&str>,
    fields: &probe::BodyFields,
    now_ms: u64,
) -> Option<(NewSuppression, AuditEntry)> {
    let event_type = event_type?;
    let reason = source.suppress_on.get(event_type)?;
    let recipient = Recipient::parse(fields.recipient.as_deref()?).ok()?;
    let channel = fields
        .channel
        .as_deref()
        .and_then(|c| c.parse::<Channel>().ok())
        .unwrap_or(Channel::Email)
        .as_str()
        .to_owned();
    let actor = format!("source:{source_name}");
    let record = SuppressionRecord {
        reason: reason.clone(),
        expires_at_ms: None,
        note: Some(format!("{event_type} from {source_name}")),
        created_by: actor.clone(),
        created_at_ms: now_ms,
    };
    let audit = AuditEntry {
        at_ms: now_ms,
        actor,
        action: "suppression.create".into(),
        subject: recipient.as_str().to_owned(),
        before: None,
        after: Some(serde_json::json!({
            "channel": channel,
            "reason": record.reason,
            "note": record.note,
        })),
    };
    Some((
        NewSuppression {
            recipient,
            channel,
            record,
        },
        audit,
    ))
}
