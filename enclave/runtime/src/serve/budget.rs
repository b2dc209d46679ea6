//! The bound on request memory across concurrent requests: a [`Budget`] of bytes
//! (`max_buffered_bytes`) from which each request reserves what it is about to allocate for its
//! decoded tensors, and which gets it back when the request ends ([`Reservation`] is a guard).
//!
//! Reserving never waits: a request the budget cannot serve now is refused (503 with
//! `Retry-After: 1`), so a burst of large requests costs their clients a retry, not the server
//! its memory. Requests holding more than [`LARGE`] bytes may use the budget only up to
//! `capacity − reserve`: however many large requests arrive, `reserve` bytes stay for small
//! ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A request holding more than this is large: it may not take the reserve for small requests.
pub const LARGE: usize = 1 << 20;

/// Bytes of decoded request data that all requests together may hold.
#[derive(Debug)]
pub struct Budget {
    capacity: usize,
    /// Kept for requests of at most [`LARGE`] bytes.
    reserve: usize,
    in_use: AtomicUsize,
}

/// The budget could not give a request what it asked for (503, retry later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server holds {in_use} of its {limit} bytes of request data; {wanted} more are not available now"
)]
pub struct Exhausted {
    pub wanted: usize,
    pub in_use: usize,
    /// What this request could use at most: the capacity, or for a large request the capacity
    /// less the reserve.
    pub limit: usize,
}

impl Budget {
    /// A budget of `capacity` bytes with 1/8 of it reserved for small requests.
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::with_reserve(capacity, capacity / 8)
    }

    /// `reserve` is capped at `capacity`.
    pub fn with_reserve(capacity: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Budget { capacity, reserve: reserve.min(capacity), in_use: AtomicUsize::new(0) })
    }

    /// A request's guard, holding nothing yet.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: self.clone(), held: 0 }
    }

    /// Bytes reserved now, across all requests.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

/// What one request holds of a [`Budget`]; all of it goes back when this is dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    held: usize,
}

impl Reservation {
    /// Reserves `bytes` more, or refuses at once (nothing reserved) when the budget cannot
    /// give them.
    pub fn grow(&mut self, bytes: usize) -> Result<(), Exhausted> {
        let b = &*self.budget;
        let large = self.held.saturating_add(bytes) > LARGE;
        let limit = if large { b.capacity - b.reserve } else { b.capacity };
        b.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= limit)
            })
            .map_err(|in_use| Exhausted { wanted: bytes, in_use, limit })?;
        self.held += bytes;
        Ok(())
    }

    /// Gives back `bytes` (at most what is held) before the request ends.
    pub fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes this request holds.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn reserves_and_returns_on_drop() {
        let budget = Budget::new(8 * MIB);
        let mut r = budget.reservation();
        r.grow(1000).unwrap();
        r.grow(24).unwrap();
        assert_eq!((r.held(), budget.in_use()), (1024, 1024));
        r.shrink(24);
        assert_eq!((r.held(), budget.in_use()), (1000, 1000));
        r.shrink(5000);
        assert_eq!((r.held(), budget.in_use()), (0, 0), "shrinks at most what it holds");
        r.grow(3 * MIB).unwrap();
        let mut other = budget.reservation();
        other.grow(MIB).unwrap();
        drop(r);
        assert_eq!(budget.in_use(), MIB);
        drop(other);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_refusal_reserves_nothing() {
        let budget = Budget::with_reserve(4 * MIB, 0);
        let mut a = budget.reservation();
        a.grow(3 * MIB).unwrap();
        let mut b = budget.reservation();
        assert_eq!(b.grow(2 * MIB), Err(Exhausted { wanted: 2 * MIB, in_use: 3 * MIB, limit: 4 * MIB }));
        assert_eq!((b.held(), budget.in_use()), (0, 3 * MIB));
        b.grow(MIB).unwrap();
        assert!(b.grow(1).is_err(), "exactly full");
        drop(a);
        b.grow(MIB).unwrap();
    }

    /// Large requests cannot take the last eighth: a small request still gets through when
    /// they have taken everything they may.
    #[test]
    fn large_requests_leave_the_reserve_to_small_ones() {
        let budget = Budget::new(64 * MIB);
        let mut large = Vec::new();
        loop {
            let mut r = budget.reservation();
            if r.grow(4 * MIB).is_err() {
                break;
            }
            large.push(r);
        }
        assert_eq!(large.len(), 14, "56 MiB of 64 in 4 MiB requests");
        // A request growing past LARGE step by step is held to the same limit.
        let mut growing = budget.reservation();
        growing.grow(MIB).unwrap();
        let e = growing.grow(1).unwrap_err();
        assert_eq!(e.limit, 56 * MIB);
        // Small requests share the reserve, and no more.
        let mut small = Vec::new();
        loop {
            let mut r = budget.reservation();
            if r.grow(MIB).is_err() {
                break;
            }
            small.push(r);
        }
        assert_eq!(small.len(), 7, "the reserve (8 MiB) less what `growing` holds");
        assert_eq!(budget.in_use(), 64 * MIB);
        drop(large);
        drop(small);
        drop(growing);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_requests_never_pass_the_capacity() {
        let budget = Budget::with_reserve(10 * MIB, MIB);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (budget, peak) = (budget.clone(), peak.clone());
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        let mut r = budget.reservation();
                        for _ in 0..((n + i) % 7) {
                            if r.grow(300 * 1024).is_err() {
                                break;
                            }
                            peak.fetch_max(budget.in_use(), Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 10 * MIB);
        assert_eq!(budget.in_use(), 0);
    }
}
