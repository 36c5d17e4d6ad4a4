//! Blocking clients that keep sending bad signatures. Pure state, driven by the ingress actor.
//!
//! A client address is blocked for `block_for` once it has sent `threshold` invalid signatures
//! within `window`. Only `invalid_signature` counts: a stale timestamp or a missing header is a
//! misconfigured partner far more often than an attacker guessing keys. Memory is bounded: each
//! address keeps at most `threshold` timestamps, and [`Blocklist::prune`] forgets quiet ones.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Blocklist {
    threshold: usize,
    window: Duration,
    block_for: Duration,
    recent: HashMap<IpAddr, VecDeque<Instant>>,
    blocked: HashMap<IpAddr, Instant>,
}

impl Blocklist {
    pub fn new(threshold: u32, window: Duration, block_for: Duration) -> Self {
        Self {
            threshold: usize::try_from(threshold.max(1)).unwrap_or(usize::MAX),
            window,
            block_for,
            recent: HashMap::new(),
            blocked: HashMap::new(),
        }
    }

    /// Records an invalid signature from `client` at `now`. Returns the end of the block when
    /// this one crossed the threshold.
    pub fn record_invalid(&mut self, client: IpAddr, now: Instant) -> Option<Instant> {
        let times = self.recent.entry(client).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() < self.threshold {
            return None;
        }
        times.clear();
        let until = now + self.block_for;
        self.blocked.insert(client, until);
        Some(until)
    }

    /// Forgets blocks that ended and counters with nothing inside the window.
    pub fn prune(&mut self, now: Instant) {
        self.blocked.retain(|_, until| *until > now);
        let window = self.window;
        self.recent.retain(|_, times| {
            times
                .back()
                .is_some_and(|&t| now.saturating_duration_since(t) < window)
        });
    }

    /// The active blocks, for publishing to the edge.
    pub fn blocked(&self) -> &HashMap<IpAddr, Instant> {
        &self.blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn blocks_on_the_nth_failure_within_the_window() {
        let t0 = Instant::now();
        let mut list = Blocklist::new(3, Duration::from_secs(60), Duration::from_secs(600));
        assert_eq!(list.record_invalid(A, t0), None);
        assert_eq!(list.record_invalid(B, t0), None);
        assert_eq!(list.record_invalid(A, t0 + Duration::from_secs(1)), None);
        let until = list.record_invalid(A, t0 + Duration::from_secs(2));
        assert_eq!(until, Some(t0 + Duration::from_secs(602)));
        assert!(list.blocked().contains_key(&A));
        assert!(!list.blocked().contains_key(&B));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut list = Blocklist::new(3, Duration::from_secs(60), Duration::from_secs(600));
        for minute in 0..10 {
            let t = t0 + Duration::from_secs(61 * minute);
            assert_eq!(list.record_invalid(A, t), None);
            assert_eq!(list.record_invalid(A, t + Duration::from_secs(1)), None);
        }
    }

    #[test]
    fn prune_forgets_ended_blocks_and_quiet_clients() {
        let t0 = Instant::now();
        let mut list = Blocklist::new(1, Duration::from_secs(60), Duration::from_secs(10));
        assert!(list.record_invalid(A, t0).is_some());
        let mut two = Blocklist::new(2, Duration::from_secs(60), Duration::from_secs(10));
        two.record_invalid(B, t0);
        list.prune(t0 + Duration::from_secs(11));
        two.prune(t0 + Duration::from_secs(61));
        assert!(list.blocked().is_empty());
        assert!(two.recent.is_empty());
    }
}
