//! Data subjects under GDPR: export everything held about a recipient, or erase it.
//!
//! Erasure deletes the recipient's messages (with their deliveries) and preferences, and keeps
//! every opt-out — suppressions and the `false` entries of its preferences, channel and
//! category — under its keyed pseudonym, so they are still honoured; audit entries are
//! pseudonymised. The erasure's own audit entry names the pseudonym, never the address.

use herald_storage::{Erasure, Recipient, SubjectExport};

use super::{Admin, AdminResult, entry, recipient};

impl Admin {
    /// Everything held about a recipient (after an erasure: only what is kept under its
    /// pseudonym, none of it naming the address).
    pub async fn export_subject(
        &self,
        recipient_raw: &str,
    ) -> AdminResult<(Recipient, SubjectExport)> {
        let who = recipient("recipient", recipient_raw)?;
        let held = self.core.store.export_subject(who.clone()).await?;
        Ok((who, held))
    }

    pub async fn erase_subject(&self, actor: &str, recipient_raw: &str) -> AdminResult<Erasure> {
        let who = recipient("recipient", recipient_raw)?;
        let actor = actor.to_owned();
        let report = self
            .core
            .store
            .erase_subject(who.clone(), move |alias| {
                entry(&actor, "subject.erase", alias.as_str(), None, None)
            })
            .await?;
        self.recipient_changed(&who);
        tracing::info!(
            messages = report.messages,
            suppressions_kept = report.suppressions,
            opt_outs_kept = report.opt_outs_kept,
            audit_pseudonymised = report.audit_entries,
            "subject erased"
        );
        Ok(report)
    }
}
