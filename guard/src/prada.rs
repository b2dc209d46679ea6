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
    /// Earlier queries with their predicted class, oldest first.
    queries: VecDeque<(i64, Box<[f32]>)>,
    distances: VecDeque<f64>,
    last_seen: u64,
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
    /// W's coefficients at the history cap, where every long-running client's series sits.
    at_cap: Option<Coefficients>,
    series: Vec<f64>,
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
            series: Vec::with_capacity(history),
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
        let nearest = state
            .queries
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, q)| {
                q.iter().zip(query).map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2)).sum::<f64>()
            })
            .min_by(f64::total_cmp)
            .map(f64::sqrt);
        if let Some(d) = nearest {
            if state.distances.len() == self.history {
                state.distances.pop_front();
            }
            state.distances.push_back(d);
        }
        if state.queries.len() == self.history {
            // The oldest query's buffer is reused for the new one when they are the same size.
            let (_, mut buf) = state.queries.pop_front().unwrap_or_default();
            if buf.len() == query.len() {
                buf.copy_from_slice(query);
            } else {
                buf = query.into();
            }
            state.queries.push_back((class, buf));
        } else {
            state.queries.push_back((class, query.into()));
        }
        let n = state.distances.len();
        if n < self.min_queries {
            return Prada::Warming { distances: n };
        }
        self.series.clear();
        self.series.extend(state.distances.iter().copied());
        self.series.sort_by(f64::total_cmp);
        let w = match &self.at_cap {
            Some(c) if c.n() == n => c.w(&self.series),
            _ => Coefficients::new(n).and_then(|c| c.w(&self.series)),
        };
        match w {
            Some(w) if w < self.delta => Prada::Alarm { w },
            Some(w) => Prada::Normal { w },
            None => Prada::Alarm { w: 0.0 },
        }
    }
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
        assert_eq!((long.queries.len(), long.distances.len()), (200, 200));
    }
}
