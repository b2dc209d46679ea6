//! `nacre guard fit|check|score|replay`: the model owner's guard manifest (docs/guard-manifest.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nacre_guard::data::{Data, DataError};
use nacre_guard::fit::{Counts, FitError, Moments};
use nacre_guard::manifest::{
    Action, Document, FORMAT, Feature, InputGuard, InputSchema, Ood, OutputPolicy, Reference, SelfTests,
};
use nacre_guard::{Manifest, ManifestError};
use nacre_model::Model;

#[derive(Subcommand, Debug)]
pub enum GuardCmd {
    /// Fit a guard manifest to a model and its training data: the input schema, reference
    /// statistics (histograms, mean, covariance) and the out-of-distribution threshold; the
    /// self-tests come from the owner's runtime (--self-tests).
    Fit(FitArgs),
    /// Check a guard manifest against its model: format, dimensions, self-test shapes, and the
    /// self-tests themselves, run on tract. Exit 1 when it does not fit.
    Check(CheckArgs),
    /// Run the input guard over rows (CSV or .npy), each as a one-row request: one JSON line per
    /// row (its finding, the squared distance, the action), then the totals on stderr. The same
    /// code the enclave runs; for evaluating a manifest before sealing it.
    Score(ScoreArgs),
    /// Replay a query stream (CSV or .npy rows) as one client against the manifest's
    /// extraction detector: each row runs on tract for its predicted class, as in the enclave.
    /// Prints one JSON line: rows, the first alarm's index (null if none), alarms, lowest W.
    /// For tuning `extraction.delta` before sealing, and for evaluating it (scripts/eval-extraction.py).
    Replay(ReplayArgs),
    /// Simulate the private drift monitor in process: the manifest's reference, rows drawn from
    /// a data file, a mean shift of one feature. Prints, per ε and window size, the false-alarm
    /// rate and the detection delay (scripts/eval-monitoring.sh).
    MonitorEval(crate::monitor_eval::MonitorEvalArgs),
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The guard manifest (with an `extraction` section).
    manifest: PathBuf,
    /// The ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// The queries, rows of the manifest's features.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The guard manifest.
    manifest: PathBuf,
    /// Rows of the manifest's features.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args, Debug)]
pub struct FitArgs {
    /// The ONNX model the manifest guards.
    model: PathBuf,
    /// Training rows: CSV (an optional header row of feature names) or .npy (2-D float32/64).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the manifest (JSON).
    #[arg(long)]
    out: PathBuf,
    /// The guarded input (default: the model's first input).
    #[arg(long)]
    input: Option<String>,
    /// Self-test vectors with the owner's runtime's outputs, as `scripts/models.py selftests`
    /// writes them ({"expected_from": …, "vectors": [{"inputs": …, "outputs": …}]}).
    #[arg(long)]
    self_tests: Option<PathBuf>,
    #[arg(long, default_value_t = 1e-5)]
    abs_tolerance: f64,
    #[arg(long, default_value_t = 1e-4)]
    rel_tolerance: f64,
    /// Histogram bins per feature.
    #[arg(long, default_value_t = 10)]
    bins: usize,
    /// The share of training-like rows the out-of-distribution check may flag.
    #[arg(long, default_value_t = 0.001)]
    ood_rate: f64,
    /// What an out-of-distribution request gets: log, flag or reject.
    #[arg(long, default_value = "flag", value_parser = parse_action)]
    ood_action: Action,
    /// What a request outside the schema (a value outside its training range, not finite) gets.
    #[arg(long, default_value = "reject", value_parser = parse_action)]
    schema_action: Action,
    /// The output policy: full, round:N, top-k:K or label.
    #[arg(long, default_value = "full")]
    output: OutputPolicy,
    /// Each feature's allowed range: the training range widened by this share of its span on
    /// both sides (new data rarely stays inside the training extremes).
    #[arg(long, default_value_t = 0.1)]
    range_margin: f64,
    /// Rows kept for quantiles and the threshold.
    #[arg(long, default_value_t = 100_000)]
    sample: usize,
    /// Add the PRADA extraction detector with this history per client (e.g. 500): its `delta`
    /// is calibrated on the training rows, replayed as clients (the lowest W they reach, times
    /// --extraction-margin), so that traffic like the training data raises no alarm.
    #[arg(long)]
    extraction_history: Option<u32>,
    /// What an alarm does: throttle or refuse.
    #[arg(long, default_value = "throttle", value_parser = parse_extraction_action)]
    extraction_action: nacre_guard::manifest::ExtractionAction,
    /// delta = this × the lowest W of the training replay (below 1: a margin for natural
    /// traffic the training data does not show).
    #[arg(long, default_value_t = 0.9)]
    extraction_margin: f64,
}

fn parse_extraction_action(s: &str) -> Result<nacre_guard::manifest::ExtractionAction, String> {
    match s {
        "throttle" => Ok(nacre_guard::manifest::ExtractionAction::Throttle),
        "refuse" => Ok(nacre_guard::manifest::ExtractionAction::Refuse),
        _ => Err(format!("{s:?}: throttle or refuse")),
    }
}

/// The classes the model predicts for `rows` (its first output, as the enclave's detector reads
/// it), in batches where the model has a batch dimension.
fn predicted_classes(model: &Model, rows: &[Vec<f32>]) -> Result<Vec<i64>> {
    let d = rows.first().map_or(0, Vec::len);
    let batch = if model.has_batch_dimension() { 1024 } else { 1 };
    let mut classes = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch) {
        let data = chunk.iter().flatten().copied().collect();
        let x =
            nacre_model::Tensor { shape: vec![chunk.len(), d], data: nacre_model::TensorData::Fp32(data) };
        let out = model.run(vec![x])?;
        let Some(nacre_model::TensorData::Fp32(v)) = out.first().map(|t| &t.data) else {
            bail!("the model's first output is not float32: the extraction detector reads classes from it");
        };
        let width = (v.len() / chunk.len()).max(1);
        classes.extend(v.chunks_exact(width).map(nacre_guard::prada::predicted_class));
    }
    Ok(classes)
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The guard manifest.
    manifest: PathBuf,
    /// The ONNX model it guards.
    #[arg(long)]
    model: PathBuf,
}

fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "log" => Ok(Action::Log),
        "flag" => Ok(Action::Flag),
        "reject" => Ok(Action::Reject),
        _ => Err("log, flag or reject".into()),
    }
}

fn load_model(path: &Path) -> Result<Model> {
    let onnx = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // The owner's own tool on the owner's own model: tract's whole message is theirs to see.
    Model::load(&onnx).map_err(|e| anyhow::anyhow!("{}: {e}: {}", path.display(), e.tract_detail()))
}

/// The two passes' error: the data's, or the fit's.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Fit(#[from] FitError),
    #[error("the model: {0}")]
    Model(String),
}

pub fn guard(cmd: GuardCmd) -> Result<ExitCode> {
    match cmd {
        GuardCmd::Fit(args) => fit(args),
        GuardCmd::Check(args) => check(args),
        GuardCmd::Score(args) => score(args),
        GuardCmd::Replay(args) => replay(args),
        GuardCmd::MonitorEval(args) => crate::monitor_eval::monitor_eval(args),
    }
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {eta}") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

fn fit(a: FitArgs) -> Result<ExitCode> {
    if !(0.0..1.0).contains(&a.ood_rate) {
        bail!("--ood-rate is a share in [0, 1)");
    }
    if !(a.range_margin.is_finite() && a.range_margin >= 0.0) {
        bail!("--range-margin is a share ≥ 0");
    }
    if !(2..=1024).contains(&a.bins) {
        bail!("--bins is 2 to 1024");
    }
    let model = load_model(&a.model)?;
    let (inputs, _) = model.signature()?;
    let tensor = match &a.input {
        Some(name) => name.clone(),
        None => inputs.first().map(|i| i.name.clone()).context("the model has no inputs")?,
    };
    let data = Data::open(&a.data).with_context(|| a.data.display().to_string())?;
    let d = data.shape().columns;
    if d == 0 || d > nacre_guard::manifest::MAX_FEATURES {
        bail!("{}: {d} columns", a.data.display());
    }

    let bar = progress(data.len(), "statistics");
    let mut moments = Moments::new(d, a.sample, 0x6e61_6372_6500);
    data.rows(|row, at| -> Result<(), PassError> {
        bar.set_position(at);
        Ok(moments.push(row)?)
    })
    .with_context(|| a.data.display().to_string())?;
    bar.finish_and_clear();
    let fitted = moments.finish()?;

    let bar = progress(data.len(), "histograms");
    let mut counts = Counts::new((0..d).map(|f| fitted.edges(f, a.bins)).collect());
    data.rows(|row, at| -> Result<(), PassError> {
        bar.set_position(at);
        counts.push(row);
        Ok(())
    })
    .with_context(|| a.data.display().to_string())?;
    bar.finish_and_clear();

    let names = data.shape().names.clone().unwrap_or_else(|| (0..d).map(|i| format!("f{i}")).collect());
    let features = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let margin = a.range_margin * (fitted.max[i] - fitted.min[i]);
            Feature {
                name,
                min: Some(fitted.min[i] - margin),
                max: Some(fitted.max[i] + margin),
                allowed: None,
            }
        })
        .collect();
    let self_tests = match &a.self_tests {
        Some(p) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct File {
                expected_from: String,
                vectors: Vec<nacre_guard::manifest::SelfTest>,
            }
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let f: File =
                serde_json::from_slice(&text).with_context(|| format!("{}: self-tests", p.display()))?;
            Some(SelfTests {
                abs_tolerance: a.abs_tolerance,
                rel_tolerance: a.rel_tolerance,
                expected_from: f.expected_from,
                vectors: f.vectors,
            })
        }
        None => None,
    };
    let threshold = fitted.ood_threshold(1.0 - a.ood_rate)?;
    let extraction = match a.extraction_history {
        None => None,
        Some(history) => {
            if !(a.extraction_margin > 0.0 && a.extraction_margin <= 1.0) {
                bail!("--extraction-margin is in (0, 1]");
            }
            let settings = nacre_guard::manifest::Extraction {
                delta: 0.5,
                history,
                min_queries: 50.min(history),
                action: a.extraction_action,
                throttle_seconds: 10,
            };
            let classes = predicted_classes(&model, &fitted.sample)?;
            let lowest = nacre_guard::prada::lowest_natural_w(&settings, &fitted.sample, &classes, 8)
                .with_context(|| {
                    format!(
                        "--extraction-history {history}: the sample has fewer than {} rows to calibrate on",
                        2 * history
                    )
                })?;
            if lowest < 0.2 {
                bail!(
                    "--extraction-history {history}: the training rows replayed as clients reach W = {lowest:.3}; they do not look like natural traffic (repeated or lattice rows?), so delta cannot be calibrated on them"
                );
            }
            let delta = a.extraction_margin * lowest;
            eprintln!(
                "extraction: history {history}, lowest W of the training replay {lowest:.4}, delta {delta:.4}"
            );
            Some(nacre_guard::manifest::Extraction { delta, ..settings })
        }
    };
    let doc = Document {
        format: FORMAT.into(),
        input: InputSchema { tensor, features },
        reference: Reference {
            rows: fitted.rows,
            histograms: counts.histograms,
            mean: fitted.mean.clone(),
            covariance: fitted.covariance.clone(),
        },
        self_tests,
        input_guard: InputGuard {
            schema: a.schema_action,
            ood: Some(Ood { threshold, action: a.ood_action }),
        },
        output: a.output,
        budgets: None,
        extraction,
        explanation: None,
        monitoring: None,
    };
    let manifest = Manifest::from_document(doc)?;
    let ran = nacre_model::guarded::check(&model, &manifest)?;
    let json = manifest.to_json();
    std::fs::write(&a.out, &json).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "{}: {} features from {} rows{}, OOD threshold {threshold:.3} (squared distance; flags {:.2} % of training rows), {ran} self-tests passed on tract",
        a.out.display(),
        d,
        fitted.rows,
        if fitted.ridge > 0.0 { format!(" (covariance ridge {:.3e})", fitted.ridge) } else { String::new() },
        a.ood_rate * 100.0,
    );
    println!("{}", hex::encode(nacre_sealed::identity::sha256(&json)));
    Ok(ExitCode::SUCCESS)
}

/// One line on what the ONNX scan saw; control flow is flagged for review.
pub fn scan_summary(r: &nacre_model::scan::Report) -> String {
    let flow: Vec<String> = ["If", "Loop", "Scan"]
        .iter()
        .filter_map(|op| r.operators.get(*op).map(|n| format!("{n} {op}")))
        .collect();
    let mut s = format!(
        "scan: {} nodes, {} operator types, {:.1} MiB of constants, longest path {}",
        r.nodes,
        r.operators.len(),
        r.tensor_bytes as f64 / (1u64 << 20) as f64,
        r.longest_path
    );
    if flow.is_empty() {
        s += ", no control flow";
    } else {
        s += &format!(
            "; FLAGGED control flow: {} (a graph that steers itself on its inputs can hide a backdoor: review it)",
            flow.join(", ")
        );
    }
    s
}

/// Reads, parses and checks a manifest against a loaded model: what `nacre guard check` and
/// `nacre seal --guard-manifest` both run.
pub fn check_manifest(path: &Path, model: &Model) -> Result<(Vec<u8>, Manifest, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() > nacre_guard::manifest::MAX_LEN {
        return Err(ManifestError::TooLarge { len: bytes.len() }).with_context(|| path.display().to_string());
    }
    let manifest = Manifest::parse(&bytes).with_context(|| path.display().to_string())?;
    let ran = nacre_model::guarded::check(model, &manifest).with_context(|| path.display().to_string())?;
    Ok((bytes, manifest, ran))
}

fn score(a: ScoreArgs) -> Result<ExitCode> {
    use std::io::Write;
    let bytes = std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let manifest = Manifest::parse(&bytes).with_context(|| a.manifest.display().to_string())?;
    let data = Data::open(&a.data).with_context(|| a.data.display().to_string())?;
    if data.shape().columns != manifest.features() {
        bail!(
            "{}: {} columns, the manifest has {} features",
            a.data.display(),
            data.shape().columns,
            manifest.features()
        );
    }
    let guard = nacre_guard::InputGuard::new(&manifest);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut scratch, mut i, mut flagged) = (Vec::new(), 0u64, 0u64);
    data.rows(|row, _| -> Result<(), PassError> {
        let v = guard.check(row, &mut scratch);
        let finding = match v.violation {
            Some((_, violation)) => Some(violation.code()),
            None if v.out_of_distribution => Some("out_of_distribution"),
            None => None,
        };
        flagged += u64::from(finding.is_some());
        let line = serde_json::json!({
            "row": i,
            "finding": finding,
            "feature": v.violation.map(|(_, violation)| violation.feature()),
            "ood_score": v.ood_score,
            "action": v.action,
        });
        writeln!(out, "{line}").map_err(DataError::from)?;
        i += 1;
        Ok(())
    })
    .with_context(|| a.data.display().to_string())?;
    out.flush()?;
    eprintln!("{i} rows, {flagged} with a finding ({:.2} %)", 100.0 * flagged as f64 / i.max(1) as f64);
    Ok(ExitCode::SUCCESS)
}

fn replay(a: ReplayArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let manifest = Manifest::parse(&bytes).with_context(|| a.manifest.display().to_string())?;
    let Some(settings) = &manifest.document().extraction else {
        bail!("{}: the manifest has no extraction section", a.manifest.display());
    };
    let model = load_model(&a.model)?;
    let (inputs, _) = model.signature()?;
    if inputs.len() != 1 {
        bail!("{}: replay runs models with one input; this one has {}", a.model.display(), inputs.len());
    }
    let data = Data::open(&a.data).with_context(|| a.data.display().to_string())?;
    let d = manifest.features();
    if data.shape().columns != d {
        bail!("{}: {} columns, the manifest has {d} features", a.data.display(), data.shape().columns);
    }
    let mut detector = nacre_guard::prada::Detector::new(settings, 1);
    let (mut i, mut first, mut alarms, mut lowest) = (0u64, None, 0u64, f64::INFINITY);
    data.rows(|row, _| -> Result<(), PassError> {
        let x = nacre_model::Tensor { shape: vec![1, d], data: nacre_model::TensorData::Fp32(row.to_vec()) };
        let out = model.run(vec![x]).map_err(|e| PassError::Model(e.to_string()))?;
        let class = match out.first().map(|t| &t.data) {
            Some(nacre_model::TensorData::Fp32(v)) => nacre_guard::prada::predicted_class(v),
            _ => return Err(PassError::Model("the first output is not float32".into())),
        };
        match detector.observe(&[0; 32], row, class) {
            nacre_guard::prada::Prada::Alarm { w } => {
                first.get_or_insert(i);
                alarms += 1;
                lowest = lowest.min(w);
            }
            nacre_guard::prada::Prada::Normal { w } => lowest = lowest.min(w),
            nacre_guard::prada::Prada::Warming { .. } => {}
        }
        i += 1;
        Ok(())
    })
    .with_context(|| a.data.display().to_string())?;
    let summary = serde_json::json!({
        "rows": i,
        "first_alarm": first,
        "alarms": alarms,
        "lowest_w": lowest.is_finite().then_some(lowest),
        "delta": settings.delta,
    });
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn check(a: CheckArgs) -> Result<ExitCode> {
    let model = load_model(&a.model)?;
    match check_manifest(&a.manifest, &model) {
        Ok((bytes, m, ran)) => {
            let doc = m.document();
            println!("guard manifest {} ({FORMAT})", a.manifest.display());
            println!("  digest      {}", hex::encode(nacre_sealed::identity::sha256(&bytes)));
            println!("  input       {} ({} features)", doc.input.tensor, m.features());
            println!("  reference   {} rows", doc.reference.rows);
            println!("  self-tests  {ran} passed on tract");
            println!("  output      {}", doc.output);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
