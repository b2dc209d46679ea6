//! Per-source denial limiting: each source has a bucket of `burst` denials that refills at
//! `per_minute`. A source with an empty bucket is refused before any verification or database
//! work, so a misbehaving guest or scanner cannot turn denials into load or audit-log growth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug)]
pub struct DenialLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: f64,
}

/// Above this many tracked sources, full buckets are dropped.
const PRUNE_AT: usize = 10_000;

impl DenialLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        DenialLimiter {
            burst: burst.max(1).into(),
            per_sec: f64::from(per_minute) / 60.0,
            buckets: Mutex::default(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: f64) {
        b.tokens = (b.tokens + (now - b.at).max(0.0) * self.per_sec).min(self.burst);
        b.at = now;
    }

    /// Whether `source` may be served at `now` (seconds, monotonic).
    pub fn allowed(&self, source: IpAddr, now: f64) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&source) {
            None => true,
            Some(b) => {
                self.refill(b, now);
                b.tokens >= 1.0
            }
        }
    }

    /// Charges one denial to `source`.
    pub fn record_denial(&self, source: IpAddr, now: f64) {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > PRUNE_AT {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| b.tokens + (now - b.at) * per_sec < burst);
        }
        let b = map.entry(source).or_insert(Bucket { tokens: self.burst, at: now });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_source() {
        let l = DenialLimiter::new(3, 60); // one per second
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.allowed(a, 0.0));
            l.record_denial(a, 0.0);
        }
        assert!(!l.allowed(a, 0.0));
        assert!(l.allowed(b, 0.0), "other sources are unaffected");
        assert!(!l.allowed(a, 0.5));
        assert!(l.allowed(a, 1.0));
    }
}
