//! Denial limiting: whoever a refusal is charged to ([`Charge`]) has a bucket of `burst`
//! denials that refills at `per_minute`. A caller whose bucket is empty is refused before any
//! verification or database work, so a misbehaving guest or scanner cannot turn denials into
//! load or audit-log growth.
//!
//! What a refusal is charged to decides who else it can lock out, so it is the narrowest thing
//! the service knows about the caller at that point:
//! - an authenticated bearer token ([`Charge::Token`]): an admin or auditor call is admitted on
//!   its token's own allowance, whatever its address has collected. Only its own refusals
//!   (an auditor calling an admin route) are charged to it;
//! - authentic SNP evidence ([`Charge::Chip`]): a release refused after the evidence proved to
//!   come from a real chip (refused by the binding or the policy, or at commit) is charged to
//!   that chip, so a misconfigured guest behind a relay does not use up the relay's allowance
//!   for every other guest behind it. Chips cannot be minted (each CHIP_ID is bound to the
//!   chip's VCEK); a report whose CHIP_ID is masked (all zero) names no chip and is charged to
//!   its source. TDX claims carry no platform identity, so TDX denials go to the source;
//! - everything else ([`Charge::Source`]): the connection's source, an IPv4 address or an IPv6
//!   /64 (an IPv6 client can rotate through its /64 at will). Failed authentication is charged
//!   here, so token guessing stays limited per source.
//!
//! The buckets are [`nacre_http::buckets::Buckets`]: at most `max_tracked_sources` keys, each
//! operation constant time (the old table swept all of its entries under its lock above
//! 10,000). Its documentation says what a client gains by rotating through more keys than that.

use std::net::IpAddr;
use std::sync::Mutex;

use aws_lc_rs::digest;
use nacre_http::buckets::{Buckets, Clock};
use nacre_http::source::Source;

/// Whom a refusal counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Charge {
    /// A presented bearer token that authenticated: the SHA-256 of the token.
    Token([u8; 32]),
    /// Authentic SNP (or sim) evidence: the SHA-256 of its CHIP_ID.
    Chip([u8; 32]),
    /// The connection's source.
    Source(Source),
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl Charge {
    /// The key of a bearer token (use it once the token has authenticated).
    pub fn token(token: &str) -> Self {
        Charge::Token(sha256(token.as_bytes()))
    }

    /// The key of an authentic report's chip; `None` when the CHIP_ID is masked (all zero).
    pub fn chip(chip_id: &[u8; 64]) -> Option<Self> {
        (chip_id != &[0; 64]).then(|| Charge::Chip(sha256(chip_id)))
    }

    /// What the refusal message calls this key.
    pub fn noun(&self) -> &'static str {
        match self {
            Charge::Token(_) => "this token",
            Charge::Chip(_) => "this chip",
            Charge::Source(_) => "this source",
        }
    }
}

impl From<IpAddr> for Charge {
    fn from(ip: IpAddr) -> Self {
        Charge::Source(Source::from(ip))
    }
}

#[derive(Debug)]
pub struct DenialLimiter {
    clock: Clock,
    buckets: Mutex<Buckets<Charge>>,
}

impl DenialLimiter {
    pub fn new(burst: u32, per_minute: u32, max_tracked: usize) -> Self {
        DenialLimiter {
            clock: Clock::new(),
            buckets: Mutex::new(Buckets::new(burst, f64::from(per_minute) / 60.0, max_tracked)),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, Buckets<Charge>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `who` may be served now.
    pub fn allowed(&self, who: &Charge) -> bool {
        let now = self.clock.now();
        self.buckets().allowed(who, now)
    }

    /// Charges one denial to `who`.
    pub fn record_denial(&self, who: &Charge) {
        let now = self.clock.now();
        self.buckets().charge(who, now);
    }

    /// Keys tracked now (never more than `max_tracked`).
    pub fn tracked(&self) -> usize {
        self.buckets().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn keys_of_each_kind_are_apart() {
        let l = DenialLimiter::new(1, 1, 100);
        let v6 = |a: &str| Charge::from(a.parse::<IpAddr>().unwrap());
        l.record_denial(&v6("2001:db8:1:2::1"));
        assert!(!l.allowed(&v6("2001:db8:1:2::ffff")), "one /64, one bucket");
        assert!(l.allowed(&v6("2001:db8:1:3::1")));
        assert!(l.allowed(&Charge::token("nacre_x")));
        assert!(l.allowed(&Charge::chip(&[7; 64]).unwrap()));
        assert_ne!(Charge::token("a"), Charge::token("b"));
        assert_eq!(Charge::chip(&[0; 64]), None, "a masked CHIP_ID names no chip");
    }
}
