//! Private drift monitoring (guard part 3): inside the enclave, every served row lands in one bin
//! of each feature's reference histogram, its top score in the output histogram, and a request's
//! guard finding (`log`/`flag` actions) in a findings count. At window close the counts are
//! noised with an exact discrete mechanism under the manifest's ε, charged to a per-day privacy
//! budget, and only then compared with the reference: PSI, KS and Hellinger against thresholds
//! calibrated to the manifest's false-alarm rate. Only released windows leave; the raw counts
//! are dropped at close.
//!
//! The unit of privacy is one row: a row changes one count in each of the d feature histograms,
//! one in the output histogram (when the model's first output is float scores) and at most one
//! findings count, so the L1 (and squared L2) sensitivity of a window is d + 2 (d + 1 without
//! scores).

pub mod drift;
pub mod noise;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::manifest::{Document, Mechanism, Monitoring, Window};
use drift::{Distances, Thresholds};
use noise::{Bits, Noise};

/// Released (and withheld) windows kept for readers; older ones go first.
pub const MAX_WINDOWS_KEPT: usize = 1024;
/// Window sizes whose thresholds are cached (time windows vary in size).
const MAX_CALIBRATIONS: usize = 64;

/// The output histogram's edges when the manifest gives none: scores in [0, 1].
pub fn default_output_edges() -> Vec<f64> {
    // i/20, not i·0.05: each edge is the double nearest its decimal, and survives JSON.
    (1..20).map(|i| f64::from(i) / 20.0).collect()
}

/// A guard finding of the input guard under `log` or `flag` (a `reject` is visible as a 422
/// anyway, and is counted in the enclave's metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finding {
    Schema,
    OutOfDistribution,
}

/// Why a closed window was not released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// Its noised size was below the manifest's `min_window`.
    BelowMinWindow,
    /// The day's privacy budget could not pay for it.
    PrivacyBudget,
}

/// One feature in a released window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureWindow {
    pub name: String,
    /// Noised counts on the reference's bins.
    pub counts: Vec<i64>,
    pub distances: Distances,
    pub thresholds: Distances,
    pub drift: bool,
}

/// The top score of each row (first output) in a released window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputWindow {
    pub edges: Vec<f64>,
    pub counts: Vec<i64>,
    /// Quantiles interpolated in the noised histogram: p50, p90, p99; none when it is empty
    /// (a first output that is not FP32 has no scores).
    pub quantiles: Option<[f64; 3]>,
}

/// What a released window carries: noised counts and what follows from them (post-processing
/// of the noised counts, which costs no further privacy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The noised number of rows (the first feature's histogram's total: every row has a bin there).
    pub rows: i64,
    pub epsilon: f64,
    pub mechanism: Mechanism,
    /// The Laplace scale or the Gaussian σ of every count's noise.
    pub noise_scale: f64,
    pub features: Vec<FeatureWindow>,
    /// None when the model's first output has no float scores to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputWindow>,
    /// Noised counts of requests the input guard flagged or logged: schema, out of distribution.
    pub findings: [i64; 2],
    /// The features whose drift passed a threshold.
    pub drifted: Vec<String>,
}

/// A closed window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRecord {
    /// Closed windows in order, from 0 at the enclave's start.
    pub index: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Withheld>,
}

/// The privacy terms the monitoring endpoint states with its windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    pub mechanism: Mechanism,
    pub epsilon_per_window: f64,
    pub epsilon_per_day: f64,
    /// ε spent in the current UTC day (for the Gaussian: the ε whose ε²/2 is the ρ spent).
    pub epsilon_spent_today: f64,
    /// The unit protected: one row.
    pub unit: String,
    /// Counts one row changes (the L1 and squared-L2 sensitivity).
    pub sensitivity: u64,
}

/// `GET /v1/monitoring`: the terms and the windows after a given index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub privacy: Privacy,
    pub window: Window,
    pub min_window: u64,
    pub false_alarm_rate: f64,
    pub windows: Vec<WindowRecord>,
}

/// The per-day privacy budget: ε composes additively (discrete Laplace), ρ = ε²/2 does
/// (discrete Gaussian, zero-concentrated DP). Days are UTC.
#[derive(Clone, Debug)]
pub struct Accountant {
    cost: f64,
    cap: f64,
    gaussian: bool,
    day: u64,
    spent: f64,
}

impl Accountant {
    pub fn new(m: &Monitoring) -> Self {
        let gaussian = m.mechanism == Mechanism::DiscreteGaussian;
        let (cost, cap) = if gaussian {
            (m.epsilon_per_window.powi(2) / 2.0, m.epsilon_per_day.powi(2) / 2.0)
        } else {
            (m.epsilon_per_window, m.epsilon_per_day)
        };
        Accountant { cost, cap, gaussian, day: 0, spent: 0.0 }
    }

    /// Pays for one window at `now_ms`, or says the day's budget cannot.
    pub fn charge(&mut self, now_ms: u64) -> bool {
        self.roll(now_ms);
        // A relative slack for float sums: 24 windows of ε = 1/24 fit a day of ε = 1.
        if self.spent + self.cost > self.cap * (1.0 + 1e-9) {
            return false;
        }
        self.spent += self.cost;
        true
    }

    fn roll(&mut self, now_ms: u64) {
        let day = now_ms / 86_400_000;
        if day != self.day {
            self.day = day;
            self.spent = 0.0;
        }
    }

    pub fn spent_today(&mut self, now_ms: u64) -> f64 {
        self.roll(now_ms);
        if self.gaussian { (2.0 * self.spent).sqrt() } else { self.spent }
    }
}

/// What does not change while serving: the reference, the bins, the noise, the thresholds.
#[derive(Debug)]
pub struct Spec {
    config: Monitoring,
    names: Vec<String>,
    edges: Vec<Vec<f64>>,
    /// Where each feature's bins start in the flat count vector.
    offsets: Vec<usize>,
    /// The edges as f32 rounded up, transposed — edge k of every feature, then edge k + 1 — and
    /// padded with NaN (never ≤ anything) to the most edges a feature has, when no feature has more than
    /// [`LINEAR_EDGES`]. For an f32 input x and an edge e, `e ≤ x` in f64 exactly when
    /// `⌈e⌉_f32 ≤ x`, so counting them gives the reference's bin; counted a row at a time, edge
    /// by edge, the compares run down SIMD lanes with no branch on the data.
    edges32: Vec<f32>,
    /// The output's edges the same way (empty past [`LINEAR_EDGES`]).
    output32: Vec<f32>,
    /// Whether rows' top scores are counted (and released).
    scores: bool,
    bins: usize,
    reference: Vec<Vec<f64>>,
    reference_rows: u64,
    output_edges: Vec<f64>,
    noise: Noise,
    calibrations: Mutex<BTreeMap<u64, Arc<Thresholds>>>,
}

impl Spec {
    /// For a manifest with a `monitoring` section; `scores`: whether the model's first output
    /// is float (FP32) scores whose top value each row is counted.
    pub fn new(doc: &Document, scores: bool) -> Option<Arc<Spec>> {
        let config = doc.monitoring.clone()?;
        let names: Vec<String> = doc.input.features.iter().map(|f| f.name.clone()).collect();
        let edges: Vec<Vec<f64>> = doc.reference.histograms.iter().map(|h| h.edges.clone()).collect();
        let mut offsets = Vec::with_capacity(edges.len());
        let mut bins = 0;
        for e in &edges {
            offsets.push(bins);
            bins += e.len() + 1;
        }
        let reference = doc
            .reference
            .histograms
            .iter()
            .map(|h| drift::proportions(&h.counts.iter().map(|&c| c as f64).collect::<Vec<_>>()))
            .collect();
        let stride = edges.iter().map(Vec::len).max().unwrap_or(0);
        let edges32 = if stride <= LINEAR_EDGES {
            (0..stride)
                .flat_map(|k| edges.iter().map(move |e| e.get(k).map_or(f32::NAN, |&v| up_to_f32(v))))
                .collect()
        } else {
            Vec::new()
        };
        let output_edges = config.output_edges.clone().unwrap_or_else(default_output_edges);
        let output_stride = padded(output_edges.len());
        let output32 = match output_stride {
            0 => Vec::new(),
            w => output_edges
                .iter()
                .map(|&v| up_to_f32(v))
                .chain(core::iter::repeat(f32::NAN))
                .take(w)
                .collect(),
        };
        let sensitivity = names.len() as u64 + 1 + u64::from(scores);
        let noise = Noise::new(config.mechanism, config.epsilon_per_window, sensitivity);
        Some(Arc::new(Spec {
            config,
            names,
            edges,
            offsets,
            edges32,
            output32,
            scores,
            bins,
            reference,
            reference_rows: doc.reference.rows,
            output_edges,
            noise,
            calibrations: Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn config(&self) -> &Monitoring {
        &self.config
    }

    pub fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The counts one row changes: one per feature, its top score's, and one findings count.
    pub fn sensitivity(&self) -> u64 {
        self.names.len() as u64 + 1 + u64::from(self.scores)
    }

    /// The thresholds for a window of `rows` (cached; sizes of time windows are bucketed to two
    /// significant digits, which moves a threshold by well under its own sampling error).
    pub fn thresholds(&self, rows: u64) -> Arc<Thresholds> {
        let rows = bucket(rows.max(1));
        if let Some(t) = self.calibrations.lock().unwrap_or_else(|p| p.into_inner()).get(&rows) {
            return t.clone();
        }
        let t = Arc::new(drift::calibrate(
            &self.reference,
            self.reference_rows,
            rows,
            &self.noise,
            self.config.false_alarm_rate,
            drift::SIMULATIONS,
        ));
        let mut cache = self.calibrations.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CALIBRATIONS {
            cache.pop_first();
        }
        cache.insert(rows, t.clone());
        t
    }
}

/// Up to this many edges per feature, bins are found by counting edges (branch-free).
const LINEAR_EDGES: usize = 32;

/// The width edges are padded to (16 or 32), or 0: past [`LINEAR_EDGES`], a plain binary search.
fn padded(n: usize) -> usize {
    match n {
        0..=16 => 16,
        17..=LINEAR_EDGES => LINEAR_EDGES,
        _ => 0,
    }
}

/// The edges of one padded block at or below `x`: the bin of `x`, counted over a fixed width
/// (compares in SIMD lanes, no branch on the data).
#[inline]
fn bin_of(edges: &[f32], x: f32) -> usize {
    #[inline]
    fn count<const W: usize>(edges: &[f32], x: f32) -> usize {
        <&[f32; W]>::try_from(edges)
            .map_or(0, |e| e.iter().fold(0u32, |n, &v| n + u32::from(v <= x)) as usize)
    }
    if edges.len() == 16 { count::<16>(edges, x) } else { count::<LINEAR_EDGES>(edges, x) }
}

/// The smallest f32 at or above `v`.
fn up_to_f32(v: f64) -> f32 {
    let r = v as f32;
    if f64::from(r) < v { r.next_up() } else { r }
}

fn bucket(n: u64) -> u64 {
    let mut scale = 1;
    while n / scale >= 100 {
        scale *= 10;
    }
    n / scale * scale
}

/// A window's raw counts at its close, before noise: to be released off the request path with
/// [`Closed::release`]. Dropped unreleased if the budget refused it. Its `Debug` shows no count.
pub struct Closed {
    spec: Arc<Spec>,
    index: u64,
    start_ms: u64,
    end_ms: u64,
    /// True counts: features, then the output's, then the two findings.
    counts: Vec<u32>,
    paid: bool,
}

impl core::fmt::Debug for Closed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Closed").field("index", &self.index).field("paid", &self.paid).finish_non_exhaustive()
    }
}

impl Closed {
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Noises the counts (`bits`: the operating system's generator when serving), then computes
    /// the distances and thresholds from the noised counts alone.
    pub fn release(self, bits: &mut impl Bits) -> WindowRecord {
        let Closed { spec, index, start_ms, end_ms, counts, paid } = self;
        let record = |release, withheld| WindowRecord { index, start_ms, end_ms, release, withheld };
        if !paid {
            return record(None, Some(Withheld::PrivacyBudget));
        }
        let noised: Vec<i64> = counts.iter().map(|&c| i64::from(c) + spec.noise.sample(bits)).collect();
        drop(counts);
        let out_start = spec.bins;
        let out_end = out_start + spec.output_edges.len() + 1;
        let output_counts = noised[out_start..out_end].to_vec();
        let first = spec.edges.first().map_or(0, |e| e.len() + 1);
        let rows: i64 = noised[..first].iter().map(|&c| c.max(0)).sum();
        if rows < spec.config.min_window as i64 {
            return record(None, Some(Withheld::BelowMinWindow));
        }
        // A window of N requests has N rows (public); a time window's size is known noised only.
        let size = match spec.config.window {
            Window::Requests(n) => n,
            Window::Seconds(_) => rows as u64,
        };
        let thresholds = spec.thresholds(size);
        let mut features = Vec::with_capacity(spec.names.len());
        let mut drifted = Vec::new();
        for (f, name) in spec.names.iter().enumerate() {
            let c = &noised[spec.offsets[f]..spec.offsets[f] + spec.edges[f].len() + 1];
            let q = drift::proportions(&c.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let distances = drift::distances(&spec.reference[f], &q);
            let drift = thresholds.drifted(f, &distances);
            if drift {
                drifted.push(name.clone());
            }
            features.push(FeatureWindow {
                name: name.clone(),
                counts: c.to_vec(),
                distances,
                thresholds: thresholds.features[f],
                drift,
            });
        }
        let quantiles = Some([0.5, 0.9, 0.99].map(|q| quantile(&spec.output_edges, &output_counts, q)))
            .filter(|q| q.iter().all(|v| v.is_finite()));
        let output = spec.scores.then(|| OutputWindow {
            edges: spec.output_edges.clone(),
            counts: output_counts,
            quantiles,
        });
        let release = Release {
            rows,
            epsilon: spec.config.epsilon_per_window,
            mechanism: spec.config.mechanism,
            noise_scale: spec.noise.scale(),
            features,
            output,
            findings: [noised[out_end], noised[out_end + 1]],
            drifted,
        };
        record(Some(release), None)
    }
}

/// The `q` quantile of a histogram (bins below the first edge, between edges, above the last),
/// interpolated within its bin; the outer bins answer their edge.
pub fn quantile(edges: &[f64], counts: &[i64], q: f64) -> f64 {
    let total: f64 = counts.iter().map(|&c| c.max(0) as f64).sum();
    let (Some(&first), Some(&last)) = (edges.first(), edges.last()) else { return f64::NAN };
    if total <= 0.0 {
        return f64::NAN;
    }
    let target = q * total;
    let mut cum = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let c = c.max(0) as f64;
        if cum + c >= target && c > 0.0 {
            return match i {
                0 => first,
                i if i == edges.len() => last,
                i => edges[i - 1] + (edges[i] - edges[i - 1]) * ((target - cum) / c),
            };
        }
        cum += c;
    }
    last
}

/// The monitor of one served model: the open window's counts, the accountant and the windows
/// released so far. Its `Debug` shows no count of the open window.
pub struct Monitor {
    spec: Arc<Spec>,
    counts: Vec<u32>,
    /// Each feature's bin of the row being counted.
    scratch: Vec<u32>,
    rows: u64,
    start_ms: u64,
    /// For time windows: the Unix-aligned window the open one is.
    slot: u64,
    next_index: u64,
    accountant: Accountant,
    windows: VecDeque<WindowRecord>,
}

impl core::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Monitor")
            .field("next_index", &self.next_index)
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    pub fn new(spec: Arc<Spec>) -> Self {
        let accountant = Accountant::new(&spec.config);
        let len = spec.bins + spec.output_edges.len() + 1 + 2;
        Monitor {
            spec,
            counts: vec![0; len],
            scratch: Vec::new(),
            rows: 0,
            start_ms: 0,
            slot: 0,
            next_index: 0,
            accountant,
            windows: VecDeque::new(),
        }
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// Counts the request's `rows` (`features` values each), the top score of each row of
    /// `scores` (rows of `width`), and its guard finding. Returns the window this closed, if any.
    pub fn observe(
        &mut self,
        rows: &[f32],
        scores: &[f32],
        width: usize,
        finding: Option<Finding>,
        now_ms: u64,
    ) -> Option<Closed> {
        let mut closed = self.tick(now_ms);
        let spec = &*self.spec;
        let d = spec.names.len();
        if d == 0 {
            return closed;
        }
        if self.rows == 0 {
            self.start_ms = now_ms;
        }
        for row in rows.chunks_exact(d) {
            if spec.edges32.is_empty() {
                for (f, &x) in row.iter().enumerate() {
                    let x = f64::from(x);
                    let bin = spec.edges[f].partition_point(|&e| e <= x);
                    self.counts[spec.offsets[f] + bin] += 1;
                }
            } else {
                self.scratch.clear();
                self.scratch.resize(d, 0);
                for edge in spec.edges32.chunks_exact(d) {
                    for ((b, &x), &e) in self.scratch.iter_mut().zip(row).zip(edge) {
                        *b += u32::from(e <= x);
                    }
                }
                for (&bin, &offset) in self.scratch.iter().zip(&spec.offsets) {
                    self.counts[offset + bin as usize] += 1;
                }
            }
        }
        let out = spec.bins;
        let scores = if spec.scores { scores } else { &[] };
        for row in scores.chunks_exact(width.max(1)) {
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let bin = if spec.output32.is_empty() {
                spec.output_edges.partition_point(|&e| e <= f64::from(top))
            } else {
                bin_of(&spec.output32, top)
            };
            self.counts[out + bin] += 1;
        }
        if let Some(f) = finding {
            let at = out + spec.output_edges.len() + 1 + usize::from(f == Finding::OutOfDistribution);
            self.counts[at] += 1;
        }
        self.rows += (rows.len() / d) as u64;
        if let Window::Requests(n) = spec.config.window
            && self.rows >= n
        {
            closed = closed.or_else(|| Some(self.close(now_ms)));
        }
        closed
    }

    /// Closes the open time window if its time has passed (at a request, or when read).
    pub fn tick(&mut self, now_ms: u64) -> Option<Closed> {
        let Window::Seconds(s) = self.spec.config.window else { return None };
        let slot = now_ms / (s.saturating_mul(1000)).max(1);
        if slot == self.slot {
            return None;
        }
        let closed =
            if self.rows > 0 { Some(self.close(now_ms.min((self.slot + 1) * s * 1000))) } else { None };
        self.slot = slot;
        closed
    }

    fn close(&mut self, end_ms: u64) -> Closed {
        let len = self.counts.len();
        let counts = std::mem::replace(&mut self.counts, vec![0; len]);
        let paid = self.accountant.charge(end_ms);
        let closed = Closed {
            spec: self.spec.clone(),
            index: self.next_index,
            start_ms: self.start_ms,
            end_ms,
            counts,
            paid,
        };
        self.next_index += 1;
        self.rows = 0;
        closed
    }

    /// Keeps a released (or withheld) window for readers.
    pub fn publish(&mut self, record: WindowRecord) {
        if self.windows.len() == MAX_WINDOWS_KEPT {
            self.windows.pop_front();
        }
        // Releases finish off the request path, possibly out of order.
        let at = self.windows.partition_point(|w| w.index < record.index);
        self.windows.insert(at, record);
    }

    /// The report of windows with an index ≥ `since`.
    pub fn report(&mut self, since: u64, now_ms: u64) -> Report {
        let c = &self.spec.config;
        let privacy = Privacy {
            mechanism: c.mechanism,
            epsilon_per_window: c.epsilon_per_window,
            epsilon_per_day: c.epsilon_per_day,
            epsilon_spent_today: self.accountant.spent_today(now_ms),
            unit: "row".into(),
            sensitivity: self.spec.sensitivity(),
        };
        Report {
            privacy,
            window: c.window,
            min_window: c.min_window,
            false_alarm_rate: c.false_alarm_rate,
            windows: self.windows.iter().filter(|w| w.index >= since).cloned().collect(),
        }
    }

    /// Released and withheld windows so far.
    pub fn counts(&self) -> (u64, u64) {
        let released = self.windows.iter().filter(|w| w.release.is_some()).count() as u64;
        (released, self.windows.len() as u64 - released)
    }

    /// The latest released window.
    pub fn latest(&self) -> Option<&WindowRecord> {
        self.windows.iter().rev().find(|w| w.release.is_some())
    }
}

#[cfg(test)]
mod tests;
