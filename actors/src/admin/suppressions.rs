//! Suppressions: a recipient that must not be contacted on a channel (or on every channel,
//! `*`), for a reason, until an optional expiry. Created one by one or in bulk (all or
//! nothing), deleted one by one; each change is written with its audit entry.

use herald_storage::{
    NewSuppression, Reason, Recipient, SuppressedOn, SuppressionRecord, SuppressionView,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, AdminResult, entry, keyword, now_ms, recipient};
use crate::cache_keys;
use crate::time::parse_rfc3339;

/// The most items one bulk request may carry.
pub const MAX_BULK: usize = 10_000;

/// A suppression as a request states it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionInput {
    pub recipient: String,
    /// A channel, or `*` for every channel.
    pub channel: String,
    pub reason: String,
    /// RFC 3339, any offset.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/suppressions/bulk`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSuppressions {
    pub items: Vec<SuppressionInput>,
}

/// `GET /v1/suppressions` filters and cursor.
#[derive(Debug, Clone, Default)]
pub struct SuppressionQuery {
    pub recipient: Option<String>,
    pub channel: Option<String>,
    /// The last (recipient, channel) of the previous page.
    pub after: Option<(String, String)>,
    pub limit: usize,
}

impl Admin {
    pub async fn create_suppression(
        &self,
        actor: &str,
        req: SuppressionInput,
    ) -> AdminResult<SuppressionView> {
        let item = suppression(req, "", actor)?;
        let view = SuppressionView {
            recipient: item.recipient.clone(),
            channel: item.channel.clone(),
            record: item.record.clone(),
        };
        let audit = entry(
            actor,
            "suppression.create",
            item.recipient.as_str(),
            None,
            Some(audited(&view)),
        );
        self.core
            .store
            .add_suppressions(vec![item], vec![audit])
            .await?;
        self.core
            .invalidate(&cache_keys::suppressions(view.recipient.as_str()));
        Ok(view)
    }

    /// Every item is checked before anything is written: all or nothing, one audit entry.
    pub async fn create_suppressions_in_bulk(
        &self,
        actor: &str,
        req: BulkSuppressions,
    ) -> AdminResult<usize> {
        if req.items.len() > MAX_BULK {
            return Err(AdminError::invalid(
                "items",
                format_args!(
                    "at most {MAX_BULK} items per request, got {}",
                    req.items.len()
                ),
            ));
        }
        let items = req
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| suppression(item, &format!("items[{i}]."), actor))
            .collect::<AdminResult<Vec<_>>>()?;
        let count = items.len();
        let audit = entry(
            actor,
            "suppression.bulk_create",
            "*",
            None,
            Some(json!({"count": count})),
        );
        self.core.store.add_suppressions(items, vec![audit]).await?;
        // Thousands of recipients: one pattern rather than thousands of keys.
        self.core.invalidate(cache_keys::ALL_SUPPRESSIONS);
        self.core
            .perf_event(crate::perf::monitor::PerfEvent::BulkOperation {
                what: "suppressions.bulk".into(),
                count,
            });
        Ok(count)
    }

    pub async fn delete_suppression(
        &self,
        actor: &str,
        recipient_raw: &str,
        channel: &str,
    ) -> AdminResult<()> {
        let who = recipient("recipient", recipient_raw)?;
        let on: SuppressedOn = keyword("channel", channel)?;
        let (actor, subject) = (actor.to_owned(), who.as_str().to_owned());
        let removed = self
            .core
            .store
            .remove_suppression(who.clone(), on.as_str().to_owned(), move |before| {
                entry(
                    &actor,
                    "suppression.delete",
                    &subject,
                    Some(json!({"channel": on.as_str(), "reason": before.reason, "note": before.note})),
                    None,
                )
            })
            .await?;
        self.core
            .invalidate(&cache_keys::suppressions(who.as_str()));
        match removed {
            Some(_) => Ok(()),
            None => Err(AdminError::not_found(format_args!(
                "suppression of {who} on {on}"
            ))),
        }
    }

    /// One page of suppressions, and whether more follow.
    pub async fn suppressions(
        &self,
        query: SuppressionQuery,
    ) -> AdminResult<(Vec<SuppressionView>, bool)> {
        let who = query
            .recipient
            .as_deref()
            .map(|r| recipient("recipient", r))
            .transpose()?;
        let channel = query
            .channel
            .as_deref()
            .map(|c| keyword::<SuppressedOn>("channel", c).map(|c| c.as_str().to_owned()))
            .transpose()?;
        Ok(self
            .core
            .store
            .list_suppressions(who, channel, query.after, query.limit)
            .await?)
    }
}

/// A validated suppression; `at` prefixes field names (`items[3].`).
fn suppression(req: SuppressionInput, at: &str, actor: &str) -> AdminResult<NewSuppression> {
    let field = |name: &str| format!("{at}{name}");
    let who: Recipient = recipient(&field("recipient"), &req.recipient)?;
    let on: SuppressedOn = keyword(&field("channel"), &req.channel)?;
    let reason: Reason = keyword(&field("reason"), &req.reason)?;
    let expires_at_ms = req
        .expires_at
        .as_deref()
        .map(|t| parse_rfc3339(t).map_err(|e| AdminError::invalid(field("expires_at"), e)))
        .transpose()?;
    Ok(NewSuppression {
        recipient: who,
        channel: on.as_str().to_owned(),
        record: SuppressionRecord {
            reason: reason.as_str().to_owned(),
            expires_at_ms,
            note: req.note,
            created_by: actor.to_owned(),
            created_at_ms: now_ms(),
        },
    })
}

/// A suppression as the audit trail records it.
fn audited(s: &SuppressionView) -> Value {
    json!({
        "channel": s.channel,
        "reason": s.record.reason,
        "expires_at_ms": s.record.expires_at_ms,
        "note": s.record.note,
    })
}
