//! Connection admission: every open connection has a slot in one table, with the phase it is
//! in and since when. The table enforces the caps and the phase deadlines:
//!
//! - **At most `max_connections` in all, at most `per_source` per [`Source`].** When a cap is
//!   reached, the new connection does not wait and is not dropped: it displaces a *stalled*
//!   connection — one in its handshake, idle between requests, or still sending its request —
//!   taken from the source that holds the most connections, the one stalled longest first. So a
//!   client that holds slots without using them (slowloris) loses them to whoever connects next,
//!   and a single-connection client is displaced last. A connection whose request is in its
//!   handler is never displaced.
//! - **Slots kept free:** requests in their handlers may hold at most `max_connections −
//!   reserved` slots; past that a request is answered 503 at once (health routes excepted). So
//!   at least `reserved` slots are always free or displaceable, and a new handshake or a health
//!   check always gets through.
//! - **Deadlines per phase,** enforced by a watchdog ([`Admission::watch`]) that closes a
//!   connection past its phase's deadline: handshake, waiting for a request (idle keep-alive and
//!   slow headers alike), and the request body. Handlers have their own deadlines
//!   ([`crate::deadline`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::source::Source;

/// The caps and deadlines of one server's connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub per_source: usize,
    /// Slots that requests in their handlers may not take (handshakes and health checks keep
    /// them). Clamped to `max_connections − 1`.
    pub reserved: usize,
    pub handshake_timeout: Duration,
    /// Waiting for a request's headers: idle between requests, or headers arriving slowly.
    pub idle_timeout: Duration,
    /// From a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// hyper's read buffer, which bounds a request's headers (≥ 8 KiB).
    pub max_header_bytes: usize,
}

impl ConnLimits {
    /// `max` connections, `per_source` of them per source, 1/8 (at least one) reserved, 10 s
    /// handshakes, `idle` and `body` deadlines, 64 KiB of headers.
    pub fn new(max: usize, per_source: usize, idle: Duration, body: Duration) -> Self {
        ConnLimits {
            max_connections: max.max(1),
            per_source: per_source.clamp(1, max.max(1)),
            reserved: (max / 8).max(1),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: idle,
            body_timeout: body,
            max_header_bytes: 64 * 1024,
        }
    }

    /// The most slots requests in their handlers may hold.
    fn active_cap(&self) -> usize {
        self.max_connections - self.reserved.min(self.max_connections.saturating_sub(1))
    }
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Handshake,
    /// Between requests, or receiving a request's headers.
    Waiting,
    /// A request's headers are in; its body is arriving.
    Body,
    /// A request is in its handler (or queued for it).
    Handler,
}

impl Phase {
    /// Stalled phases, in which a connection may be displaced.
    fn displaceable(self) -> bool {
        self != Phase::Handler
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Waiting => "waiting",
            Phase::Body => "body",
            Phase::Handler => "handler",
        }
    }
}

/// Why a connection was not admitted (it is closed at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("every connection of this source is in a handler")]
    SourceBusy,
    #[error("every connection is in a handler")]
    Busy,
}

/// Why a request was answered 503 before its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many requests in progress")]
pub struct AtCapacity;

#[derive(Debug)]
struct Entry {
    source: Source,
    phase: Phase,
    since: Instant,
    /// Requests receiving their bodies, and in their handlers (HTTP/1.1: at most one in all;
    /// HTTP/2: up to the stream limit).
    body: u32,
    handler: u32,
    /// Of `handler`, those that count against the handler cap (not exempt). The connection
    /// holds one unit of the cap while this is non-zero.
    counted: u32,
    close: Arc<Notify>,
}

impl Entry {
    /// The phase its requests put it in: in a handler if any request is, else receiving a
    /// body if any is, else waiting. The phase's clock restarts when it changes.
    fn settle(&mut self) {
        let phase = if self.handler > 0 {
            Phase::Handler
        } else if self.body > 0 {
            Phase::Body
        } else {
            Phase::Waiting
        };
        if phase != self.phase {
            self.phase = phase;
            self.since = Instant::now();
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u64, Entry>,
    per_source: HashMap<Source, usize>,
    active: usize,
    next_id: u64,
}

impl Table {
    /// Removes `id`; true if it was there.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
        if e.counted > 0 {
            self.active -= 1;
        }
        Some(e)
    }

    /// The connection to displace: among stalled ones (of `only` if given), from the source
    /// holding the most connections, stalled longest.
    fn victim(&self, only: Option<Source>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.phase.displaceable() && only.is_none_or(|s| s == e.source))
            .max_by_key(|(_, e)| {
                (self.per_source.get(&e.source).copied().unwrap_or(0), std::cmp::Reverse(e.since))
            })
            .map(|(&id, _)| id)
    }
}

/// Counters for the servers' metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub displaced: AtomicU64,
    pub at_capacity: AtomicU64,
    pub timed_out_handshake: AtomicU64,
    pub timed_out_waiting: AtomicU64,
    pub timed_out_body: AtomicU64,
}

/// One server's connection table.
#[derive(Debug)]
pub struct Admission {
    limits: ConnLimits,
    table: Mutex<Table>,
    pub counters: Counters,
}

impl Admission {
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Admission { limits, table: Mutex::default(), counters: Counters::default() })
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.lock().entries.len()
    }

    /// Admits a connection from `source`, displacing a stalled one if a cap is reached.
    pub fn admit(self: &Arc<Self>, source: Source) -> Result<Slot, Refused> {
        let mut t = self.lock();
        let displaced = if t.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            Some(t.victim(Some(source)).ok_or(Refused::SourceBusy)?)
        } else if t.entries.len() >= self.limits.max_connections {
            Some(t.victim(None).ok_or(Refused::Busy)?)
        } else {
            None
        };
        if let Some(id) = displaced
            && let Some(e) = t.remove(id)
        {
            e.close.notify_one();
            self.counters.displaced.fetch_add(1, Ordering::Relaxed);
        }
        let id = t.next_id;
        t.next_id += 1;
        let close = Arc::new(Notify::new());
        t.entries.insert(
            id,
            Entry {
                source,
                phase: Phase::Handshake,
                since: Instant::now(),
                body: 0,
                handler: 0,
                counted: 0,
                close: close.clone(),
            },
        );
        *t.per_source.entry(source).or_insert(0) += 1;
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { admission: self.clone(), id, source, close })
    }

    /// Closes every connection past its phase's deadline at `now`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let l = &self.limits;
        let mut t = self.lock();
        let late: Vec<(u64, Phase)> = t
            .entries
            .iter()
            .filter_map(|(&id, e)| {
                let limit = match e.phase {
                    Phase::Handshake => l.handshake_timeout,
                    Phase::Waiting => l.idle_timeout,
                    // The body's own deadline answers 408 first; this closes a connection
                    // whose handler never reads its body.
                    Phase::Body => l.body_timeout + Duration::from_secs(2),
                    Phase::Handler => return None,
                };
                (now.saturating_duration_since(e.since) > limit).then_some((id, e.phase))
            })
            .collect();
        for &(id, phase) in &late {
            if let Some(e) = t.remove(id) {
                e.close.notify_one();
            }
            let c = &self.counters;
            match phase {
                Phase::Handshake => &c.timed_out_handshake,
                Phase::Waiting => &c.timed_out_waiting,
                _ => &c.timed_out_body,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        late.len()
    }

    /// Runs [`Self::expire`] four times a second until the admission is dropped elsewhere.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            self.expire(Instant::now());
        }
    }
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    source: Source,
    close: Arc<Notify>,
}

impl Slot {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// Resolves when the connection must close: displaced, or past a deadline.
    pub async fn closed(&self) {
        self.close.notified().await;
    }

    /// Moves to `phase` now (no effect once the slot was taken away).
    pub fn set_phase(&self, phase: Phase) {
        if let Some(e) = self.admission.lock().entries.get_mut(&self.id) {
            e.phase = phase;
            e.since = Instant::now();
        }
    }

    /// A request's headers are in. Without a body it goes to its handler at once
    /// ([`Stream::enter_handler`]); with one, it is receiving its body (the connection still
    /// displaceable unless another request is in a handler) until the body's end. Dropping the
    /// stream ends the request.
    pub fn begin_request(self: &Arc<Self>, exempt: bool, has_body: bool) -> Result<Stream, AtCapacity> {
        let stream = Stream { slot: self.clone(), exempt, state: Mutex::new(StreamState::Body) };
        {
            let mut t = self.admission.lock();
            let Some(e) = t.entries.get_mut(&self.id) else { return Err(AtCapacity) };
            e.body += 1;
            e.settle();
        }
        if !has_body {
            stream.enter_handler()?;
        }
        Ok(stream)
    }
}

/// Where one request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    Body,
    Handler,
    Ended,
}

/// One request on a connection (HTTP/2 carries several at once): its part in the connection's
/// phase and in the handler cap.
#[derive(Debug)]
pub struct Stream {
    slot: Arc<Slot>,
    exempt: bool,
    state: Mutex<StreamState>,
}

impl Stream {
    /// The request's body is complete: it goes to its handler, counted against the handler cap
    /// unless `exempt` (health checks), and refused — the request ends — when the cap is
    /// reached. A connection already in a handler holds its unit of the cap: its other streams
    /// are not refused for it.
    pub fn enter_handler(&self) -> Result<(), AtCapacity> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state != StreamState::Body {
            return Ok(());
        }
        let admission = &self.slot.admission;
        let cap = admission.limits.active_cap();
        let mut t = admission.lock();
        let active = t.active;
        let Some(e) = t.entries.get_mut(&self.slot.id) else { return Err(AtCapacity) };
        if !self.exempt && e.counted == 0 && active >= cap {
            e.body -= 1;
            e.settle();
            *state = StreamState::Ended;
            admission.counters.at_capacity.fetch_add(1, Ordering::Relaxed);
            return Err(AtCapacity);
        }
        e.body -= 1;
        e.handler += 1;
        let newly_counted = !self.exempt && e.counted == 0;
        if !self.exempt {
            e.counted += 1;
        }
        e.settle();
        if newly_counted {
            t.active += 1;
        }
        *state = StreamState::Handler;
        Ok(())
    }
}

impl Drop for Stream {
    /// The request's response is out (or it was abandoned).
    fn drop(&mut self) {
        let state = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = self.slot.admission.lock();
        let Some(e) = t.entries.get_mut(&self.slot.id) else { return };
        let mut uncounted = false;
        match state {
            StreamState::Body => e.body -= 1,
            StreamState::Handler => {
                e.handler -= 1;
                if !self.exempt {
                    e.counted -= 1;
                    uncounted = e.counted == 0;
                }
            }
            StreamState::Ended => {}
        }
        e.settle();
        if uncounted {
            t.active -= 1;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn src(n: u8) -> Source {
        Source::from(std::net::IpAddr::from([127, 0, 0, n]))
    }

    fn limits(max: usize, per_source: usize) -> ConnLimits {
        ConnLimits {
            reserved: 1,
            ..ConnLimits::new(max, per_source, Duration::from_secs(30), Duration::from_secs(30))
        }
    }

    #[tokio::test]
    async fn a_full_table_displaces_the_heaviest_sources_longest_stalled() {
        let a = Admission::new(limits(4, 3));
        let attacker: Vec<Slot> = (0..3).map(|_| a.admit(src(2)).unwrap()).collect();
        let legit = a.admit(src(1)).unwrap();
        assert_eq!(a.open(), 4);
        // A fifth connection displaces the attacker's oldest, never the single-connection client.
        let next = a.admit(src(3)).unwrap();
        assert_eq!(a.open(), 4);
        tokio::time::timeout(Duration::from_millis(100), attacker[0].closed()).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(20), legit.closed()).await.is_err());
        drop((next, legit, attacker));
        assert_eq!(a.open(), 0);
    }

    #[tokio::test]
    async fn a_source_at_its_cap_displaces_its_own_and_handlers_are_never_displaced() {
        let a = Admission::new(limits(8, 2));
        let first = Arc::new(a.admit(src(2)).unwrap());
        let second = a.admit(src(2)).unwrap();
        let _in_handler = first.begin_request(false, false).unwrap();
        let third = Arc::new(a.admit(src(2)).unwrap());
        tokio::time::timeout(Duration::from_millis(100), second.closed()).await.unwrap();
        let stream = third.begin_request(false, true).unwrap();
        stream.enter_handler().unwrap();
        assert_eq!(a.admit(src(2)).unwrap_err(), Refused::SourceBusy);
        assert!(a.admit(src(1)).is_ok(), "other sources are unaffected");
    }

    #[tokio::test]
    async fn handlers_leave_the_reserved_slots_and_health_checks_pass() {
        let a = Admission::new(limits(4, 4));
        let slots: Vec<Arc<Slot>> = (0..4).map(|_| Arc::new(a.admit(src(1)).unwrap())).collect();
        let mut streams: Vec<Stream> =
            slots[..3].iter().map(|s| s.begin_request(false, false).unwrap()).collect();
        assert_eq!(slots[3].begin_request(false, false).unwrap_err(), AtCapacity);
        let health = slots[3].begin_request(true, false);
        assert!(health.is_ok(), "exempt route");
        // A connection already in a handler takes more streams (HTTP/2) without a new unit.
        let second_stream = slots[0].begin_request(false, false);
        assert!(second_stream.is_ok());
        drop((health, second_stream));
        streams.remove(0);
        assert!(slots[3].begin_request(false, false).is_ok(), "a unit came free");
        drop((streams, slots));
        assert_eq!(a.open(), 0);
        assert_eq!(a.counters.at_capacity.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn each_phase_expires_at_its_deadline() {
        let l = ConnLimits {
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            ..limits(8, 8)
        };
        let a = Admission::new(l);
        let hs = a.admit(src(1)).unwrap();
        let idle = a.admit(src(1)).unwrap();
        idle.set_phase(Phase::Waiting);
        let body = Arc::new(a.admit(src(1)).unwrap());
        let _receiving = body.begin_request(false, true).unwrap();
        let handler = Arc::new(a.admit(src(1)).unwrap());
        let _handling = handler.begin_request(false, false).unwrap();
        let t0 = Instant::now();
        assert_eq!(a.expire(t0), 0);
        assert_eq!(a.expire(t0 + Duration::from_secs(2)), 1);
        hs.closed().await;
        assert_eq!(a.expire(t0 + Duration::from_secs(6)), 1);
        idle.closed().await;
        assert_eq!(a.expire(t0 + Duration::from_secs(13)), 1);
        body.closed().await;
        assert_eq!(a.expire(t0 + Duration::from_secs(3600)), 0, "handlers have their own deadlines");
        assert_eq!(a.open(), 1);
        drop(handler);
    }
}
