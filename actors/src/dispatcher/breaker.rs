//! The circuit breaker of one destination. Pure state transitions.
//!
//! `Closed` counts consecutive failed attempts; at `failure_threshold` it opens. `Open` admits
//! nothing until `open_for` has passed, then becomes `HalfOpen`, which admits exactly one
//! probe: its success closes the circuit, its failure opens it again for another `open_for`.
//! Deliveries held back by an open circuit wait without spending attempts. The state is
//! persisted by the dispatcher on every transition, so an open circuit survives a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Circuit {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        opened_at_ms: u64,
        consecutive_failures: u32,
    },
    /// The open period is over; one probe is allowed (`probing` once it is in flight).
    HalfOpen {
        opened_at_ms: u64,
        consecutive_failures: u32,
        probing: bool,
    },
}

impl Default for Circuit {
    fn default() -> Self {
        Self::Closed {
            consecutive_failures: 0,
        }
    }
}

/// The breaker's settings, from `[circuit_breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

/// What a transition means to the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Opened,
    /// Closed again after being open: time to re-queue the dead (auto-recover).
    Closed,
}

impl Circuit {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        match *self {
            Self::Closed {
                consecutive_failures,
            }
            | Self::Open {
                consecutive_failures,
                ..
            }
            | Self::HalfOpen {
                consecutive_failures,
                ..
            } => consecutive_failures,
        }
    }

    pub fn opened_at_ms(&self) -> Option<u64> {
        match *self {
            Self::Closed { .. } => None,
            Self::Open { opened_at_ms, .. } | Self::HalfOpen { opened_at_ms, .. } => {
                Some(opened_at_ms)
            }
        }
    }

    /// Whether an attempt may start at `now_ms`; moves `Open` to `HalfOpen` when its time is up
    /// and marks the half-open probe as taken.
    pub fn admit(&mut self, policy: &BreakerPolicy, now_ms: u64) -> bool {
        match *self {
            Self::Closed { .. } => true,
            Self::Open {
                opened_at_ms,
                consecutive_failures,
            } => {
                let open_ms = u64::try_from(policy.open_for.as_millis()).unwrap_or(u64::MAX);
                if now_ms.saturating_sub(opened_at_ms) < open_ms {
                    return false;
                }
                *self = Self::HalfOpen {
                    opened_at_ms,
                    consecutive_failures,
                    probing: true,
                };
                true
            }
            Self::HalfOpen { probing: true, .. } => false,
            Self::HalfOpen {
                opened_at_ms,
                consecutive_failures,
                probing: false,
            } => {
                *self = Self::HalfOpen {
                    opened_at_ms,
                    consecutive_failures,
                    probing: true,
                };
                true
            }
        }
    }

    /// When an open circuit will next admit a probe; `None` when it admits now or never waits.
    pub fn reopens_at_ms(&self, policy: &BreakerPolicy) -> Option<u64> {
        match *self {
            Self::Open { opened_at_ms, .. } => {
                let open_ms = u64::try_from(policy.open_for.as_millis()).unwrap_or(u64::MAX);
                Some(opened_at_ms.saturating_add(open_ms))
            }
            _ => None,
        }
    }

    pub fn on_success(&mut self) -> Transition {
        let was_open = !matches!(self, Self::Closed { .. });
        *self = Self::Closed {
            consecutive_failures: 0,
        };
        if was_open {
            Transition::Closed
        } else {
            Transition::None
        }
    }

    pub fn on_failure(&mut self, policy: &BreakerPolicy, now_ms: u64) -> Transition {
        let failures = self.consecutive_failures().saturating_add(1);
        match *self {
            Self::Closed { .. } if failures >= policy.failure_threshold.max(1) => {
                *self = Self::Open {
                    opened_at_ms: now_ms,
                    consecutive_failures: failures,
                };
                Transition::Opened
            }
            Self::Closed { .. } => {
                *self = Self::Closed {
                    consecutive_failures: failures,
                };
                Transition::None
            }
            // A failed probe (or a straggler attempt started before the circuit opened)
            // re-opens it for a full period.
            Self::HalfOpen { .. } | Self::Open { .. } => {
                let reopened = matches!(self, Self::HalfOpen { .. });
                *self = Self::Open {
                    opened_at_ms: now_ms,
                    consecutive_failures: failures,
                };
                if reopened {
                    Transition::Opened
                } else {
                    Transition::None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_for: Duration::from_secs(30),
    };

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut c = Circuit::default();
        assert_eq!(c.on_failure(&POLICY, 1), Transition::None);
        assert_eq!(c.on_failure(&POLICY, 2), Transition::None);
        assert!(c.admit(&POLICY, 2));
        assert_eq!(c.on_failure(&POLICY, 3), Transition::Opened);
        assert_eq!(c.name(), "open");
        assert_eq!(c.opened_at_ms(), Some(3));
        assert!(!c.admit(&POLICY, 3 + 29_999), "stays open for open_for");
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut c = Circuit::default();
        c.on_failure(&POLICY, 1);
        c.on_failure(&POLICY, 2);
        assert_eq!(c.on_success(), Transition::None);
        c.on_failure(&POLICY, 3);
        c.on_failure(&POLICY, 4);
        assert_eq!(c.name(), "closed");
    }

    #[test]
    fn half_open_admits_one_probe_that_closes_or_reopens() {
        let mut c = Circuit::Open {
            opened_at_ms: 0,
            consecutive_failures: 3,
        };
        assert_eq!(c.reopens_at_ms(&POLICY), Some(30_000));
        assert!(c.admit(&POLICY, 30_000), "the probe");
        assert_eq!(c.name(), "half_open");
        assert!(!c.admit(&POLICY, 30_001), "only one probe at a time");
        assert_eq!(c.on_success(), Transition::Closed);
        assert!(c.admit(&POLICY, 30_002));

        let mut c = Circuit::Open {
            opened_at_ms: 0,
            consecutive_failures: 3,
        };
        assert!(c.admit(&POLICY, 40_000));
        assert_eq!(c.on_failure(&POLICY, 41_000), Transition::Opened);
        assert_eq!(c.opened_at_ms(), Some(41_000), "a fresh open period");
        assert!(!c.admit(&POLICY, 70_999));
        assert!(c.admit(&POLICY, 71_000));
    }

    #[test]
    fn serialises_with_a_state_tag() {
        let c = Circuit::Open {
            opened_at_ms: 7,
            consecutive_failures: 5,
        };
        let json = serde_json::to_value(c).unwrap_or_default();
        assert_eq!(json["state"], "open");
        assert_eq!(json["opened_at_ms"], 7);
    }
}
