//! The PRADA extraction detector (Juuti et al., EuroS&P 2019), per client: each query's minimum
//! L2 distance to that client's earlier queries of the same predicted class joins a series, and
//! once the series holds `min_queries` distances, a Shapiro–Wilk W below the manifest's `delta`
//! raises the alarm. Natural queries give distances close to normal; the synthetic ones of
//! Jacobian-augmentation and equation-solving attacks do not.
//!
//! Memory is bounded twice: each client keeps at most `history` queries (the oldest go first)
//! and `history` distances, and the detector keeps at most `max_clients` clients (the least
//! recently seen goes first), so its size is at most `max_clients × history × (features × 4 +
//! 16)` bytes plus bookkeeping, whatever the clients send.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::manifest::Extraction;
use crate::shapiro::Coefficients;

/// A client's identity: the SHA-256 of its bearer token.
pub type ClientId = [u8; 32];

/// The class a model's output row predicts, as the detector groups queries: a single score
/// is a binary classifier's (class 1 above 0.5), a wider row's class is its largest value.
pub fn predicted_class(row: &[f32]) -> i64 {
    match row {
        [score] => i64::from(*score > 0.5),
        _ => row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as i64),
    }
}

/// What the detector says of a query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prada {
    /// Too few distances yet to test.
    Warming { distances: usize },
    /// Tested: W at or above `delta`.
    Normal { w: f64 },
    /// Tested: W below `delta`, or every distance the same (W = 0: nothing natural does that).
    Alarm { w: f64 },
}

#[derive(Debug, Default)]
struct Client {
    /// Earlier queries, a ring of `history` rows of `features` values (row-major), with their
    /// predicted classes; `next` is the slot the next query takes.
    rows: Vec<f32>,
    classes: Vec<i64>,
    next: usize,
    /// The series in arrival order (the oldest goes first) and the same values sorted, kept
    /// sorted as they come and go so that W needs no sort per query.
    distances: VecDeque<f64>,
    sorted: Vec<f64>,
    last_seen: u64,
}

impl Client {
    fn push_distance(&mut self, d: f64, cap: usize) {
        if self.distances.len() == cap
            && let Some(old) = self.distances.pop_front()
        {
            let at = self.sorted.partition_point(|v| v.total_cmp(&old).is_lt());
            self.sorted.remove(at);
        }
        self.distances.push_back(d);
        let at = self.sorted.partition_point(|v| v.total_cmp(&d).is_lt());
        self.sorted.insert(at, d);
    }

    /// The distance from `query` to the nearest earlier query of `class` (f32 sums: the rows
    /// are f32, and this is what vectorises).
    fn nearest(&self, query: &[f32], class: i64) -> Option<f64> {
        let d = query.len().max(1);
        let mut best = f32::INFINITY;
        for (row, &c) in self.rows.chunks_exact(d).zip(&self.classes) {
            if c != class {
                continue;
            }
            // Eight independent partial sums: the compiler keeps them in one vector register
            // (a single running sum would wait on every addition).
            let mut lanes = [0f32; 8];
            let (row8, query8) = (row.chunks_exact(8), query.chunks_exact(8));
            let mut tail = 0f32;
            for (a, b) in row8.remainder().iter().zip(query8.remainder()) {
                tail += (a - b) * (a - b);
            }
            for (a, b) in row8.zip(query8) {
                for k in 0..8 {
                    let t = a[k] - b[k];
                    lanes[k] += t * t;
                }
            }
            best = best.min(lanes.iter().sum::<f32>() + tail);
        }
        best.is_finite().then(|| f64::from(best).sqrt())
    }

    fn push_row(&mut self, query: &[f32], class: i64, cap: usize) {
        let d = query.len();
        if self.classes.len() < cap {
            self.rows.extend_from_slice(query);
            self.classes.push(class);
        } else if let Some(slot) = self.rows.get_mut(self.next * d..(self.next + 1) * d) {
            slot.copy_from_slice(query);
            self.classes[self.next] = class;
        }
        self.next = (self.next + 1) % cap.max(1);
    }
}

/// The detector of one served model.
#[derive(Debug)]
pub struct Detector {
    delta: f64,
    history: usize,
    min_queries: usize,
    max_clients: usize,
    clients: HashMap<ClientId, Client>,
    /// Clients by when they were last seen, for evicting the least recent in O(log n).
    by_age: BTreeMap<u64, ClientId>,
    clock: u64,
    /// W's coefficients at the history cap, where every long-running client's series sits,
    /// and at the length last tested below it.
    at_cap: Option<Coefficients>,
    filling: Option<Coefficients>,
}

impl Detector {
    /// The manifest's settings, and the most clients tracked at once.
    pub fn new(settings: &Extraction, max_clients: usize) -> Self {
        let history = settings.history as usize;
        Detector {
            delta: settings.delta,
            history,
            min_queries: settings.min_queries as usize,
            max_clients: max_clients.max(1),
            clients: HashMap::new(),
            by_age: BTreeMap::new(),
            clock: 0,
            at_cap: Coefficients::new(history),
            filling: None,
        }
    }

    /// Bytes one client's history takes at most, for `features` per query (the queries, their
    /// distances, and the allocator's and table's bookkeeping, rounded up).
    pub fn bytes_per_client(settings: &Extraction, features: usize) -> usize {
        settings.history as usize * (features * 4 + 8 + 16 + 8) + 256
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Records `query` (one row of features) of `client`, whose predicted class was `class`,
    /// and tests the client's series.
    pub fn observe(&mut self, client: &ClientId, query: &[f32], class: i64) -> Prada {
        self.clock += 1;
        if !self.clients.contains_key(client)
            && self.clients.len() >= self.max_clients
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            // The least recently seen client goes: an attacker rotating tokens loses its
            // history, which the budgets (per token) bound separately.
            self.clients.remove(&oldest);
        }
        let state = self.clients.entry(*client).or_default();
        self.by_age.remove(&state.last_seen);
        state.last_seen = self.clock;
        self.by_age.insert(self.clock, *client);
        // A client's rows all have the width of its first (the manifest's features, in the
        // enclave); a query of another width starts its history afresh.
        if !state.classes.is_empty() && state.rows.len() != state.classes.len() * query.len() {
            *state = Client { last_seen: state.last_seen, ..Client::default() };
        }
        if let Some(d) = state.nearest(query, class) {
            state.push_distance(d, self.history);
        }
        state.push_row(query, class, self.history);
        let n = state.sorted.len();
        if n < self.min_queries {
            return Prada::Warming { distances: n };
        }
        let w = match &self.at_cap {
            Some(c) if c.n() == n => c.w(&state.sorted),
            _ => {
                // Filling up: the coefficients of this length, kept for the next query of it.
                if self.filling.as_ref().is_none_or(|c| c.n() != n) {
                    self.filling = Coefficients::new(n);
                }
                self.filling.as_ref().and_then(|c| c.w(&state.sorted))
            }
        };
        match w {
            Some(w) if w < self.delta => Prada::Alarm { w },
            Some(w) => Prada::Normal { w },
            None => Prada::Alarm { w: 0.0 },
        }
    }
}

/// The lowest W that natural traffic reaches under `settings` (its `delta` ignored): `rows`
/// (training-like, in random order) with their predicted `classes`, replayed as `streams`
/// clients of `2 × history` queries each (the history filling, then full), every W after
/// `min_queries` taken. `None` when there are not enough rows for one stream.
/// `nacre guard fit` sets `delta` below it, so that traffic like the training data does not
/// raise the alarm; the synthetic series of extraction attacks fall far below (README figures).
pub fn lowest_natural_w(
    settings: &Extraction,
    rows: &[Vec<f32>],
    classes: &[i64],
    streams: usize,
) -> Option<f64> {
    let per_stream = 2 * settings.history as usize;
    let streams = streams.min(rows.len() / per_stream.max(1));
    if streams == 0 {
        return None;
    }
    let mut lowest = f64::INFINITY;
    for s in 0..streams {
        let mut d = Detector::new(&Extraction { delta: 0.0, ..settings.clone() }, 1);
        for i in s * per_stream..(s + 1) * per_stream {
            match d.observe(&[0; 32], &rows[i], classes[i]) {
                Prada::Normal { w } | Prada::Alarm { w } => lowest = lowest.min(w),
                Prada::Warming { .. } => {}
            }
        }
    }
    lowest.is_finite().then_some(lowest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::ExtractionAction;

    fn settings() -> Extraction {
        Extraction {
            delta: 0.9,
            history: 200,
            min_queries: 30,
            action: ExtractionAction::Throttle,
            throttle_seconds: 10,
        }
    }

    /// A client id from a name (its bytes, zero-padded).
    fn id(name: &str) -> ClientId {
        let mut id = [0; 32];
        id[..name.len()].copy_from_slice(name.as_bytes());
        id
    }

    /// Deterministic standard normals (Box–Muller over SplitMix64).
    fn normals(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next().max(1e-12), next());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn natural_queries_pass_and_a_synthetic_walk_raises_the_alarm() {
        let mut d = Detector::new(&settings(), 100);
        // A benign client: independent rows of 8 features, two classes.
        let rows = normals(1, 8 * 150);
        let mut last = Prada::Warming { distances: 0 };
        for row in rows.chunks(8) {
            last = d.observe(&id("benign"), row, i64::from(row[0] > 0.0));
        }
        assert!(matches!(last, Prada::Normal { .. }), "{last:?}");
        // An attacker: Jacobian-style augmentation, each query a small step from the previous
        // one along a fixed direction, all of one class.
        let mut x = vec![0.0f32; 8];
        let mut alarmed = None;
        for i in 0..150 {
            x[i % 8] += if i % 3 == 0 { 0.1 } else { 0.01 };
            if let Prada::Alarm { .. } = d.observe(&id("attacker"), &x, 1) {
                alarmed.get_or_insert(i);
            }
        }
        assert!(alarmed.is_some_and(|i| i < 60), "alarm at {alarmed:?}");
        // The benign client is not affected by the attacker's alarm.
        assert!(matches!(d.observe(&id("benign"), &rows[..8], 1), Prada::Normal { .. }));
    }

    #[test]
    fn memory_stays_bounded_under_many_tokens() {
        let mut d = Detector::new(&settings(), 1000);
        let row = normals(2, 8);
        for t in 0..10_000 {
            for k in 0..3 {
                d.observe(&id(&format!("token-{t}")), &row, k);
            }
        }
        assert_eq!((d.clients(), d.by_age.len()), (1000, 1000));
        // The most recent thousand stayed, the rest went oldest first.
        assert!(d.clients.contains_key(&id("token-9999")) && !d.clients.contains_key(&id("token-8999")));
        // One client's history stays at its cap however long it queries.
        let rows = normals(3, 8 * 1000);
        for row in rows.chunks(8) {
            d.observe(&id("long"), row, 0);
        }
        let long = &d.clients[&id("long")];
        assert_eq!(
            (long.classes.len(), long.rows.len(), long.distances.len(), long.sorted.len()),
            (200, 1600, 200, 200)
        );
        // The sorted copy is the series, sorted.
        let mut series: Vec<f64> = long.distances.iter().copied().collect();
        series.sort_by(f64::total_cmp);
        assert_eq!(series, long.sorted);
    }
}
