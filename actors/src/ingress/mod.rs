//! The ingress: admission and durable acceptance of inbound messages.
//!
//! It owns the invalid-signature counters and the client blocklist (published to the edge as
//! an immutable snapshot, so checking a client costs one atomic load), and it hands verified
//! messages to the storage writer's group commit. It never awaits a commit itself: the reply
//! port travels with the write and is answered on the writer thread once the batch is durable,
//! so one ingress serves any number of concurrent requests.

pub mod blocklist;
pub mod messages;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use herald_storage::{Accepted, SWEEP_SLICES};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::verifier::schemes::VerifyError;
use crate::{Core, IngestError, Ingested, unix_ms};
use blocklist::Blocklist;
pub use messages::IngressMsg;

/// How often [`IngressMsg::Tick`] runs. Each tick sweeps one of the idempotency table's
/// [`SWEEP_SLICES`], so the whole table is swept every `TICK * SWEEP_SLICES` (about 43
/// minutes): keys live at least the dedupe window, and at most that much longer.
const TICK: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Ingress;

#[derive(Debug)]
pub struct IngressState {
    core: Arc<Core>,
    blocklist: Blocklist,
    ticker: Option<JoinHandle<()>>,
    /// The idempotency slice the next tick sweeps.
    sweep_slice: u32,
}

impl Actor for Ingress {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = Arc<Core>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        core: Arc<Core>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let settings = &core.settings;
        let blocklist = Blocklist::new(
            settings.block_after_invalid,
            settings.block_window,
            settings.block_for,
        );
        // A restarted ingress starts with no blocks; publish that, rather than leave the
        // previous incarnation's snapshot in force with nobody to expire it.
        core.blocked.store(Arc::default());
        let ticker = Some(myself.send_interval(TICK, || IngressMsg::Tick));
        Ok(IngressState {
            core,
            blocklist,
            ticker,
            sweep_slice: 0,
        })
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
            IngressMsg::Accept(message, reply) => {
                let fans_out = !message.destinations.is_empty();
                let suppressed = message.suppress.as_ref().map(|(s, _)| s.recipient.clone());
                let core = Arc::clone(&state.core);
                state.core.store.insert_message(
                    *message,
                    Box::new(move |outcome| {
                        if matches!(outcome, Ok(Accepted::New(_))) {
                            // A feedback-loop suppression just committed: no stale cached read.
                            if let Some(recipient) = &suppressed {
                                core.invalidate(&crate::cache_keys::suppressions(
                                    recipient.as_str(),
                                ));
                            }
                            if fans_out {
                                core.work.notify_one();
                            }
                        }
                        let answer = outcome.map_err(IngestError::Storage).map(|a| match a {
                            Accepted::New(id) => Ingested {
                                id,
                                duplicate: false,
                            },
                            Accepted::Duplicate(id) => Ingested {
                                id,
                                duplicate: true,
                            },
                        });
                        // The caller may have given up (timeout, closed connection): then
                        // the message is stored all the same, and a retry is a duplicate.
                        let _ = reply.send(answer);
                    }),
                );
            }
            IngressMsg::InvalidSignature(client, reply) => {
                let now = Instant::now();
                if let Some(until) = state.blocklist.record_invalid(client, now) {
                    let block_secs = until.saturating_duration_since(now).as_secs();
                    tracing::warn!(%client, block_secs, "client blocked after repeated invalid signatures");
                    state
                        .core
                        .perf_event(crate::perf::monitor::PerfEvent::ClientBlocked {
                            client: client.to_string(),
                            until_ms: unix_ms(SystemTime::now()).saturating_add(block_secs * 1000),
                        });
                    publish_blocks(&state.core, &state.blocklist);
                }
                let _ = reply.send(Err(IngestError::Rejected(VerifyError::InvalidSignature)));
            }
            IngressMsg::Tick => {
                state.blocklist.prune(Instant::now());
                publish_blocks(&state.core, &state.blocklist);
                let store = state.core.store.clone();
                let window = state.core.settings.dedupe_window;
                let slice = state.sweep_slice;
                state.sweep_slice = (slice + 1) % SWEEP_SLICES;
                tokio::spawn(async move {
                    let cutoff = SystemTime::now().checked_sub(window).map_or(0, unix_ms);
                    match store.sweep_idempotency(cutoff, slice).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::debug!(slice, removed, "idempotency keys expired"),
                        // The slice comes round again on the next cycle.
                        Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
                    }
                });
            }
        }
        Ok(())
    }
}

fn publish_blocks(core: &Core, blocklist: &Blocklist) {
    core.blocked.store(Arc::new(blocklist.blocked().clone()));
}
