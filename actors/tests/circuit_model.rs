//! A model-based property test of the circuit breaker (`dispatcher::breaker`) and of its
//! persistence across a restart (`circuit_to_record`, `circuit_from_record`): random
//! sequences of admissions, successes, failures, time passing and restarts, checked against a
//! model written from the breaker's documentation rather than from its code.
//!
//! The delivery state machine that the circuit's outcomes drive, and the storage of the
//! circuit's record with an attempt's outcome, are tested in the storage crate
//! (`storage/tests/model.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use herald_actors::dispatcher::breaker::{BreakerPolicy, Circuit, Transition};
use herald_actors::dispatcher::{circuit_from_record, circuit_to_record};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

#[derive(Debug, Clone)]
enum Op {
    /// Time passes.
    Wait(u64),
    /// The dispatcher asks whether an attempt may start.
    Admit,
    Success,
    Failure,
    /// herald stops and starts again: the circuit survives as its stored record; an attempt
    /// in flight (a probe) does not.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..150u64).prop_map(Op::Wait),
        3 => Just(Op::Admit),
        2 => Just(Op::Success),
        3 => Just(Op::Failure),
        1 => Just(Op::Restart),
    ]
}

/// The documented behaviour: `threshold` consecutive failures open the circuit; open, it admits
/// nothing for `open_for`; then it is half-open and admits one probe at a time, whose success
/// closes it and whose failure opens it for another full period. Any success closes it.
#[derive(Debug, Default)]
struct Model {
    failures: u32,
    opened_at: Option<u64>,
    /// Open, and its open period is over (a probe was admitted, or it was restored late).
    half_open: bool,
    probing: bool,
}

impl Model {
    fn admit(&mut self, now: u64, open_for: u64) -> bool {
        let Some(opened_at) = self.opened_at else {
            return true;
        };
        if !self.half_open && now < opened_at + open_for {
            return false;
        }
        self.half_open = true;
        if self.probing {
            return false;
        }
        self.probing = true;
        true
    }

    fn success(&mut self) -> Transition {
        let was_open = self.opened_at.is_some();
        *self = Self::default();
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    fn failure(&mut self, now: u64, threshold: u32) -> Transition {
        self.failures += 1;
        if self.opened_at.is_none() && self.failures < threshold.max(1) {
            return Transition::None;
        }
        // Opening, re-opening after a failed probe, or a straggler's failure while open (which
        // restarts the open period quietly).
        let transition = if self.opened_at.is_none() || self.half_open {
            Transition::Opened
        } else {
            Transition::None
        };
        self.opened_at = Some(now);
        self.half_open = false;
        self.probing = false;
        transition
    }

    fn restart(&mut self, now: u64, open_for: u64) {
        self.probing = false;
        self.half_open = self.opened_at.is_some_and(|at| now >= at + open_for);
    }

    fn name(&self) -> &'static str {
        match (self.opened_at, self.half_open) {
            (None, _) => "closed",
            (Some(_), false) => "open",
            (Some(_), true) => "half_open",
        }
    }
}

fn check(threshold: u32, open_for: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let policy = BreakerPolicy {
        failure_threshold: threshold,
        open_for: Duration::from_millis(open_for),
    };
    let mut circuit = Circuit::default();
    let mut model = Model::default();
    let mut now = 1_000;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Wait(ms) => now += ms,
            Op::Admit => prop_assert_eq!(
                circuit.admit(&policy, now),
                model.admit(now, open_for),
                "step {}",
                i
            ),
            Op::Success => prop_assert_eq!(circuit.on_success(), model.success(), "step {}", i),
            Op::Failure => prop_assert_eq!(
                circuit.on_failure(&policy, now),
                model.failure(now, threshold),
                "step {}",
                i
            ),
            Op::Restart => {
                // The record goes through storage as JSON.
                let json = serde_json::to_vec(&circuit_to_record(&circuit)).unwrap();
                circuit =
                    circuit_from_record(&serde_json::from_slice(&json).unwrap(), &policy, now);
                model.restart(now, open_for);
            }
        }
        prop_assert_eq!(circuit.name(), model.name(), "step {}: {:?}", i, circuit);
        prop_assert_eq!(circuit.consecutive_failures(), model.failures, "step {}", i);
        prop_assert_eq!(circuit.opened_at_ms(), model.opened_at, "step {}", i);
        let reopens_at = model
            .opened_at
            .filter(|_| !model.half_open)
            .map(|at| at + open_for);
        prop_assert_eq!(circuit.reopens_at_ms(&policy), reopens_at, "step {}", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Relative to the crate, where cargo runs its tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/circuit_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_breaker_follows_the_model(
        threshold in 0..5u32,
        open_for in 1..200u64,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        check(threshold, open_for, &ops)?;
    }
}
