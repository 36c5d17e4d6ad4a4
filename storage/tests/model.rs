//! A model-based property test of the delivery state machine, on every backend.
//!
//! proptest generates sequences of what the dispatcher, the DLQ keeper and the API do to
//! deliveries (accept, an attempt that succeeds, fails — possibly one that began before a
//! resend —, meets a 410 or is suppressed, DLQ retry of one or in bulk, discard, resend,
//! deleting and re-creating or updating a destination, time passing, a restart) and applies
//! each to the real store, through its public API, and to a plain in-memory model of what the
//! storage docs promise. Each case runs on each backend of `common::backends()` (a fresh redb
//! file, a fresh PostgreSQL database), from the same code. After every step the two must agree on
//! every delivery (status, attempts, round, due time, DLQ entry, reason), on the DLQ listing
//! (paged), on every destination's queue and due work, on the destinations' records, and the
//! secondary indexes must verify. A restart closes the store and reopens it: nothing may
//! change.
//!
//! Circuits: the breaker's transitions are pure functions in the actors crate
//! (`dispatcher::breaker`), tested there. Here the model plays the dispatcher's part only as
//! far as storage is concerned: an attempt carries the destination's new circuit (opened after
//! `THRESHOLD` consecutive failures, closed by a success) or its disabling after a 410, as a
//! snapshot of the dispatcher's copy of the record, which goes stale when the API changes the
//! destination. Storage must take the circuit and the disabling from it, and nothing else: a
//! snapshot must neither resurrect a deleted destination nor undo an API change.
//!
//! Failing cases are saved under `proptest-regressions/` and replayed first on every run; the
//! files belong in git.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use herald_storage::{
    Accepted, Attempt, AttemptUpdate, CircuitRecord, DeadFilter, DedupeKey, DeliveryKey,
    DeliveryRecord, DeliveryStatus, DestinationRecord, MessageFilter, MessageId, MessageRecord,
    NewMessage, Options, Outcome, Store,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use tokio::sync::oneshot;

const DESTINATIONS: [&str; 3] = ["d0", "d1", "d2"];
/// The dispatcher's `max_attempts`: a failed attempt that is the round's last kills the
/// delivery.
const MAX_ATTEMPTS: u32 = 3;
/// Consecutive failures that open a circuit.
const THRESHOLD: u32 = 2;

// ---- operations ----------------------------------------------------------------------------

/// One thing done to the store. `pick`s choose a delivery: even ones among those the operation
/// is meant for (live ones for attempts, dead ones for the DLQ), odd ones among all, to cover
/// the refusals too.
#[derive(Debug, Clone)]
enum Op {
    /// A message fanned out to the existing destinations among `mask`'s bits.
    Accept {
        mask: u8,
    },
    /// The partner sends message `n % messages` again: a duplicate.
    Resubmit(usize),
    Succeed(usize),
    /// Retried after `delay` ms, or dead when it was the round's last attempt. The attempt
    /// began `ago` ms before it failed: one that began by the time of a resend only joins the
    /// history.
    Fail {
        pick: usize,
        delay: u64,
        ago: u64,
    },
    /// A 410: the destination is disabled and the delivery waits `delay` ms, attempt uncounted.
    Gone {
        pick: usize,
        delay: u64,
    },
    Suppress(usize),
    DlqRetry(usize),
    /// Retries every DLQ entry, or those of one destination.
    BulkRetry(Option<usize>),
    Discard(usize),
    /// Resends message `n % messages`, to all its destinations or to one.
    Resend {
        n: usize,
        destination: Option<usize>,
    },
    DeleteDestination(usize),
    /// Creates the destination, or changes it through the API (new URL and secret, re-enabled).
    PutDestination(usize),
    Tick(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8).prop_map(|mask| Op::Accept { mask }),
        1 => (0..16usize).prop_map(Op::Resubmit),
        3 => (0..64usize).prop_map(Op::Succeed),
        5 => (0..64usize, 0..4u64, 0..3u64)
            .prop_map(|(pick, delay, ago)| Op::Fail { pick, delay, ago }),
        1 => (0..64usize, 0..4u64).prop_map(|(pick, delay)| Op::Gone { pick, delay }),
        1 => (0..64usize).prop_map(Op::Suppress),
        2 => (0..64usize).prop_map(Op::DlqRetry),
        1 => proptest::option::of(0..DESTINATIONS.len()).prop_map(Op::BulkRetry),
        1 => (0..64usize).prop_map(Op::Discard),
        1 => (0..16usize, proptest::option::of(0..DESTINATIONS.len()))
            .prop_map(|(n, destination)| Op::Resend { n, destination }),
        1 => (0..DESTINATIONS.len()).prop_map(Op::DeleteDestination),
        1 => (0..DESTINATIONS.len()).prop_map(Op::PutDestination),
        1 => (1..8u64).prop_map(Op::Tick),
        1 => Just(Op::Restart),
    ]
}

// ---- the model -----------------------------------------------------------------------------

/// What the model knows of a delivery; compared with the stored [`DeliveryRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    status: DeliveryStatus,
    attempts: usize,
    round_attempts: u32,
    next_attempt_at_ms: Option<u64>,
    dead_at_ms: Option<u64>,
    reason: Option<String>,
    resent_at_ms: Option<u64>,
}

impl From<&DeliveryRecord> for Delivery {
    fn from(r: &DeliveryRecord) -> Self {
        Self {
            status: r.status,
            attempts: r.attempts.len(),
            round_attempts: r.round_attempts,
            next_attempt_at_ms: r.next_attempt_at_ms,
            dead_at_ms: r.dead_at_ms,
            reason: r.reason.clone(),
            resent_at_ms: r.resent_at_ms,
        }
    }
}

#[derive(Debug, Clone)]
struct Sent {
    message: NewMessage,
    /// Index of the message in `Model::messages`, for its body and external id.
    n: usize,
}

type Key = (MessageId, String);

#[derive(Debug, Default)]
struct Model {
    now: u64,
    messages: Vec<Sent>,
    deliveries: BTreeMap<Key, Delivery>,
    destinations: BTreeMap<String, DestinationRecord>,
    /// The dispatcher's copy of each destination, as when it was created: stale once the API
    /// changes it, and kept after a delete (an attempt may still be in flight).
    dispatcher_view: BTreeMap<String, DestinationRecord>,
    /// How many times each destination was created or changed, for distinct URLs and secrets.
    versions: BTreeMap<String, u32>,
}

impl Model {
    fn destination(&mut self, name: &str) -> DestinationRecord {
        let version = self.versions.entry(name.to_owned()).or_default();
        *version += 1;
        DestinationRecord {
            url: format!("https://{name}.example/v{version}"),
            sources: vec!["*".into()],
            event_types: Vec::new(),
            channel: "webhook".into(),
            secret: format!("whsec_{name}_{version}"),
            previous_secrets: Vec::new(),
            config_secret_sha256: None,
            rate_limit_per_sec: None,
            enabled: true,
            disabled_reason: None,
            created_at_ms: self.now,
            updated_at_ms: self.now,
            from_config: false,
            circuit: CircuitRecord::default(),
            policy: herald_storage::DestinationPolicy::default(),
        }
    }

    fn keys(&self, filter: impl Fn(&Delivery) -> bool) -> Vec<Key> {
        self.deliveries
            .iter()
            .filter(|(_, d)| filter(d))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Even picks choose among the deliveries `preferred` selects (if any), odd ones among all.
    fn pick(&self, pick: usize, preferred: impl Fn(&Delivery) -> bool) -> Option<Key> {
        let preferred = self.keys(preferred);
        let pool = if pick.is_multiple_of(2) && !preferred.is_empty() {
            preferred
        } else {
            self.keys(|_| true)
        };
        (!pool.is_empty()).then(|| pool[(pick / 2) % pool.len()].clone())
    }

    /// `deliveries::record`: applies an outcome to a live delivery; false if it is not. `began`
    /// is when the attempt began, `None` for a decision without one.
    fn record(&mut self, key: &Key, began: Option<u64>, outcome: &Outcome) -> bool {
        let now = self.now;
        let Some(d) = self.deliveries.get_mut(key) else {
            return false;
        };
        if !d.status.is_live() {
            return false;
        }
        let attempted = began.is_some();
        if d.resent_at_ms
            .is_some_and(|resent| began.unwrap_or(now) <= resent)
        {
            // Asked for before the resend: history only, the fresh round stays queued.
            d.attempts += usize::from(attempted);
            return true;
        }
        if attempted {
            d.attempts += 1;
            if !matches!(outcome, Outcome::Wait { .. }) {
                d.round_attempts += 1;
            }
        }
        match outcome {
            Outcome::Succeeded => {
                d.status = DeliveryStatus::Succeeded;
                d.next_attempt_at_ms = None;
            }
            Outcome::Retry { at_ms } => {
                d.status = DeliveryStatus::Retrying;
                d.next_attempt_at_ms = Some(*at_ms);
            }
            Outcome::Wait { until_ms } => d.next_attempt_at_ms = Some(*until_ms),
            Outcome::Dead => {
                d.status = DeliveryStatus::Dead;
                d.next_attempt_at_ms = None;
                d.dead_at_ms = Some(now);
            }
            Outcome::Suppressed { reason } => {
                d.status = DeliveryStatus::Suppressed;
                d.next_attempt_at_ms = None;
                d.reason = Some(reason.clone());
            }
        }
        true
    }

    /// What an attempt's destination snapshot does to the stored record: its circuit and its
    /// disabling are taken; the rest is the API's. A deleted destination stays deleted.
    fn merge(&mut self, name: &str, snapshot: &DestinationRecord) {
        if let Some(stored) = self.destinations.get_mut(name) {
            stored.circuit = snapshot.circuit;
            if !snapshot.enabled && stored.enabled {
                stored.enabled = false;
                stored.disabled_reason.clone_from(&snapshot.disabled_reason);
                stored.updated_at_ms = snapshot.updated_at_ms;
            }
        }
    }

    /// The circuit the dispatcher holds for `name`.
    fn circuit(&self, name: &str) -> CircuitRecord {
        self.destinations
            .get(name)
            .or_else(|| self.dispatcher_view.get(name))
            .map(|d| d.circuit)
            .unwrap_or_default()
    }

    /// The dispatcher's snapshot of `name` with `change` applied, as an attempt carries it.
    fn snapshot(
        &self,
        name: &str,
        change: impl FnOnce(&mut DestinationRecord),
    ) -> DestinationRecord {
        let mut snapshot = self.dispatcher_view[name].clone();
        snapshot.circuit = self.circuit(name);
        change(&mut snapshot);
        snapshot
    }

    /// In the DLQ: dead and not discarded.
    fn in_dlq(d: &Delivery) -> bool {
        d.status == DeliveryStatus::Dead && d.dead_at_ms.is_some()
    }

    /// `deliveries::requeue` of one key: only from the DLQ, and only while its destination
    /// exists.
    fn requeue(&mut self, key: &Key) -> bool {
        let now = self.now;
        if !self.destinations.contains_key(&key.1) {
            return false;
        }
        match self.deliveries.get_mut(key) {
            Some(d) if Self::in_dlq(d) => {
                d.status = DeliveryStatus::Pending;
                d.round_attempts = 0;
                d.reason = None;
                d.next_attempt_at_ms = Some(now);
                d.dead_at_ms = None;
                true
            }
            _ => false,
        }
    }

    /// `deliveries::resend`: every delivery of `id` (or the one to `destination`) whose
    /// destination exists is due now with a fresh round.
    fn resend(&mut self, id: MessageId, destination: Option<&str>) -> usize {
        let now = self.now;
        let mut resent = 0;
        for ((message, dest), d) in &mut self.deliveries {
            if *message != id
                || destination.is_some_and(|want| want != dest)
                || !self.destinations.contains_key(dest)
            {
                continue;
            }
            d.status = DeliveryStatus::Pending;
            d.round_attempts = 0;
            d.reason = None;
            d.next_attempt_at_ms = Some(now);
            d.dead_at_ms = None;
            d.resent_at_ms = Some(now);
            resent += 1;
        }
        resent
    }

    /// The DLQ, oldest first.
    fn dlq(&self, destination: Option<&str>) -> Vec<DeliveryKey> {
        let mut dead: Vec<(u64, MessageId, String)> = self
            .deliveries
            .iter()
            .filter(|((_, dest), d)| Self::in_dlq(d) && destination.is_none_or(|x| x == dest))
            .map(|((id, dest), d)| (d.dead_at_ms.unwrap(), *id, dest.clone()))
            .collect();
        dead.sort();
        dead.into_iter()
            .map(|(_, message, destination)| DeliveryKey {
                message,
                destination,
            })
            .collect()
    }

    /// The live deliveries of `destination`, in queue order, with their due times.
    fn queue(&self, destination: &str) -> Vec<(u64, MessageId)> {
        let mut queue: Vec<(u64, MessageId)> = self
            .deliveries
            .iter()
            .filter(|((_, dest), d)| dest == destination && d.status.is_live())
            .map(|((id, _), d)| (d.next_attempt_at_ms.unwrap(), *id))
            .collect();
        queue.sort();
        queue
    }
}

fn key((message, destination): &Key) -> DeliveryKey {
    DeliveryKey {
        message: *message,
        destination: destination.clone(),
    }
}

fn new_message(n: usize, now: u64, destinations: Vec<String>) -> NewMessage {
    let external = format!("ext-{n}");
    let body = Bytes::from(format!("{{\"n\":{n}}}"));
    NewMessage {
        id: MessageId::generate(now),
        record: MessageRecord {
            source: Some("model".into()),
            external_id: Some(external.clone()),
            event_type: Some("e".into()),
            content_type: Some("application/json".into()),
            recipient: None,
            channel: None,
            category: None,
            received_at_ms: now,
            body_len: body.len() as u64,
        },
        body,
        dedupe_key: Some(DedupeKey::new("model", &external)),
        destinations,
        suppress: None,
    }
}

// ---- driving the store ---------------------------------------------------------------------

async fn record_attempt(store: &Store, update: AttemptUpdate) -> bool {
    let (tx, rx) = oneshot::channel();
    store.record_attempt(
        update,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
    );
    rx.await.unwrap().unwrap()
}

fn attempt(at_ms: u64, status: u16) -> Attempt {
    Attempt {
        at_ms,
        status_code: Some(status),
        error: None,
        duration_ms: 1,
        response_body: None,
    }
}

/// Applies `op` to the store and the model; checks what the store answers.
#[allow(clippy::too_many_lines)] // one arm per operation reads best side by side
async fn step(store: &Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    model.now += 1;
    let now = model.now;
    match *op {
        Op::Accept { mask } => {
            let destinations: Vec<String> = DESTINATIONS
                .iter()
                .enumerate()
                .filter(|(i, d)| mask & (1 << i) != 0 && model.destinations.contains_key(**d))
                .map(|(_, d)| (*d).to_owned())
                .collect();
            let n = model.messages.len();
            let message = new_message(n, now, destinations);
            let accepted = store.insert_message_async(message.clone()).await.unwrap();
            prop_assert_eq!(accepted, Accepted::New(message.id));
            for destination in &message.destinations {
                model.deliveries.insert(
                    (message.id, destination.clone()),
                    Delivery::from(&DeliveryRecord::pending(now)),
                );
            }
            model.messages.push(Sent { message, n });
        }
        Op::Resubmit(n) => {
            if model.messages.is_empty() {
                return Ok(());
            }
            let first = &model.messages[n % model.messages.len()];
            let again = new_message(first.n, now, first.message.destinations.clone());
            let accepted = store.insert_message_async(again).await.unwrap();
            prop_assert_eq!(accepted, Accepted::Duplicate(first.message.id));
        }
        Op::Succeed(pick) => {
            let Some(k) = model.pick(pick, |d| d.status.is_live()) else {
                return Ok(());
            };
            let closed = CircuitRecord::default();
            let destination = (model.circuit(&k.1) != closed)
                .then(|| (k.1.clone(), model.snapshot(&k.1, |s| s.circuit = closed)));
            let update = AttemptUpdate {
                key: key(&k),
                attempt: Some(attempt(now, 200)),
                outcome: Outcome::Succeeded,
                destination: destination.clone(),
                now_ms: now,
            };
            let live = record_attempt(store, update).await;
            prop_assert_eq!(live, model.record(&k, Some(now), &Outcome::Succeeded));
            if let Some((name, snapshot)) = destination {
                model.merge(&name, &snapshot);
            }
        }
        Op::Fail { pick, delay, ago } => {
            let Some(k) = model.pick(pick, |d| d.status.is_live()) else {
                return Ok(());
            };
            // The dispatcher's `after_failure`: this attempt counts.
            let round = model.deliveries[&k].round_attempts + 1;
            let outcome = if round >= MAX_ATTEMPTS {
                Outcome::Dead
            } else {
                Outcome::Retry { at_ms: now + delay }
            };
            let mut circuit = model.circuit(&k.1);
            circuit.consecutive_failures += 1;
            if circuit.consecutive_failures >= THRESHOLD && !circuit.open {
                circuit.open = true;
                circuit.opened_at_ms = Some(now);
            }
            let snapshot = model.snapshot(&k.1, |s| s.circuit = circuit);
            let began = now - ago;
            let update = AttemptUpdate {
                key: key(&k),
                attempt: Some(attempt(began, 500)),
                outcome: outcome.clone(),
                destination: Some((k.1.clone(), snapshot.clone())),
                now_ms: now,
            };
            let live = record_attempt(store, update).await;
            prop_assert_eq!(live, model.record(&k, Some(began), &outcome));
            model.merge(&k.1, &snapshot);
        }
        Op::Gone { pick, delay } => {
            let Some(k) = model.pick(pick, |d| d.status.is_live()) else {
                return Ok(());
            };
            let outcome = Outcome::Wait {
                until_ms: now + delay,
            };
            let snapshot = model.snapshot(&k.1, |s| {
                s.enabled = false;
                s.disabled_reason = Some("410 Gone".into());
                s.updated_at_ms = now;
            });
            let update = AttemptUpdate {
                key: key(&k),
                attempt: Some(attempt(now, 410)),
                outcome: outcome.clone(),
                destination: Some((k.1.clone(), snapshot.clone())),
                now_ms: now,
            };
            let live = record_attempt(store, update).await;
            prop_assert_eq!(live, model.record(&k, Some(now), &outcome));
            model.merge(&k.1, &snapshot);
        }
        Op::Suppress(pick) => {
            let Some(k) = model.pick(pick, |d| d.status.is_live()) else {
                return Ok(());
            };
            let outcome = Outcome::Suppressed {
                reason: "opted out".into(),
            };
            let update = AttemptUpdate {
                key: key(&k),
                attempt: None,
                outcome: outcome.clone(),
                destination: None,
                now_ms: now,
            };
            let live = record_attempt(store, update).await;
            prop_assert_eq!(live, model.record(&k, None, &outcome));
        }
        Op::DlqRetry(pick) => {
            let Some(k) = model.pick(pick, Model::in_dlq) else {
                return Ok(());
            };
            let requeued = store.requeue(vec![key(&k)], now, |_| None).await.unwrap();
            prop_assert_eq!(requeued, usize::from(model.requeue(&k)), "requeue {:?}", k);
        }
        Op::BulkRetry(destination) => {
            let destination = destination.map(|d| DESTINATIONS[d]);
            let filter = DeadFilter {
                destination: destination.map(Into::into),
                since_ms: None,
            };
            let keys = store.dead_keys(filter).await.unwrap();
            prop_assert_eq!(&keys, &model.dlq(destination));
            let requeued = store.requeue(keys.clone(), now, |_| None).await.unwrap();
            let expected = keys
                .into_iter()
                .filter(|k| model.requeue(&(k.message, k.destination.clone())))
                .count();
            prop_assert_eq!(requeued, expected, "entries of deleted destinations stay");
        }
        Op::Discard(pick) => {
            let Some(k) = model.pick(pick, Model::in_dlq) else {
                return Ok(());
            };
            let discarded = store.discard(key(&k), audit_entry(now)).await.unwrap();
            let d = model.deliveries.get_mut(&k).unwrap();
            let expected = Model::in_dlq(d);
            if expected {
                d.dead_at_ms = None;
            }
            prop_assert_eq!(discarded, expected, "discard {:?}", k);
        }
        Op::Resend { n, destination } => {
            if model.messages.is_empty() {
                return Ok(());
            }
            let id = model.messages[n % model.messages.len()].message.id;
            let destination = destination.map(|d| DESTINATIONS[d]);
            let resent = store
                .resend(id, destination.map(Into::into), now, move |_| {
                    audit_entry(now)
                })
                .await
                .unwrap();
            prop_assert_eq!(resent, Some(model.resend(id, destination)));
        }
        Op::DeleteDestination(d) => {
            let name = DESTINATIONS[d];
            let deleted = store
                .delete_destination(name.into(), now, move |_| audit_entry(now))
                .await
                .unwrap()
                .is_some();
            prop_assert_eq!(deleted, model.destinations.remove(name).is_some());
            if deleted {
                for ((_, dest), delivery) in &mut model.deliveries {
                    if dest == name && delivery.status.is_live() {
                        delivery.status = DeliveryStatus::Dead;
                        delivery.next_attempt_at_ms = None;
                        delivery.dead_at_ms = Some(now);
                        delivery.reason = Some("destination deleted".into());
                    }
                }
            }
        }
        Op::PutDestination(d) => {
            let name = DESTINATIONS[d];
            let fresh = model.destination(name);
            if model.destinations.contains_key(name) {
                let (url, secret) = (fresh.url.clone(), fresh.secret.clone());
                let updated = store
                    .update_destination(
                        name.into(),
                        move |r| {
                            r.url.clone_from(&url);
                            r.secret.clone_from(&secret);
                            r.enabled = true;
                            r.disabled_reason = None;
                            r.updated_at_ms = now;
                        },
                        Some(move |_: &DestinationRecord, _: &DestinationRecord| audit_entry(now)),
                    )
                    .await
                    .unwrap();
                let stored = model.destinations.get_mut(name).unwrap();
                stored.url = fresh.url;
                stored.secret = fresh.secret;
                stored.enabled = true;
                stored.disabled_reason = None;
                stored.updated_at_ms = now;
                prop_assert_eq!(updated.as_ref(), Some(&*stored));
            } else {
                let created = store
                    .create_destination(name.into(), fresh.clone(), audit_entry(now))
                    .await
                    .unwrap();
                prop_assert!(created);
                model.destinations.insert(name.into(), fresh.clone());
                model.dispatcher_view.insert(name.into(), fresh);
            }
        }
        Op::Tick(ms) => model.now += ms,
        Op::Restart => {} // `run` closes and reopens the store
    }
    Ok(())
}

/// Everything the store shows equals the model. With `full` (after a restart, and at the end)
/// the messages' bodies too, and the secondary indexes verify against their tables; every step
/// checks the two indexes of deliveries directly, through the queues and the DLQ.
async fn compare(store: &Store, model: &Model, full: bool) -> Result<(), TestCaseError> {
    let page = store
        .list_messages(MessageFilter::default(), None, 1_000)
        .await
        .unwrap();
    prop_assert_eq!(page.items.len(), model.messages.len(), "messages");
    let stored: BTreeMap<Key, Delivery> = page
        .items
        .iter()
        .flat_map(|view| {
            view.deliveries
                .iter()
                .map(|(dest, record)| ((view.id, dest.clone()), Delivery::from(record)))
        })
        .collect();
    prop_assert_eq!(&stored, &model.deliveries, "deliveries");
    if full {
        for sent in &model.messages {
            let view = store.message(sent.message.id).await.unwrap().unwrap();
            prop_assert_eq!(view.body.as_deref(), Some(&sent.message.body[..]));
        }
    }

    // The DLQ, newest first, four to a page.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store
            .list_dead(DeadFilter::default(), after, 4)
            .await
            .unwrap();
        listed.extend(page.into_iter().map(|letter| letter.key));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut dlq = model.dlq(None);
    dlq.reverse();
    prop_assert_eq!(listed, dlq, "the DLQ");

    let next_due = store
        .next_due(DESTINATIONS.map(Into::into).to_vec())
        .await
        .unwrap();
    for (destination, (name, next_due)) in DESTINATIONS.into_iter().zip(next_due) {
        prop_assert_eq!(name, destination);
        let queue = model.queue(destination);
        prop_assert_eq!(
            next_due,
            queue.first().map(|(at, _)| *at),
            "next due of {}",
            destination
        );
        let due: Vec<(u64, MessageId, u32)> = store
            .due_deliveries(
                destination.into(),
                model.now,
                1_000,
                HashSet::new(),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.due_at_ms, d.key.message, d.round_attempts))
            .collect();
        let expected: Vec<(u64, MessageId, u32)> = queue
            .iter()
            .filter(|(at, _)| *at <= model.now)
            .map(|(at, id)| {
                let round = model.deliveries[&(*id, destination.to_owned())].round_attempts;
                (*at, *id, round)
            })
            .collect();
        prop_assert_eq!(due, expected, "due work of {}", destination);
        let queued = store.queued(destination.into()).await.unwrap();
        prop_assert_eq!(queued, queue.len() as u64, "queue of {}", destination);
    }

    let destinations: BTreeMap<String, DestinationRecord> =
        store.destinations().await.unwrap().into_iter().collect();
    prop_assert_eq!(&destinations, &model.destinations, "destinations");

    if full {
        for health in store.verify_indexes().await.unwrap() {
            prop_assert!(health.is_healthy(), "{:?}", health);
        }
    }
    Ok(())
}

/// Runs `ops` on every backend, each from a fresh store.
async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    for backend in common::backends().await {
        run_on(&backend, &ops)
            .await
            .map_err(|e| TestCaseError::fail(format!("on {}: {e}", backend.name)))?;
    }
    Ok(())
}

async fn run_on(backend: &common::Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut store = backend.open(Options::default()).await;
    let mut model = Model {
        now: 1_000,
        ..Model::default()
    };
    for name in DESTINATIONS {
        let record = model.destination(name);
        store
            .put_destination(name.into(), record.clone())
            .await
            .unwrap();
        model.destinations.insert(name.into(), record.clone());
        model.dispatcher_view.insert(name.into(), record);
    }
    for (i, op) in ops.iter().enumerate() {
        step(&store, &mut model, op).await?;
        if let Op::Restart = op {
            store.close().await;
            drop(store);
            store = backend.open(Options::default()).await;
        }
        compare(&store, &model, matches!(op, Op::Restart))
            .await
            .map_err(|e| TestCaseError::fail(format!("after step {i} ({op:?}): {e}")))?;
    }
    compare(&store, &model, true).await?;
    store.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Relative to the crate, where cargo runs its tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_follows_the_model(ops in proptest::collection::vec(op(), 1..32)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}

/// The audit entry the model's admin-like operations write beside their change.
fn audit_entry(now: u64) -> herald_storage::AuditEntry {
    herald_storage::AuditEntry {
        at_ms: now,
        actor: "model".into(),
        action: "model.op".into(),
        subject: "model".into(),
        before: None,
        after: None,
    }
}
