//! The root supervisor: starts every child linked, restarts one that fails, and gives up
//! (stops itself, which `main` treats as fatal) when restarts exceed the budget.
//!
//! Children, in start order: the cache coordinator, the perf monitor, the ingress, the DLQ
//! keeper, the suppression registry, the dispatcher. Signature verification is no actor: it is
//! a pure function the edge calls inline (see [`crate::verifier`]).
//!
//! ractor has no built-in restart strategy, and the default supervision handler stops the
//! parent when a child ends, so this actor implements one-for-one restarts itself. A restart
//! swaps the new [`ActorRef`] into the child's [`Slot`], so callers never hold a dead reference
//! for longer than one failed call.
//!
//! Adding an actor: a variant in [`Child`], one arm in [`Supervisor::spawn_child`], a `Slot`
//! in [`Children`], and its first spawn in `pre_start`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::Core;
use crate::cache::{CacheCoordinator, CacheMsg};
use crate::dispatcher::{Dispatcher, DispatcherArgs, DispatcherMsg};
use crate::dlq::{DlqKeeper, DlqMsg};
use crate::ingress::{Ingress, IngressMsg};
use crate::perf::monitor::{PerfArgs, PerfMonitor, PerfMsg};
use crate::slot::Slot;
use crate::suppression::SuppressionRegistry;

/// At most this many restarts within [`RESTART_WINDOW`]; one more and the supervisor stops.
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Every supervised child, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Ingress,
    DlqKeeper,
    Dispatcher,
    SuppressionRegistry,
    Cache,
    Perf,
}

/// The slots a child may need to reach its peers; filled in as they start.
#[derive(Debug, Clone, Default)]
struct Peers {
    dlq: Option<Slot<DlqMsg>>,
}

/// Where callers find the children. Filled in by the supervisor's `pre_start`.
#[derive(Debug, Clone)]
pub struct Children {
    pub ingress: Slot<IngressMsg>,
    pub dlq: Slot<DlqMsg>,
    pub dispatcher: Slot<DispatcherMsg>,
    pub cache: Slot<CacheMsg>,
    pub perf: Slot<PerfMsg>,
}

#[derive(Debug)]
pub enum SupervisorMsg {
    /// Stop every child, then the supervisor itself, without restarting anything.
    Shutdown(ractor::RpcReplyPort<()>),
}

#[derive(Debug)]
pub struct Supervisor;

#[derive(Debug)]
pub struct SupervisorState {
    core: Arc<Core>,
    children: Children,
    roles: HashMap<ActorId, Child>,
    restarts: VecDeque<Instant>,
    shutting_down: bool,
}

impl SupervisorState {
    /// The children's slots, for the edge.
    pub fn children(&self) -> &Children {
        &self.children
    }
}

impl Supervisor {
    async fn spawn_child(
        child: Child,
        core: &Arc<Core>,
        peers: &Peers,
        supervisor: ActorCell,
    ) -> Result<ActorCell, ActorProcessingErr> {
        let cell = match child {
            Child::Ingress => {
                let (actor, _) =
                    Actor::spawn_linked(None, Ingress, Arc::clone(core), supervisor).await?;
                actor.get_cell()
            }
            Child::Cache => {
                let settings = core.settings.cache;
                let (actor, _) =
                    Actor::spawn_linked(None, CacheCoordinator, settings, supervisor).await?;
                actor.get_cell()
            }
            Child::Perf => {
                let args = PerfArgs {
                    core: Arc::clone(core),
                    budgets: core.settings.budgets.clone(),
                };
                let (actor, _) = Actor::spawn_linked(None, PerfMonitor, args, supervisor).await?;
                actor.get_cell()
            }
            Child::SuppressionRegistry => {
                let (actor, _) =
                    Actor::spawn_linked(None, SuppressionRegistry, Arc::clone(core), supervisor)
                        .await?;
                actor.get_cell()
            }
            Child::DlqKeeper => {
                let (actor, _) =
                    Actor::spawn_linked(None, DlqKeeper, Arc::clone(core), supervisor).await?;
                actor.get_cell()
            }
            Child::Dispatcher => {
                let dlq = peers
                    .dlq
                    .clone()
                    .ok_or("the DLQ keeper must start before the dispatcher")?;
                let args = DispatcherArgs {
                    core: Arc::clone(core),
                    dlq,
                };
                let (actor, _) = Actor::spawn_linked(None, Dispatcher, args, supervisor).await?;
                actor.get_cell()
            }
        };
        Ok(cell)
    }

    /// Records a restart; false when the budget is spent.
    fn within_budget(restarts: &mut VecDeque<Instant>, now: Instant) -> bool {
        while restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) > RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        restarts.push_back(now);
        restarts.len() <= MAX_RESTARTS
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (Arc<Core>, tokio::sync::oneshot::Sender<Children>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (core, ready): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut roles = HashMap::new();
        let mut peers = Peers::default();
        let parent = myself.get_cell();
        // Order matters: each child's peers start before it. The cache and the perf monitor
        // come first: every other child may use them, through `Core`.
        let cell = Self::spawn_child(Child::Cache, &core, &peers, parent.clone()).await?;
        roles.insert(cell.get_id(), Child::Cache);
        let cache = Slot::new(ActorRef::<CacheMsg>::from(cell));
        let _ = core.cache.set(cache.clone());
        let cell = Self::spawn_child(Child::Perf, &core, &peers, parent.clone()).await?;
        roles.insert(cell.get_id(), Child::Perf);
        let perf = Slot::new(ActorRef::<PerfMsg>::from(cell));
        let _ = core.perf.set(perf.clone());

        let cell = Self::spawn_child(Child::Ingress, &core, &peers, parent.clone()).await?;
        roles.insert(cell.get_id(), Child::Ingress);
        let ingress = Slot::new(ActorRef::<IngressMsg>::from(cell));

        let cell = Self::spawn_child(Child::DlqKeeper, &core, &peers, parent.clone()).await?;
        roles.insert(cell.get_id(), Child::DlqKeeper);
        let dlq = Slot::new(ActorRef::<DlqMsg>::from(cell));
        peers.dlq = Some(dlq.clone());

        let cell =
            Self::spawn_child(Child::SuppressionRegistry, &core, &peers, parent.clone()).await?;
        roles.insert(cell.get_id(), Child::SuppressionRegistry);

        let cell = Self::spawn_child(Child::Dispatcher, &core, &peers, parent).await?;
        roles.insert(cell.get_id(), Child::Dispatcher);
        let dispatcher = Slot::new(ActorRef::<DispatcherMsg>::from(cell));
        let children = Children {
            ingress,
            dlq,
            dispatcher,
            cache,
            perf,
        };
        let _ = ready.send(children.clone());
        Ok(SupervisorState {
            core,
            children,
            roles,
            restarts: VecDeque::new(),
            shutting_down: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                myself
                    .stop_children_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10)))
                    .await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(child) = state.roles.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.shutting_down {
            return Ok(());
        }
        if !Self::within_budget(&mut state.restarts, Instant::now()) {
            tracing::error!(?child, %why, "restart budget exhausted; stopping herald");
            myself.stop(Some(format!("{child:?} failed too often: {why}")));
            return Ok(());
        }
        tracing::warn!(?child, %why, "child ended; restarting it");
        let peers = Peers {
            dlq: Some(state.children.dlq.clone()),
        };
        let cell = Self::spawn_child(child, &state.core, &peers, myself.get_cell()).await?;
        state.roles.insert(cell.get_id(), child);
        match child {
            Child::Ingress => state.children.ingress.replace(cell.into()),
            Child::Dispatcher => state.children.dispatcher.replace(cell.into()),
            Child::DlqKeeper => state.children.dlq.replace(cell.into()),
            // Nobody sends to the registry; its timer lives inside it.
            Child::SuppressionRegistry => {}
            // The same slots are in `Core`: one swap serves both.
            Child::Cache => state.children.cache.replace(cell.into()),
            Child::Perf => state.children.perf.replace(cell.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_budget_is_per_window() {
        let t0 = Instant::now();
        let mut restarts = VecDeque::new();
        for i in 0..MAX_RESTARTS {
            assert!(Supervisor::within_budget(
                &mut restarts,
                t0 + Duration::from_secs(i as u64)
            ));
        }
        assert!(!Supervisor::within_budget(
            &mut restarts,
            t0 + Duration::from_secs(10)
        ));
        // Once the old restarts leave the window, there is budget again.
        let later = t0 + RESTART_WINDOW + Duration::from_secs(30);
        assert!(Supervisor::within_budget(&mut restarts, later));
    }
}
