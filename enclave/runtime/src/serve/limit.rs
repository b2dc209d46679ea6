//! Per-client request limiting: a token bucket per client (its bearer token when inference is
//! authenticated, else its source, an IPv4 address or IPv6 /64; fresh attestation per
//! connection). Behind QEMU's user-mode network every client appears as the gateway address,
//! so there the source-keyed limit is one shared limit.
//!
//! The buckets are [`nacre_http::buckets::Buckets`]: at most [`TRACKED_CLIENTS`] clients are
//! tracked, and a new one in a full table evicts in constant time (a full bucket first, which
//! changes nothing). A client that rotates through more keys than that gains at most resets of
//! other buckets; see the module documentation there.

use std::sync::Mutex;

use nacre_http::buckets::{Buckets, Clock};

/// Clients tracked at most (each costs well under 200 bytes).
pub const TRACKED_CLIENTS: usize = 65_536;

#[derive(Debug)]
pub struct Limiter {
    clock: Clock,
    buckets: Mutex<Buckets<Vec<u8>>>,
}

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_capacity(per_second, burst, TRACKED_CLIENTS)
    }

    fn with_capacity(per_second: u32, burst: u32, capacity: usize) -> Self {
        Limiter {
            clock: Clock::new(),
            buckets: Mutex::new(Buckets::new(burst, f64::from(per_second), capacity)),
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub fn take(&self, client: &[u8]) -> bool {
        let now = self.clock.now();
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).take(client, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_per_client() {
        let l = Limiter::new(1, 3);
        assert!((0..3).all(|_| l.take(b"a")));
        assert!(!l.take(b"a"));
        assert!(l.take(b"b"), "another client has its own bucket");
    }

    #[test]
    fn clients_past_the_cap_do_not_grow_the_table() {
        let l = Limiter::with_capacity(0, 1, 100);
        for i in 0u32..1000 {
            assert!(l.take(&i.to_le_bytes()), "a new client starts with its burst");
        }
        assert_eq!(l.buckets.lock().unwrap_or_else(|p| p.into_inner()).len(), 100);
    }
}
