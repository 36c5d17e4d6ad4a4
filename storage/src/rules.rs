//! The delivery state machine and what an attempt may change in a destination: pure functions
//! on the records, so that both backends ([`crate::embedded`], [`crate::postgres`]) apply the
//! same rules and only the table access differs.
//!
//! Invariants every rule keeps (and every backend indexes by, see [`Queues`]):
//! - a delivery is *queued* (redb's `deliveries_due`, PostgreSQL's `due_ms`) exactly while its
//!   status is live (`pending`, `retrying`), at its `next_attempt_at_ms`;
//! - it is *in the DLQ* (redb's `dead_letters`, PostgreSQL's `dead_ms`) exactly while it is
//!   `dead` with a `dead_at_ms`: discarding clears `dead_at_ms` and keeps `dead`, so the
//!   message's history still says how the delivery ended.
//!
//! A rule that does not apply (an outcome for a delivery no longer live, a DLQ retry of one not
//! in the DLQ) says so and leaves the record as it was: the caller then writes nothing.

use crate::deliveries::Outcome;
use crate::records::{Attempt, DeliveryRecord, DeliveryStatus, DestinationRecord};

/// Where a delivery is indexed: when it is due while queued, when it died while in the DLQ.
/// A backend moves a delivery's index entries (or columns) from the `Queues` before a rule to
/// the `Queues` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queues {
    pub due_ms: Option<u64>,
    pub dead_ms: Option<u64>,
}

/// What recording an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The delivery is no longer live (delivered, dead, suppressed, its destination deleted
    /// meanwhile): the outcome is dropped.
    NotLive,
    /// Taken, but nothing changed (a decision without an attempt, made before a resend).
    Unchanged,
    /// Taken, and the record changed.
    Changed,
}

impl Recorded {
    /// Whether the outcome was taken: what [`crate::Store::record_attempt`] answers.
    pub(crate) fn taken(self) -> bool {
        self != Self::NotLive
    }
}

/// Why [`DeliveryRecord::kill`] sends the live deliveries of a deleted destination to the DLQ.
pub(crate) const DESTINATION_DELETED: &str = "destination deleted";

impl DeliveryRecord {
    /// Its positions in the queue and in the DLQ (see the module docs).
    pub(crate) fn queues(&self) -> Queues {
        Queues {
            due_ms: self.next_attempt_at_ms.filter(|_| self.status.is_live()),
            dead_ms: self
                .dead_at_ms
                .filter(|_| self.status == DeliveryStatus::Dead),
        }
    }

    /// Applies an attempt's outcome (`attempt` is `None` for decisions taken without sending).
    ///
    /// An attempt (or decision) that began by the time of a resend was asked for before it: it
    /// goes in the history, and the resend's fresh round stays queued, so the receiver still
    /// gets the delivery the resend promised.
    pub(crate) fn record_outcome(
        &mut self,
        attempt: Option<&Attempt>,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Recorded {
        if !self.status.is_live() {
            return Recorded::NotLive;
        }
        let started = attempt.map_or(now_ms, |a| a.at_ms);
        if self.resent_at_ms.is_some_and(|resent| started <= resent) {
            return match attempt {
                Some(attempt) => {
                    self.attempts.push(attempt.clone());
                    Recorded::Changed
                }
                None => Recorded::Unchanged,
            };
        }
        if let Some(attempt) = attempt {
            self.attempts.push(attempt.clone());
            // A wait (410, refused locally) is not the receiver's failure: the round's
            // `max_attempts` does not count it.
            if !matches!(outcome, Outcome::Wait { .. }) {
                self.round_attempts = self.round_attempts.saturating_add(1);
            }
        }
        let (status, next) = match outcome {
            Outcome::Succeeded => (DeliveryStatus::Succeeded, None),
            Outcome::Retry { at_ms } => (DeliveryStatus::Retrying, Some(*at_ms)),
            Outcome::Wait { until_ms } => (self.status, Some(*until_ms)),
            Outcome::Dead => (DeliveryStatus::Dead, None),
            Outcome::Suppressed { reason } => {
                self.reason = Some(reason.clone());
                (DeliveryStatus::Suppressed, None)
            }
        };
        self.status = status;
        self.next_attempt_at_ms = next;
        if status == DeliveryStatus::Dead {
            self.dead_at_ms = Some(now_ms);
        }
        Recorded::Changed
    }

    /// A DLQ retry: back in the queue, due at `now_ms`, with a fresh round of attempts (the
    /// history stays). False, and unchanged, unless it is in the DLQ (a discarded delivery is
    /// not). The caller checks that its destination still exists: nothing would read the
    /// queue of a deleted one.
    pub(crate) fn requeue(&mut self, now_ms: u64) -> bool {
        if self.queues().dead_ms.is_none() {
            return false;
        }
        self.dead_at_ms = None;
        self.status = DeliveryStatus::Pending;
        self.round_attempts = 0;
        self.reason = None;
        self.next_attempt_at_ms = Some(now_ms);
        true
    }

    /// A resend: due at `now_ms` with a fresh round, whatever its status (succeeded, dead —
    /// it leaves the DLQ —, suppressed — the opt-out check runs again — or still queued).
    /// `resent_at_ms` marks the attempts already under way as older (see
    /// [`Self::record_outcome`]).
    pub(crate) fn resend(&mut self, now_ms: u64) {
        self.dead_at_ms = None;
        self.status = DeliveryStatus::Pending;
        self.round_attempts = 0;
        self.reason = None;
        self.next_attempt_at_ms = Some(now_ms);
        self.resent_at_ms = Some(now_ms);
    }

    /// Out of the DLQ for good: it stays `dead` in the message's history. False, and
    /// unchanged, unless it was in the DLQ.
    pub(crate) fn discard(&mut self) -> bool {
        if self.queues().dead_ms.is_none() {
            return false;
        }
        self.dead_at_ms = None;
        true
    }

    /// To the DLQ at `now_ms` with `reason`, if it is live (its destination is being
    /// deleted). False, and unchanged, if it is not.
    pub(crate) fn kill(&mut self, now_ms: u64, reason: &str) -> bool {
        if !self.status.is_live() {
            return false;
        }
        self.status = DeliveryStatus::Dead;
        self.next_attempt_at_ms = None;
        self.dead_at_ms = Some(now_ms);
        self.reason = Some(reason.to_owned());
        true
    }
}

impl DestinationRecord {
    /// Takes from `attempt` (the dispatcher's copy of the record, with an attempt's outcome
    /// applied) what an attempt may change: the circuit, and the disabling after a 410. The
    /// rest stays as stored. The copy may be stale: the API may have changed the destination
    /// (a new secret, a new URL) while the attempt was in flight, and writing the copy whole
    /// would undo that change. (A destination deleted meanwhile stays deleted: the backends
    /// apply this only to a stored record.)
    pub(crate) fn take_attempt_state(&mut self, attempt: &DestinationRecord) {
        self.circuit = attempt.circuit;
        if self.enabled && !attempt.enabled {
            self.enabled = false;
            self.disabled_reason.clone_from(&attempt.disabled_reason);
            self.updated_at_ms = attempt.updated_at_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CircuitRecord;

    fn attempt(at_ms: u64) -> Attempt {
        Attempt {
            at_ms,
            status_code: Some(500),
            error: None,
            duration_ms: 1,
            response_body: None,
        }
    }

    fn queues(due_ms: Option<u64>, dead_ms: Option<u64>) -> Queues {
        Queues { due_ms, dead_ms }
    }

    #[test]
    fn outcomes_move_a_live_delivery_and_only_a_live_one() {
        let mut d = DeliveryRecord::pending(10);
        assert_eq!(d.queues(), queues(Some(10), None));
        let retry = Outcome::Retry { at_ms: 50 };
        assert_eq!(
            d.record_outcome(Some(&attempt(20)), &retry, 20),
            Recorded::Changed
        );
        assert_eq!((d.status, d.round_attempts), (DeliveryStatus::Retrying, 1));
        assert_eq!(d.queues(), queues(Some(50), None));

        let wait = Outcome::Wait { until_ms: 70 };
        d.record_outcome(Some(&attempt(60)), &wait, 60);
        assert_eq!(
            (d.status, d.round_attempts, d.attempts.len()),
            (DeliveryStatus::Retrying, 1, 2),
            "a wait is in the history but not counted"
        );
        assert_eq!(d.queues(), queues(Some(70), None));

        d.record_outcome(Some(&attempt(80)), &Outcome::Dead, 81);
        assert_eq!(d.queues(), queues(None, Some(81)));
        let before = d.clone();
        assert_eq!(
            d.record_outcome(Some(&attempt(90)), &Outcome::Succeeded, 90),
            Recorded::NotLive
        );
        assert_eq!(d, before, "a dead delivery takes no outcome");
        assert!(!Recorded::NotLive.taken());
    }

    #[test]
    fn an_attempt_begun_before_a_resend_only_joins_the_history() {
        let mut d = DeliveryRecord::pending(10);
        d.record_outcome(Some(&attempt(20)), &Outcome::Dead, 21);
        d.resend(30);
        assert_eq!(d.queues(), queues(Some(30), None));
        assert_eq!((d.round_attempts, d.resent_at_ms), (0, Some(30)));
        // Began at 30 (by the resend): the fresh round stays queued.
        assert_eq!(
            d.record_outcome(Some(&attempt(30)), &Outcome::Dead, 35),
            Recorded::Changed
        );
        assert_eq!(d.queues(), queues(Some(30), None));
        assert_eq!((d.attempts.len(), d.round_attempts), (2, 0));
        // A decision without an attempt, taken by then: nothing to keep.
        let suppressed = Outcome::Suppressed {
            reason: "opted out".into(),
        };
        assert_eq!(d.record_outcome(None, &suppressed, 30), Recorded::Unchanged);
        assert!(Recorded::Unchanged.taken());
        // Begun after: it counts.
        d.record_outcome(None, &suppressed, 31);
        assert_eq!(d.status, DeliveryStatus::Suppressed);
        assert_eq!(d.reason.as_deref(), Some("opted out"));
        assert_eq!(d.queues(), queues(None, None));
    }

    #[test]
    fn the_dlq_rules() {
        let mut d = DeliveryRecord::pending(10);
        assert!(!d.requeue(20) && !d.discard(), "not in the DLQ");
        assert!(d.kill(20, DESTINATION_DELETED));
        assert_eq!(d.queues(), queues(None, Some(20)));
        assert!(!d.kill(21, DESTINATION_DELETED), "only a live one dies");
        assert!(d.requeue(30));
        assert_eq!(d.queues(), queues(Some(30), None));
        assert_eq!(
            (d.status, d.reason.as_deref()),
            (DeliveryStatus::Pending, None)
        );
        d.record_outcome(None, &Outcome::Dead, 40);
        assert!(d.discard());
        assert_eq!(
            (d.status, d.queues()),
            (DeliveryStatus::Dead, queues(None, None))
        );
        assert!(
            !d.discard() && !d.requeue(50),
            "discarded: out of the DLQ for good"
        );
    }

    #[test]
    fn an_attempt_takes_only_the_circuit_and_the_disabling() {
        let stored = DestinationRecord {
            url: "https://new.example/".into(),
            sources: vec!["*".into()],
            event_types: Vec::new(),
            channel: "webhook".into(),
            secret: "whsec_new".into(),
            previous_secrets: Vec::new(),
            config_secret_sha256: None,
            rate_limit_per_sec: None,
            enabled: true,
            disabled_reason: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            from_config: false,
            circuit: CircuitRecord::default(),
            policy: crate::DestinationPolicy::default(),
        };
        let mut copy = stored.clone();
        copy.url = "https://old.example/".into();
        copy.secret = "whsec_old".into();
        copy.circuit.consecutive_failures = 3;
        copy.enabled = false;
        copy.disabled_reason = Some("410 Gone".into());
        copy.updated_at_ms = 9;
        let mut merged = stored.clone();
        merged.take_attempt_state(&copy);
        assert_eq!(merged.secret, "whsec_new");
        assert_eq!(merged.url, "https://new.example/");
        assert_eq!(merged.circuit.consecutive_failures, 3);
        assert!(!merged.enabled);
        assert_eq!(
            (merged.disabled_reason.as_deref(), merged.updated_at_ms),
            (Some("410 Gone"), 9)
        );
        // An already disabled record keeps its reason; a copy still enabled re-enables
        // nothing (only the API does).
        let mut disabled = merged.clone();
        copy.disabled_reason = Some("other".into());
        disabled.take_attempt_state(&copy);
        assert_eq!(disabled.disabled_reason.as_deref(), Some("410 Gone"));
        disabled.take_attempt_state(&stored);
        assert!(!disabled.enabled);
    }
}
