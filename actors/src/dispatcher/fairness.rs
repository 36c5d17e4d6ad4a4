//! Fair shares of the in-flight budget between destinations. Pure functions.
//!
//! Attempts in flight are bounded globally ([`Budget::total`]) so that a backlog cannot open
//! thousands of connections at once. Shared first come, first served, that bound let a few slow
//! receivers hold every slot: a healthy destination's new message then waited for one of their
//! multi-second attempts to end. Two rules keep destinations isolated instead:
//!
//! - **A fair share.** The budget minus a reserve is divided evenly between the *busy*
//!   destinations (those with attempts in flight or a backlog waiting): none may hold more than
//!   its share (nor [`Budget::per_destination`]). As more destinations become busy the share
//!   shrinks, and those above it start nothing new until their attempts finish.
//! - **A reserve.** The last [`Budget::reserve`] slots are only for destinations that are nearly
//!   idle (fewer than [`Budget::reserve_each`] attempts in flight): a quiet destination always
//!   finds a slot at once, even while the slow ones still hold more than their new share.
//!
//! Which destination reads its queue first does not matter: each may read no more than its
//! allowance, so one long queue cannot take the scan over.

/// The in-flight budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Attempts in flight at once, over all destinations.
    pub total: usize,
    /// Slots of `total` kept for destinations with fewer than `reserve_each` in flight.
    pub reserve: usize,
    /// How many attempts in flight a destination may have and still draw on the reserve.
    pub reserve_each: usize,
    /// Attempts in flight at once to one destination, however idle the others are.
    pub per_destination: usize,
}

impl Budget {
    /// herald's budget: 256 in flight, 32 of them kept in reserve, 64 per destination at most.
    pub const DEFAULT: Self = Self {
        total: 256,
        reserve: 32,
        reserve_each: 4,
        per_destination: 64,
    };

    /// The share of the non-reserved budget of each of `busy` destinations (at least 1).
    pub fn share(&self, busy: usize) -> usize {
        let shared = self.total.saturating_sub(self.reserve);
        (shared / busy.max(1)).clamp(1, self.per_destination.max(1))
    }

    /// How many more attempts a destination may start now. `own` is its attempts in flight,
    /// `total_in_flight` everyone's, and `busy` the number of busy destinations, this one
    /// included (it asks because it may have work).
    pub fn allowance(&self, own: usize, busy: usize, total_in_flight: usize) -> usize {
        let shared = self.total.saturating_sub(self.reserve);
        let fair = self
            .share(busy)
            .saturating_sub(own)
            .min(shared.saturating_sub(total_in_flight));
        if own >= self.reserve_each {
            return fair;
        }
        // Nearly idle: the reserve is open to it, up to `reserve_each` in flight.
        let reserved = self
            .reserve_each
            .saturating_sub(own)
            .min(self.total.saturating_sub(total_in_flight));
        fair.max(reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget::DEFAULT;

    #[test]
    fn alone_a_destination_gets_its_cap() {
        assert_eq!(B.allowance(0, 1, 0), 64);
        assert_eq!(B.allowance(60, 1, 60), 4);
        assert_eq!(B.allowance(64, 1, 64), 0);
    }

    #[test]
    fn the_share_shrinks_as_more_destinations_are_busy() {
        assert_eq!(B.share(1), 64);
        assert_eq!(B.share(4), 56);
        assert_eq!(B.share(7), 32);
        assert_eq!(B.share(224), 1);
        assert_eq!(B.share(10_000), 1, "never zero");
        assert_eq!(B.share(0), 64, "no division by zero");
        // A destination above its new share starts nothing until it is back under it.
        assert_eq!(B.allowance(56, 7, 200), 0);
        assert_eq!(B.allowance(31, 7, 200), 1);
    }

    #[test]
    fn the_shared_part_is_never_exceeded_by_busy_destinations() {
        // Five slow destinations at their share of 44 each: 220 of 224.
        for own in [4, 30, 44] {
            assert_eq!(B.allowance(own, 5, 224), 0, "own {own}");
        }
        assert_eq!(B.allowance(40, 5, 220), 4);
        assert_eq!(
            B.allowance(40, 5, 222),
            2,
            "global room, not the share, binds"
        );
    }

    #[test]
    fn a_quiet_destination_always_finds_a_slot_in_the_reserve() {
        // Everything shared is held by slow destinations; a quiet one still gets up to 4.
        assert_eq!(B.allowance(0, 6, 224), 4);
        assert_eq!(B.allowance(3, 6, 250), 1);
        assert_eq!(B.allowance(4, 6, 230), 0, "no longer quiet: no reserve");
        assert_eq!(B.allowance(0, 6, 256), 0, "the total is a hard bound");
        assert_eq!(B.allowance(0, 6, 255), 1);
    }

    #[test]
    fn never_more_than_the_total_whatever_the_inputs() {
        for busy in [1, 2, 5, 50, 500] {
            for own in [0, 1, 3, 4, 10, 64, 100] {
                for total in [0, 10, 100, 200, 224, 240, 256, 300] {
                    let a = B.allowance(own, busy, total);
                    assert!(
                        total.saturating_add(a) <= B.total.max(total),
                        "busy {busy} own {own} total {total}: {a}"
                    );
                    assert!(own + a <= B.per_destination.max(own));
                }
            }
        }
    }
}
