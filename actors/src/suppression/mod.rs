//! The suppression registry: opt-outs and preferences.
//!
//! Storage holds suppressions and preferences, and every change to them is written with its
//! audit entry in the same commit (see `herald_storage::subjects`); the API and the feedback
//! loop write through the store's group commit directly. This actor owns what runs on its
//! own: the periodic sweep that reclaims expired suppressions (they stop applying at their
//! expiry time already; see [`rules::verdict`]). The delivery path reads a recipient's
//! suppressions and preferences in the same snapshot as the delivery and applies
//! [`rules::verdict`] before every attempt.

pub mod rules;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{Core, unix_ms};

/// How often expired suppressions are reclaimed, and how many per sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_BATCH: usize = 10_000;

#[derive(Debug)]
pub enum RegistryMsg {
    Sweep,
}

#[derive(Debug)]
pub struct SuppressionRegistry;

#[derive(Debug)]
pub struct RegistryState {
    core: Arc<Core>,
    ticker: Option<JoinHandle<()>>,
}

impl Actor for SuppressionRegistry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = Arc<Core>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        core: Arc<Core>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = Some(myself.send_interval(SWEEP_EVERY, || RegistryMsg::Sweep));
        Ok(RegistryState { core, ticker })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Sweep => {
                let now = unix_ms(SystemTime::now());
                match state.core.store.sweep_suppressions(now, SWEEP_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "expired suppressions reclaimed"),
                    Err(e) => tracing::warn!(error = %e, "suppression sweep failed"),
                }
            }
        }
        Ok(())
    }
}
