//! Per-client request limiting: a token bucket per client (its bearer token when inference is
//! authenticated, else its address). Behind QEMU's user-mode network every client appears as
//! the gateway address, so there the address-keyed limit is one shared limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct Limiter {
    burst: f64,
    per_sec: f64,
    start: Instant,
    buckets: Mutex<HashMap<Vec<u8>, (f64, f64)>>,
}

/// Above this many tracked clients, full buckets are dropped.
const PRUNE_AT: usize = 10_000;

impl Limiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Limiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_second),
            start: Instant::now(),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub fn take(&self, client: &[u8]) -> bool {
        let now = self.start.elapsed().as_secs_f64();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT {
            let (burst, rate) = (self.burst, self.per_sec);
            map.retain(|_, (tokens, at)| *tokens + (now - *at) * rate < burst);
        }
        let (tokens, at) = map.entry(client.to_vec()).or_insert((self.burst, now));
        *tokens = (*tokens + (now - *at).max(0.0) * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
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
}
