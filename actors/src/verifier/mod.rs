//! Verification: a partner's webhook checked against its source's rule and, if genuine,
//! turned into a [`NewMessage`] (id, routing fields, fan-out, feedback-loop suppression).
//!
//! A pure function of the shared [`Core`] and the request, called inline on the edge's task by
//! [`crate::Herald::ingest`]: it is about a microsecond of HMAC for 1 KiB and keeps no state, so
//! an actor pool in front of it only cost mailbox hops (two per request, with the ingress's;
//! measured in the README's Performance section). Its failure cannot outlive the request.

pub mod probe;
pub mod schemes;

use herald_storage::{
    AuditEntry, Channel, DedupeKey, MessageId, MessageRecord, NewMessage, NewSuppression,
    Recipient, SuppressionRecord,
};

use crate::{Core, InboundWebhook, unix_ms};
use schemes::VerifyError;

/// Checks the webhook against its source's rule and builds the message to store.
pub(crate) fn verify(core: &Core, webhook: &InboundWebhook) -> Result<NewMessage, VerifyError> {
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
