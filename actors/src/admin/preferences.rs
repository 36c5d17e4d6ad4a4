//! Preferences: a recipient's opt-ins and opt-outs per channel and per category × channel.
//! Everything is opted in unless set to `false`. Each change is written with its audit entry
//! (before and after) and drops the cached copy the delivery path reads.

use std::collections::BTreeMap;

use herald_storage::{Channel, Preferences, Recipient};
use serde::Deserialize;

use super::{Admin, AdminError, AdminResult, entry, keyword, recipient};

/// `PUT /v1/preferences/{recipient}`: replaces them all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesInput {
    #[serde(default)]
    pub channels: BTreeMap<String, bool>,
    #[serde(default)]
    pub categories: BTreeMap<String, BTreeMap<String, bool>>,
}

/// `POST /v1/preferences/{recipient}/opt-out` and `…/opt-in`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptInput {
    pub channel: String,
    #[serde(default)]
    pub category: Option<String>,
}

impl Admin {
    /// A recipient's effective preferences (the defaults when none are stored), through the
    /// cache: the same entry the delivery path reads.
    pub async fn preferences(&self, recipient_raw: &str) -> AdminResult<(Recipient, Preferences)> {
        let who = recipient("recipient", recipient_raw)?;
        let cached = self.core.cached_preferences(&who).await.map_err(|e| {
            tracing::error!(error = %e, "preferences lookup");
            AdminError::Unavailable
        })?;
        let prefs = cached.as_ref().clone().unwrap_or_default();
        Ok((who, prefs))
    }

    pub async fn replace_preferences(
        &self,
        actor: &str,
        recipient_raw: &str,
        req: PreferencesInput,
    ) -> AdminResult<(Recipient, Preferences)> {
        let who = recipient("recipient", recipient_raw)?;
        let prefs = Preferences {
            channels: check_channels("channels", req.channels)?,
            categories: req
                .categories
                .into_iter()
                .map(|(category, channels)| {
                    if category.is_empty() {
                        return Err(AdminError::invalid(
                            "categories",
                            "a category name must not be empty",
                        ));
                    }
                    let at = format!("categories.{category}");
                    Ok((category, check_channels(&at, channels)?))
                })
                .collect::<AdminResult<_>>()?,
        };
        let stored = self
            .change_preferences(actor, &who, "preferences.replace", move |_| {
                Some(prefs.clone())
            })
            .await?;
        Ok((who, stored))
    }

    /// Back to the defaults (every channel and category opted in).
    pub async fn reset_preferences(&self, actor: &str, recipient_raw: &str) -> AdminResult<()> {
        let who = recipient("recipient", recipient_raw)?;
        self.change_preferences(actor, &who, "preferences.reset", |_| None)
            .await?;
        Ok(())
    }

    /// Opts out of (`allowed` false) or into (true) a channel, or a category on a channel.
    pub async fn opt(
        &self,
        actor: &str,
        recipient_raw: &str,
        allowed: bool,
        req: OptInput,
    ) -> AdminResult<(Recipient, Preferences)> {
        let who = recipient("recipient", recipient_raw)?;
        let channel = keyword::<Channel>("channel", &req.channel)?
            .as_str()
            .to_owned();
        if req.category.as_deref() == Some("") {
            return Err(AdminError::invalid("category", "must not be empty"));
        }
        let category = req.category;
        let action = if allowed {
            "preferences.opt_in"
        } else {
            "preferences.opt_out"
        };
        let stored = self
            .change_preferences(actor, &who, action, move |current| {
                let mut prefs = current.unwrap_or_default();
                match &category {
                    Some(category) => {
                        prefs
                            .categories
                            .entry(category.clone())
                            .or_default()
                            .insert(channel.clone(), allowed);
                    }
                    None => {
                        prefs.channels.insert(channel.clone(), allowed);
                    }
                }
                Some(prefs)
            })
            .await?;
        Ok((who, stored))
    }

    /// Stores what `change` makes of the stored preferences, with its audit entry; answers the
    /// effective preferences afterwards.
    async fn change_preferences<C>(
        &self,
        actor: &str,
        who: &Recipient,
        action: &'static str,
        change: C,
    ) -> AdminResult<Preferences>
    where
        C: Fn(Option<Preferences>) -> Option<Preferences> + Send + 'static,
    {
        let (actor, subject) = (actor.to_owned(), who.as_str().to_owned());
        self.core
            .store
            .update_preferences(who.clone(), change, move |before, after| {
                entry(
                    &actor,
                    action,
                    &subject,
                    before.and_then(|p| serde_json::to_value(p).ok()),
                    after.and_then(|p| serde_json::to_value(p).ok()),
                )
            })
            .await?;
        self.recipient_changed(who);
        // Effective = what was stored laid over any opt-outs kept through an erasure.
        Ok(self
            .core
            .store
            .preferences(who.clone())
            .await?
            .unwrap_or_default())
    }
}

fn check_channels(
    at: &str,
    channels: BTreeMap<String, bool>,
) -> AdminResult<BTreeMap<String, bool>> {
    channels
        .into_iter()
        .map(|(channel, on)| {
            let parsed: Channel = keyword(&format!("{at}.{channel}"), &channel)?;
            Ok((parsed.as_str().to_owned(), on))
        })
        .collect()
}
