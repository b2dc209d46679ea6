//! Token buckets per key under a hard cap on tracked keys, with constant-time eviction.
//!
//! A key (a bearer token's hash, a source, a connection, a chip) has a bucket of `burst`
//! tokens that refills at `per_second`. [`Buckets::take`] spends a token if there is one (a
//! request limit); [`Buckets::allowed`] asks whether there is one without spending it and
//! [`Buckets::charge`] spends one with a floor of zero (a denial limit: check before the work,
//! charge after a refusal). An untracked key has a full bucket, so forgetting a full bucket
//! changes nothing, and forgetting any bucket can only ever forgive: eviction never limits a
//! key more than it was.
//!
//! # The cap, and what rotating keys buys
//!
//! The table tracks at most `capacity` keys, in a fixed ring of slots indexed by a `HashMap`
//! (std's SipHash with a random key per map: keys chosen to collide do not degrade lookups).
//! A new key in a full table replaces one of the [`PROBES`] slots from the ring's hand: the
//! first whose bucket has refilled to full, else the one closest to full (the least debt
//! forgiven). The hand then moves past the slot taken, so a key is examined again only after
//! the hand has gone round: at least `capacity / PROBES` insertions later. Every operation is
//! a hash lookup plus at most [`PROBES`] slot reads: constant time, whatever the table holds.
//!
//! A client that rotates through more keys than the cap holds gains resets: it pushes buckets
//! out, and the evicted keys (its own earlier ones among them) start full when they come back.
//! That is its whole gain, and it is bounded by what rotation costs it: forgiving one key's
//! debt takes at least `capacity / PROBES` fresh keys first, and each fresh key already comes
//! with a full bucket of its own, so evictions add at most one burst per `capacity / PROBES`
//! keys to what that many keys give it anyway. Fresh keys are what is expensive: callers key
//! an IPv6 client by its /64 ([`crate::source::Source`]), which a provider hands out whole, so
//! the addresses inside it are one key. Full buckets go first, so to push out one that is not
//! full a client must first fill the probed slots with debt of its own: with the service's
//! default cap of 65,536, on the order of the cap in distinct IPv4 addresses or /64s (a whole
//! /48), and never fewer than `capacity / PROBES` (8,192, a /51) even in a table that other
//! clients' debts already fill. Keys that other clients cannot mint — a bearer token's hash, a
//! chip's identity — never share a bucket with a rotating client, and the worst rotation can
//! do to them is forgive their debt.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// Slots an insertion into a full table examines, at most.
pub const PROBES: usize = 8;

/// Token buckets per key `K`; see the module documentation. Not synchronised: servers keep
/// one behind a mutex (every operation is constant time, so the lock is held briefly).
#[derive(Debug)]
pub struct Buckets<K> {
    burst: f64,
    per_second: f64,
    capacity: usize,
    /// The ring; grows to `capacity`, never past it.
    slots: Vec<Slot<K>>,
    /// Key → its slot in `slots`.
    index: HashMap<K, usize>,
    /// Where the next eviction starts probing.
    hand: usize,
    evictions: u64,
    most_probed: usize,
}

#[derive(Debug)]
struct Slot<K> {
    key: K,
    tokens: f64,
    /// When `tokens` was last brought up to date (seconds, monotonic).
    at: f64,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `burst` tokens per key (at least 1), refilled at `per_second` (negative or NaN: never),
    /// for at most `capacity` keys (at least 1).
    pub fn new(burst: u32, per_second: f64, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Buckets {
            burst: f64::from(burst.max(1)),
            per_second: if per_second.is_finite() { per_second.max(0.0) } else { 0.0 },
            capacity,
            slots: Vec::new(),
            index: HashMap::new(),
            hand: 0,
            evictions: 0,
            most_probed: 0,
        }
    }

    /// Spends one of `key`'s tokens at `now` (seconds, monotonic); false, spending nothing,
    /// when it has none.
    pub fn take<Q>(&mut self, key: &Q, now: f64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let slot = self.slot(key, now);
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `key` has a token at `now`, without spending it or tracking the key.
    pub fn allowed<Q>(&self, key: &Q, now: f64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.tokens(key, now).is_none_or(|t| t >= 1.0)
    }

    /// Spends one of `key`'s tokens at `now`, if it has one left (the floor is zero).
    pub fn charge<Q>(&mut self, key: &Q, now: f64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let slot = self.slot(key, now);
        slot.tokens = (slot.tokens - 1.0).max(0.0);
    }

    /// `key`'s tokens at `now`; `None` when it is not tracked (its bucket is full).
    pub fn tokens<Q>(&self, key: &Q, now: f64) -> Option<f64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.get(key).map(|&i| self.level(&self.slots[i], now))
    }

    /// Keys tracked now; never more than [`Buckets::capacity`].
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys forgotten to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The most slots one insertion has examined so far: never more than [`PROBES`].
    pub fn most_probed(&self) -> usize {
        self.most_probed
    }

    /// The tokens of `slot` at `now`, refilled but not stored.
    fn level(&self, slot: &Slot<K>, now: f64) -> f64 {
        (slot.tokens + (now - slot.at).max(0.0) * self.per_second).min(self.burst)
    }

    /// `key`'s slot, brought up to `now`; tracked with a full bucket if it was not.
    fn slot<Q>(&mut self, key: &Q, now: f64) -> &mut Slot<K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let i = match self.index.get(key) {
            Some(&i) => {
                let tokens = self.level(&self.slots[i], now);
                let slot = &mut self.slots[i];
                slot.tokens = tokens;
                // A clock read that went backwards credits nothing twice.
                slot.at = slot.at.max(now);
                i
            }
            None => self.insert(key.to_owned(), now),
        };
        &mut self.slots[i]
    }

    /// Tracks `key` with a full bucket: in a free slot, or in the one [`Self::victim`] picks.
    fn insert(&mut self, key: K, now: f64) -> usize {
        let slot = Slot { key: key.clone(), tokens: self.burst, at: now };
        let i = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let i = self.victim(now);
            let old = std::mem::replace(&mut self.slots[i], slot);
            self.index.remove(&old.key);
            self.evictions += 1;
            i
        };
        self.index.insert(key, i);
        i
    }

    /// Of the [`PROBES`] slots from the hand, the first that is full, else the fullest (the
    /// first of equals); the hand moves past it.
    fn victim(&mut self, now: f64) -> usize {
        let n = self.slots.len();
        let (mut best, mut best_level) = (self.hand, f64::NEG_INFINITY);
        let window = PROBES.min(n);
        let mut examined = window;
        for step in 0..window {
            let i = (self.hand + step) % n;
            let level = self.level(&self.slots[i], now);
            if level > best_level {
                (best, best_level) = (i, level);
            }
            if level >= self.burst {
                examined = step + 1;
                break;
            }
        }
        self.most_probed = self.most_probed.max(examined);
        self.hand = (best + 1) % n;
        best
    }
}

/// Monotonic seconds since the clock was made: the `now` that servers pass to [`Buckets`]
/// (tests pass their own).
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let mut b = Buckets::new(3, 1.0, 100);
        assert!((0..3).all(|_| b.take("a", 0.0)));
        assert!(!b.take("a", 0.0), "a's burst is spent");
        assert!(b.take("b", 0.0), "b is unaffected");
        assert!(!b.allowed("a", 0.0));
        assert!(b.allowed("b", 0.0));
        assert!(b.allowed("never seen", 0.0), "an untracked key has a full bucket");
        assert_eq!(b.len(), 2, "allowed() does not track keys");
    }

    #[test]
    fn buckets_refill_at_the_rate_up_to_the_burst() {
        let mut b = Buckets::new(2, 0.5, 10);
        b.charge("k", 0.0);
        b.charge("k", 0.0);
        b.charge("k", 0.0); // the floor is zero: a third charge is not owed later
        assert_eq!(b.tokens("k", 0.0), Some(0.0));
        assert!(!b.allowed("k", 1.9));
        assert!(b.allowed("k", 2.0), "one token after 2 s at 0.5/s");
        assert_eq!(b.tokens("k", 100.0), Some(2.0), "never above the burst");
        assert!(b.take("k", 100.0) && b.take("k", 100.0) && !b.take("k", 100.0));
        // A clock read that goes backwards credits nothing, now or later.
        assert!(!b.take("k", 50.0));
        assert_eq!(b.tokens("k", 102.0), Some(1.0));
    }

    #[test]
    fn the_cap_holds_under_ten_times_capacity_keys() {
        let mut b = Buckets::new(5, 1.0, 1000);
        for i in 0..10_000u32 {
            b.charge(&i, f64::from(i) * 1e-3);
            assert!(b.len() <= 1000);
            assert_eq!(b.index.len(), b.len(), "the index and the ring agree");
        }
        assert_eq!(b.len(), 1000);
        assert_eq!(b.evictions(), 9000);
        for (i, slot) in b.slots.iter().enumerate() {
            assert_eq!(b.index.get(&slot.key), Some(&i));
        }
    }

    #[test]
    fn full_buckets_are_evicted_before_partial_ones() {
        let mut b = Buckets::new(4, 1.0, 16);
        for k in 0..16u32 {
            b.charge(&k, 0.0);
        }
        // At t = 10 every bucket has refilled; the even keys are charged again.
        for k in (0..16u32).step_by(2) {
            b.charge(&k, 10.0);
        }
        for k in 100..108u32 {
            b.charge(&k, 10.0);
        }
        for k in 0..16u32 {
            assert_eq!(b.tokens(&k, 10.0).is_some(), k % 2 == 0, "key {k}");
        }
        // No full bucket left: the fullest probed goes (the newcomers, charged once, tie with
        // the evens; the first from the hand wins, and the hand has come round to key 0).
        b.charge(&200, 10.0);
        assert_eq!(b.len(), 16);
        assert_eq!(b.tokens(&0, 10.0), None);
    }

    #[test]
    fn the_least_indebted_probed_bucket_goes_when_none_is_full() {
        let mut b = Buckets::new(20, 0.0, 16);
        for k in 0..16u32 {
            for _ in 0..=k {
                b.charge(&k, 0.0); // key k owes k + 1 tokens
            }
        }
        b.charge(&100, 0.0);
        assert_eq!(b.tokens(&0, 0.0), None, "key 0 owed least of slots 0-7");
        b.charge(&101, 0.0);
        assert_eq!(b.tokens(&1, 0.0), None, "then key 1, of slots 1-8");
        assert!((2..16u32).all(|k| b.tokens(&k, 0.0).is_some()));
        assert_eq!(b.most_probed(), PROBES);
    }

    #[test]
    fn eviction_probes_a_constant_number_of_slots() {
        // A million new keys at a capacity of 10,000, none of them ever full again (no
        // refill): every insertion is an eviction that examines at most PROBES slots.
        let mut b = Buckets::new(1, 0.0, 10_000);
        for i in 0..1_000_000u32 {
            b.charge(&i, 0.0);
        }
        assert_eq!(b.len(), 10_000);
        assert_eq!(b.evictions(), 990_000);
        assert_eq!(b.most_probed(), PROBES);
    }

    #[test]
    fn byte_string_keys_are_looked_up_without_an_owned_copy() {
        let mut b: Buckets<Vec<u8>> = Buckets::new(1, 0.0, 4);
        assert!(b.take(&b"client"[..], 0.0));
        assert!(!b.take(&b"client"[..], 0.0));
        assert!(!b.allowed(&b"client"[..], 0.0));
    }
}
