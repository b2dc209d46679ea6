//! The guard manifest (format `nacre-guard-v1`): JSON the model owner writes (most of it with
//! `nacre guard fit`), sealed into the model's authenticated slot byte for byte. Its SHA-256 is
//! the `guard_digest` of the attested-TLS binding. Parsed strictly: unknown fields, unknown
//! versions, non-finite numbers, inconsistent dimensions and anything past the size limits are
//! refused, so that the enclave never serves under a guard it half understood.
//!
//! One format for the three guard parts. Part 1 (validation, input guard, output hardening)
//! reads `input`, `reference`, `self_tests`, `input_guard` and `output`; the later parts read
//! `budgets`, `extraction`, `explanation` and `monitoring`, which are parsed and checked here
//! already so that adding their enforcement changes no byte of the format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::linalg::{CovarianceError, Mahalanobis};

/// The version this code reads and writes.
pub const FORMAT: &str = "nacre-guard-v1";
/// The sealed format's limit on its guard slot (nacre-sealed `MAX_GUARD_MANIFEST_LEN`).
pub const MAX_LEN: usize = 8 << 20;
pub const MAX_FEATURES: usize = 4096;
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_ALLOWED_VALUES: usize = 1024;
pub const MAX_EDGES: usize = 1024;
pub const MAX_SELF_TESTS: usize = 256;
/// Elements of one self-test tensor.
pub const MAX_TENSOR_LEN: usize = 1 << 20;
pub const MAX_BACKGROUND_ROWS: usize = 1024;
/// The PRADA history one client keeps (queries); the memory bound of part 2 follows from it.
/// Shapiro–Wilk's W (Royston's approximation) holds up to this many values.
pub const MAX_HISTORY: u32 = crate::shapiro::MAX_N as u32;
/// Longest throttle interval of an alarmed client, seconds.
pub const MAX_THROTTLE_SECONDS: u32 = 86_400;

/// Why a manifest is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the guard manifest is {len} bytes, more than {MAX_LEN}")]
    TooLarge { len: usize },
    #[error("the guard manifest is not valid JSON of format {FORMAT}: {0}")]
    Malformed(String),
    #[error("the guard manifest's format is {0:?}; this build reads {FORMAT}")]
    UnsupportedFormat(String),
    /// A value out of its range, a dimension that does not match another, a limit exceeded.
    #[error("guard manifest: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("guard manifest: reference.covariance: {0}")]
    Covariance(#[from] CovarianceError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field: field.into(), reason: reason.into() }
}

/// What happens to a request the input guard objects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Counted in the guard's metrics only.
    Log,
    /// Answered, with the objection in the response's parameters.
    Flag,
    /// Refused (422) before inference.
    Reject,
}

/// One input feature: the position in the model's input row is its index in `features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// A categorical feature's values (exact match); exclusive with `min`/`max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<f64>>,
}

/// The model input the guard reads: a `[batch, features]` (or `[features]`) float tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSchema {
    pub tensor: String,
    pub features: Vec<Feature>,
}

/// A feature's reference histogram: `counts[0]` below `edges[0]`, `counts[i]` in
/// `[edges[i-1], edges[i])`, the last at or above the last edge, so every value has a bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Statistics of the training data (`nacre guard fit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Rows the statistics were computed from.
    pub rows: u64,
    /// One per feature.
    pub histograms: Vec<Histogram>,
    pub mean: Vec<f64>,
    /// Row-major, features × features, positive definite.
    pub covariance: Vec<Vec<f64>>,
}

/// A tensor written out: its shape and its elements in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorValue {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// One self-test: the model's inputs by name, and the outputs the owner's own runtime gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    pub inputs: BTreeMap<String, TensorValue>,
    pub outputs: BTreeMap<String, TensorValue>,
}

/// Self-tests run in the enclave after unsealing: a model that fails one never serves. An
/// output passes when `|got − expected| ≤ abs + rel·|expected|` element by element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTests {
    pub abs_tolerance: f64,
    pub rel_tolerance: f64,
    /// Where the expected outputs came from (e.g. `onnxruntime 1.22.0`, or the owner's file):
    /// not from tract, which is what they test.
    pub expected_from: String,
    pub vectors: Vec<SelfTest>,
}

/// The out-of-distribution check: the squared Mahalanobis distance of a row from the
/// reference mean, against a threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ood {
    pub threshold: f64,
    pub action: Action,
}

/// The per-request input guard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputGuard {
    /// A value outside its feature's range or allowed set, or not finite.
    pub schema: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<Ood>,
}

/// What leaves the enclave of each output, from least to most hardened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputPolicy {
    Full,
    /// Every output value rounded to `decimals` decimal places (0–9).
    Round {
        decimals: u8,
    },
    /// Per row, the `k` largest scores; the others are sent as 0.
    TopK {
        k: u32,
    },
    /// Per row, the label only: one-hot at the largest score (a single score: 0 or 1 at 0.5).
    Label,
}

impl OutputPolicy {
    /// A total order of hardening, for client policies that require a minimum: full < round
    /// (fewer decimals are harder) < top-k (smaller k is harder) < label.
    pub fn hardening(&self) -> (u8, u32) {
        match *self {
            OutputPolicy::Full => (0, 0),
            OutputPolicy::Round { decimals } => (1, 10 - u32::from(decimals)),
            OutputPolicy::TopK { k } => (2, u32::MAX - k),
            OutputPolicy::Label => (3, 0),
        }
    }

    /// At least as hardened as `min`.
    pub fn at_least(&self, min: &OutputPolicy) -> bool {
        self.hardening() >= min.hardening()
    }
}

/// `full`, `round:N`, `top-k:K` or `label`: how the CLI and client policies write a policy.
impl core::str::FromStr for OutputPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        fn number<T: core::str::FromStr>(v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{v:?} is not a number"))
        }
        let policy = match s.split_once(':') {
            None if s == "full" => OutputPolicy::Full,
            None if s == "label" => OutputPolicy::Label,
            Some(("round", n)) => OutputPolicy::Round { decimals: number(n)? },
            Some(("top-k", k)) => OutputPolicy::TopK { k: number(k)? },
            _ => return Err(format!("{s:?}: an output policy is full, round:N, top-k:K or label")),
        };
        match policy {
            OutputPolicy::Round { decimals } if decimals > 9 => Err("round:N takes 0-9 decimals".into()),
            OutputPolicy::TopK { k: 0 } => Err("top-k:K takes K ≥ 1".into()),
            p => Ok(p),
        }
    }
}

impl core::fmt::Display for OutputPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OutputPolicy::Full => f.write_str("full"),
            OutputPolicy::Round { decimals } => write!(f, "rounded to {decimals} decimals"),
            OutputPolicy::TopK { k } => write!(f, "top-{k}"),
            OutputPolicy::Label => f.write_str("label only"),
        }
    }
}

/// Per-client query budgets (part 2). Budgets are kept per bearer token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Model evaluations per window (an explanation costs its evaluations).
    pub queries: u64,
    pub window_seconds: u64,
}

/// What an extraction alarm does to that client (part 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractionAction {
    Throttle,
    Refuse,
}

/// The PRADA detector (part 2): per client, the minimum L2 distance of each query to earlier
/// queries of the same predicted class; alarm when the Shapiro–Wilk W of that series < `delta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extraction {
    pub delta: f64,
    /// Queries kept per client (the oldest go first).
    pub history: u32,
    /// Distances needed before the test runs (Shapiro–Wilk needs 3 at least).
    pub min_queries: u32,
    pub action: ExtractionAction,
    /// Under `throttle`, an alarmed client gets one request per this many seconds (default 10)
    /// until its series looks natural again.
    #[serde(default = "throttle_seconds")]
    pub throttle_seconds: u32,
}

fn throttle_seconds() -> u32 {
    10
}

/// KernelSHAP inside the enclave (part 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explanation {
    pub max_coalitions: u32,
    pub deadline_ms: u32,
    /// Background rows, each of the input's features.
    pub background: Vec<Vec<f64>>,
}

/// How monitoring windows close (part 3): after a number of requests, or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    Requests(u64),
    Seconds(u64),
}

/// The discrete noise for released aggregates (part 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    DiscreteLaplace,
    DiscreteGaussian,
}

/// Private drift monitoring (part 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    pub window: Window,
    /// A window with fewer requests is not released.
    pub min_window: u64,
    pub epsilon_per_window: f64,
    pub epsilon_per_day: f64,
    pub mechanism: Mechanism,
    /// The per-window false-alarm rate drift thresholds are calibrated to.
    pub false_alarm_rate: f64,
    /// Bin edges for each row's top score of the first output (released as a noised histogram
    /// and its quantiles); 0.05, 0.10, …, 0.95 when absent (scores in [0, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_edges: Option<Vec<f64>>,
}

/// The privacy parameters' range: ε below 0.001 would need noise past any window's counts, above
/// 10 per window it protects nothing; the noise is drawn at 1e-4 resolution (rounded down).
pub const MIN_EPSILON: f64 = 0.001;
pub const MAX_EPSILON_PER_WINDOW: f64 = 10.0;

/// The manifest as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    pub input: InputSchema,
    pub reference: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_tests: Option<SelfTests>,
    pub input_guard: InputGuard,
    pub output: OutputPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction: Option<Extraction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
}

/// A manifest that parsed and passed every check that needs no model; only [`Manifest::parse`]
/// makes one. `nacre guard check` and the enclave then check it against the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    doc: Document,
    ood: Mahalanobis,
}

impl Manifest {
    /// Parses and checks `bytes` (the sealed slot's contents, or the owner's file).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_LEN {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        // The format first, so that a newer manifest is named as such rather than as a
        // document with unknown fields.
        #[derive(Deserialize)]
        struct Version {
            format: String,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if version.format != FORMAT {
            return Err(ManifestError::UnsupportedFormat(version.format));
        }
        let doc: Document =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        Self::from_document(doc)
    }

    /// Checks a document built in memory (`nacre guard fit`), as `parse` does.
    pub fn from_document(doc: Document) -> Result<Self, ManifestError> {
        if doc.format != FORMAT {
            return Err(ManifestError::UnsupportedFormat(doc.format));
        }
        check(&doc)?;
        let ood = Mahalanobis::new(&doc.reference.mean, &doc.reference.covariance)?;
        Ok(Manifest { doc, ood })
    }

    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// The features' count: the width of the model input's rows.
    pub fn features(&self) -> usize {
        self.doc.input.features.len()
    }

    /// The out-of-distribution metric fitted to the reference.
    pub fn mahalanobis(&self) -> &Mahalanobis {
        &self.ood
    }

    /// Pretty JSON (what `nacre guard fit` writes; any bytes that parse are as good).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.doc).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn finite(field: &str, v: f64) -> Result<(), ManifestError> {
    if v.is_finite() { Ok(()) } else { Err(invalid(field, "not a finite number")) }
}

fn name(field: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
        return Err(invalid(field, format!("a name must be 1-{MAX_NAME_LEN} printable characters")));
    }
    Ok(())
}

fn check(doc: &Document) -> Result<(), ManifestError> {
    let d = doc.input.features.len();
    name("input.tensor", &doc.input.tensor)?;
    if d == 0 || d > MAX_FEATURES {
        return Err(invalid("input.features", format!("{d} features; 1-{MAX_FEATURES} are allowed")));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, f) in doc.input.features.iter().enumerate() {
        let at = format!("input.features[{i}]");
        name(&at, &f.name)?;
        if !names.insert(f.name.as_str()) {
            return Err(invalid(at, format!("{:?} is named twice", f.name)));
        }
        for v in [f.min, f.max].into_iter().flatten() {
            finite(&at, v)?;
        }
        if let (Some(lo), Some(hi)) = (f.min, f.max)
            && lo > hi
        {
            return Err(invalid(at, format!("min {lo} is above max {hi}")));
        }
        if let Some(allowed) = &f.allowed {
            if f.min.is_some() || f.max.is_some() {
                return Err(invalid(at, "give `allowed` or a range, not both"));
            }
            if allowed.is_empty() || allowed.len() > MAX_ALLOWED_VALUES {
                return Err(invalid(at, format!("1-{MAX_ALLOWED_VALUES} allowed values")));
            }
            for &v in allowed {
                finite(&at, v)?;
            }
        }
    }

    let r = &doc.reference;
    if r.rows < 2 {
        return Err(invalid("reference.rows", "statistics need 2 rows at least"));
    }
    if r.histograms.len() != d {
        return Err(invalid(
            "reference.histograms",
            format!("{} histograms for {d} features", r.histograms.len()),
        ));
    }
    for (i, h) in r.histograms.iter().enumerate() {
        let at = format!("reference.histograms[{i}]");
        if h.edges.is_empty() || h.edges.len() > MAX_EDGES {
            return Err(invalid(at, format!("1-{MAX_EDGES} edges")));
        }
        for &e in &h.edges {
            finite(&at, e)?;
        }
        if h.edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(at, "edges must increase strictly"));
        }
        if h.counts.len() != h.edges.len() + 1 {
            return Err(invalid(
                at,
                format!("{} counts for {} edges (one more is needed)", h.counts.len(), h.edges.len()),
            ));
        }
        let total = h.counts.iter().try_fold(0u64, |a, &c| a.checked_add(c));
        if total != Some(r.rows) {
            return Err(invalid(
                at,
                format!("the counts add up to {total:?}, not reference.rows ({})", r.rows),
            ));
        }
    }
    if r.mean.len() != d {
        return Err(invalid("reference.mean", format!("{} entries for {d} features", r.mean.len())));
    }

    if let Some(t) = &doc.self_tests {
        for (v, field) in
            [(t.abs_tolerance, "self_tests.abs_tolerance"), (t.rel_tolerance, "self_tests.rel_tolerance")]
        {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(field, "a tolerance is a finite number ≥ 0"));
            }
        }
        name("self_tests.expected_from", &t.expected_from)?;
        if t.vectors.is_empty() || t.vectors.len() > MAX_SELF_TESTS {
            return Err(invalid("self_tests.vectors", format!("1-{MAX_SELF_TESTS} vectors")));
        }
        for (i, v) in t.vectors.iter().enumerate() {
            if v.inputs.is_empty() || v.outputs.is_empty() {
                return Err(invalid(
                    format!("self_tests.vectors[{i}]"),
                    "inputs and outputs are both needed",
                ));
            }
            for (which, map) in [("inputs", &v.inputs), ("outputs", &v.outputs)] {
                for (n, tensor) in map {
                    let at = format!("self_tests.vectors[{i}].{which}.{n}");
                    name(&at, n)?;
                    check_tensor(&at, tensor)?;
                }
            }
        }
    }

    let g = &doc.input_guard;
    if let Some(o) = &g.ood
        && (!o.threshold.is_finite() || o.threshold <= 0.0)
    {
        return Err(invalid("input_guard.ood.threshold", "a squared distance > 0"));
    }
    match doc.output {
        OutputPolicy::Round { decimals } if decimals > 9 => {
            return Err(invalid("output.decimals", "0-9 decimals"));
        }
        OutputPolicy::TopK { k: 0 } => return Err(invalid("output.k", "k ≥ 1")),
        _ => {}
    }

    if let Some(b) = &doc.budgets
        && (b.queries == 0 || b.window_seconds == 0 || b.window_seconds > 31 * 86_400)
    {
        return Err(invalid("budgets", "queries ≥ 1 per window of 1 s to 31 days"));
    }
    if let Some(e) = &doc.extraction {
        if !(e.delta > 0.0 && e.delta < 1.0) {
            return Err(invalid("extraction.delta", "a Shapiro–Wilk W threshold in (0, 1)"));
        }
        if !(3..=MAX_HISTORY).contains(&e.min_queries) || e.history < e.min_queries || e.history > MAX_HISTORY
        {
            return Err(invalid(
                "extraction",
                format!("3 ≤ min_queries ≤ history ≤ {MAX_HISTORY} (Shapiro–Wilk needs 3 points)"),
            ));
        }
        if !(1..=MAX_THROTTLE_SECONDS).contains(&e.throttle_seconds) {
            return Err(invalid("extraction.throttle_seconds", format!("1 to {MAX_THROTTLE_SECONDS}")));
        }
    }
    if let Some(x) = &doc.explanation {
        if !(16..=1 << 20).contains(&x.max_coalitions) {
            return Err(invalid("explanation.max_coalitions", "16 to 1,048,576"));
        }
        if !(1..=600_000).contains(&x.deadline_ms) {
            return Err(invalid("explanation.deadline_ms", "1 ms to 10 min"));
        }
        // An explanation sums to f(x) − base: under top-k or label it would give away the
        // scores the policy hides.
        if matches!(doc.output, OutputPolicy::TopK { .. } | OutputPolicy::Label) {
            return Err(invalid(
                "explanation",
                "explanations reveal the model's scores: they need the output policy full or round",
            ));
        }
        if x.background.is_empty() || x.background.len() > MAX_BACKGROUND_ROWS {
            return Err(invalid("explanation.background", format!("1-{MAX_BACKGROUND_ROWS} rows")));
        }
        for (i, row) in x.background.iter().enumerate() {
            let at = format!("explanation.background[{i}]");
            if row.len() != d {
                return Err(invalid(at, format!("{} values for {d} features", row.len())));
            }
            for &v in row {
                finite(&at, v)?;
            }
        }
    }
    if let Some(m) = &doc.monitoring {
        match m.window {
            Window::Requests(0) | Window::Seconds(0) => return Err(invalid("monitoring.window", "not 0")),
            Window::Seconds(s) if s > 31 * 86_400 => {
                return Err(invalid("monitoring.window", "at most 31 days"));
            }
            _ => {}
        }
        if m.min_window == 0 {
            return Err(invalid("monitoring.min_window", "1 request at least"));
        }
        let eps = |v: f64| v.is_finite() && v >= MIN_EPSILON;
        if !eps(m.epsilon_per_window)
            || !eps(m.epsilon_per_day)
            || m.epsilon_per_window > m.epsilon_per_day
            || m.epsilon_per_window > MAX_EPSILON_PER_WINDOW
        {
            return Err(invalid(
                "monitoring",
                format!(
                    "{MIN_EPSILON} ≤ epsilon_per_window ≤ min({MAX_EPSILON_PER_WINDOW}, epsilon_per_day), both finite"
                ),
            ));
        }
        if let Some(edges) = &m.output_edges {
            if edges.is_empty() || edges.len() > MAX_EDGES {
                return Err(invalid("monitoring.output_edges", format!("1 to {MAX_EDGES} edges")));
            }
            if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid("monitoring.output_edges", "finite and strictly increasing"));
            }
        }
        if !(m.false_alarm_rate > 0.0 && m.false_alarm_rate < 0.5) {
            return Err(invalid("monitoring.false_alarm_rate", "in (0, 0.5)"));
        }
    }
    Ok(())
}

fn check_tensor(at: &str, t: &TensorValue) -> Result<(), ManifestError> {
    let len = t.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).filter(|&n| n <= MAX_TENSOR_LEN);
    match len {
        Some(n) if n == t.data.len() => {}
        Some(n) => {
            return Err(invalid(
                at,
                format!("shape {:?} holds {n} values, data has {}", t.shape, t.data.len()),
            ));
        }
        None => return Err(invalid(at, format!("more than {MAX_TENSOR_LEN} values"))),
    }
    if t.shape.len() > 8 {
        return Err(invalid(at, "rank 8 at most"));
    }
    for &v in &t.data {
        finite(at, v)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A valid two-feature manifest with every section.
    pub(crate) fn sample() -> Document {
        let tensor = |shape: Vec<usize>, data: Vec<f64>| TensorValue { shape, data };
        Document {
            format: FORMAT.into(),
            input: InputSchema {
                tensor: "input".into(),
                features: vec![
                    Feature { name: "amount".into(), min: Some(0.0), max: Some(1e6), allowed: None },
                    Feature { name: "kind".into(), min: None, max: None, allowed: Some(vec![0.0, 1.0, 2.0]) },
                ],
            },
            reference: Reference {
                rows: 10,
                histograms: vec![
                    Histogram { edges: vec![0.0, 10.0], counts: vec![0, 7, 3] },
                    Histogram { edges: vec![0.5, 1.5], counts: vec![5, 3, 2] },
                ],
                mean: vec![5.0, 0.7],
                covariance: vec![vec![9.0, 0.3], vec![0.3, 0.6]],
            },
            self_tests: Some(SelfTests {
                abs_tolerance: 1e-5,
                rel_tolerance: 1e-4,
                expected_from: "onnxruntime 1.22.0".into(),
                vectors: vec![SelfTest {
                    inputs: [("input".to_owned(), tensor(vec![1, 2], vec![3.0, 1.0]))].into(),
                    outputs: [("output".to_owned(), tensor(vec![1, 2], vec![0.9, 0.1]))].into(),
                }],
            }),
            input_guard: InputGuard {
                schema: Action::Reject,
                ood: Some(Ood { threshold: 20.0, action: Action::Flag }),
            },
            output: OutputPolicy::Round { decimals: 3 },
            budgets: Some(Budgets { queries: 1000, window_seconds: 3600 }),
            extraction: Some(Extraction {
                delta: 0.9,
                history: 1000,
                min_queries: 20,
                action: ExtractionAction::Throttle,
                throttle_seconds: 10,
            }),
            explanation: Some(Explanation {
                max_coalitions: 2048,
                deadline_ms: 2000,
                background: vec![vec![5.0, 1.0]],
            }),
            monitoring: Some(Monitoring {
                window: Window::Requests(10_000),
                min_window: 1000,
                epsilon_per_window: 1.0,
                epsilon_per_day: 10.0,
                mechanism: Mechanism::DiscreteLaplace,
                false_alarm_rate: 0.01,
                output_edges: None,
            }),
        }
    }

    fn json(doc: &Document) -> Vec<u8> {
        serde_json::to_vec(doc).unwrap()
    }

    #[test]
    fn a_full_manifest_round_trips_and_a_minimal_one_parses() {
        let m = Manifest::parse(&json(&sample())).unwrap();
        assert_eq!(m.document(), &sample());
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
        let minimal = Document {
            self_tests: None,
            budgets: None,
            extraction: None,
            explanation: None,
            monitoring: None,
            ..sample()
        };
        assert_eq!(Manifest::parse(&json(&minimal)).unwrap().features(), 2);
    }

    #[test]
    fn malformed_unknown_and_oversized_manifests_are_refused() {
        assert!(matches!(Manifest::parse(b"{"), Err(ManifestError::Malformed(_))));
        let mut v: serde_json::Value = serde_json::from_slice(&json(&sample())).unwrap();
        v["format"] = "nacre-guard-v2".into();
        assert_eq!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::UnsupportedFormat("nacre-guard-v2".into()))
        );
        let mut v: serde_json::Value = serde_json::from_slice(&json(&sample())).unwrap();
        v["input_guard"]["surprise"] = true.into();
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Malformed(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&json(&sample())).unwrap();
        v["output"] = serde_json::json!({"policy": "round", "decimals": 3, "extra": 1});
        assert!(matches!(
            Manifest::parse(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Malformed(_))
        ));
        let big = vec![b' '; MAX_LEN + 1];
        assert_eq!(Manifest::parse(&big), Err(ManifestError::TooLarge { len: MAX_LEN + 1 }));
    }

    #[test]
    fn every_inconsistency_is_named() {
        let field_of = |edit: &dyn Fn(&mut Document)| {
            let mut d = sample();
            edit(&mut d);
            match Manifest::parse(&json(&d)) {
                Err(ManifestError::Invalid { field, .. }) => field,
                Err(ManifestError::Covariance(e)) => format!("covariance: {e}"),
                other => panic!("{other:?}"),
            }
        };
        type Edit = Box<dyn Fn(&mut Document)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("input.features", Box::new(|d| d.input.features.clear())),
            ("input.features[1]", Box::new(|d| d.input.features[1].name = "amount".into())),
            ("input.features[0]", Box::new(|d| d.input.features[0].min = Some(2e6))),
            ("input.features[1]", Box::new(|d| d.input.features[1].min = Some(0.0))),
            (
                "reference.histograms",
                Box::new(|d| {
                    d.reference.histograms.pop();
                }),
            ),
            ("reference.histograms[0]", Box::new(|d| d.reference.histograms[0].edges = vec![10.0, 0.0])),
            ("reference.histograms[0]", Box::new(|d| d.reference.histograms[0].counts = vec![0, 7])),
            ("reference.histograms[1]", Box::new(|d| d.reference.histograms[1].counts[0] += 1)),
            ("reference.mean", Box::new(|d| d.reference.mean.push(0.0))),
            ("covariance: ", Box::new(|d| d.reference.covariance = vec![vec![1.0, 1.0], vec![1.0, 1.0]])),
            (
                "self_tests.vectors[0].inputs.input",
                Box::new(|d| {
                    d.self_tests.as_mut().unwrap().vectors[0].inputs.get_mut("input").unwrap().shape =
                        vec![1, 3];
                }),
            ),
            ("self_tests.abs_tolerance", Box::new(|d| d.self_tests.as_mut().unwrap().abs_tolerance = -1.0)),
            ("input_guard.ood.threshold", Box::new(|d| d.input_guard.ood.as_mut().unwrap().threshold = 0.0)),
            ("output.decimals", Box::new(|d| d.output = OutputPolicy::Round { decimals: 10 })),
            ("output.k", Box::new(|d| d.output = OutputPolicy::TopK { k: 0 })),
            ("budgets", Box::new(|d| d.budgets.as_mut().unwrap().queries = 0)),
            ("extraction.delta", Box::new(|d| d.extraction.as_mut().unwrap().delta = 1.0)),
            ("extraction", Box::new(|d| d.extraction.as_mut().unwrap().min_queries = 2)),
            ("extraction", Box::new(|d| d.extraction.as_mut().unwrap().history = MAX_HISTORY + 1)),
            (
                "extraction.throttle_seconds",
                Box::new(|d| d.extraction.as_mut().unwrap().throttle_seconds = 0),
            ),
            ("explanation", Box::new(|d| d.output = OutputPolicy::Label)),
            (
                "explanation.background[0]",
                Box::new(|d| d.explanation.as_mut().unwrap().background[0].push(1.0)),
            ),
            ("monitoring", Box::new(|d| d.monitoring.as_mut().unwrap().epsilon_per_window = 11.0)),
            (
                "monitoring.false_alarm_rate",
                Box::new(|d| d.monitoring.as_mut().unwrap().false_alarm_rate = 0.0),
            ),
        ];
        for (expected, edit) in &cases {
            let got = field_of(edit.as_ref());
            assert!(got.starts_with(expected), "expected {expected}, got {got}");
        }
    }

    #[test]
    fn hardening_is_ordered() {
        use OutputPolicy::*;
        let order = [Full, Round { decimals: 6 }, Round { decimals: 2 }, TopK { k: 5 }, TopK { k: 1 }, Label];
        let written = ["full", "round:6", "round:2", "top-k:5", "top-k:1", "label"];
        for (p, w) in order.iter().zip(written) {
            assert_eq!(w.parse::<OutputPolicy>().as_ref(), Ok(p));
        }
        for bad in ["", "round", "round:10", "top-k:0", "top-k:-1", "labels", "full:1"] {
            assert!(bad.parse::<OutputPolicy>().is_err(), "{bad}");
        }
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(a.at_least(b), i >= j, "{a} vs {b}");
            }
        }
    }
}
