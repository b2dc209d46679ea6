//! `nacre guard monitor-eval`: the private monitor simulated in process with a manifest's
//! reference and rows drawn from a data file, for choosing ε and the window before sealing
//! (and for the README's figures, scripts/eval-monitoring.sh). The code is the enclave's
//! (nacre-guard's `monitor`); only the noise comes from a seeded stream, so runs repeat.
//!
//! Per ε and window size: the false-alarm rate over windows of unshifted rows (with its Wilson
//! 95 % upper bound), and the delay until a mean shift of one feature is detected on that
//! feature, over repeated runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nacre_guard::Manifest;
use nacre_guard::data::{Data, DataError};
use nacre_guard::manifest::{Mechanism, Monitoring, Window};
use nacre_guard::monitor::noise::SplitMix;
use nacre_guard::monitor::{Monitor, Spec};

#[derive(Args, Debug)]
pub struct MonitorEvalArgs {
    /// The guard manifest (its reference is the baseline).
    manifest: PathBuf,
    /// Rows like production traffic (ideally not the rows the reference was fitted on).
    #[arg(long)]
    data: PathBuf,
    /// The feature to shift (by name), by --shift-sigma of its reference standard deviation.
    #[arg(long)]
    shift_feature: String,
    #[arg(long, default_value_t = 0.25)]
    shift_sigma: f64,
    /// ε per window to try (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 1.0, 2.0])]
    epsilon: Vec<f64>,
    /// Window sizes (rows) to try (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [2_500u64, 10_000, 40_000])]
    window: Vec<u64>,
    /// Windows of unshifted rows per cell, for the false-alarm rate.
    #[arg(long, default_value_t = 400)]
    null_windows: u32,
    /// Shifted runs per cell, for the detection delay (each up to 10 windows).
    #[arg(long, default_value_t = 20)]
    runs: u32,
    #[arg(long, default_value = "discrete_laplace", value_parser = parse_mechanism)]
    mechanism: Mechanism,
    #[arg(long, default_value_t = 0.01)]
    false_alarm_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_mechanism(s: &str) -> Result<Mechanism, String> {
    match s {
        "discrete_laplace" => Ok(Mechanism::DiscreteLaplace),
        "discrete_gaussian" => Ok(Mechanism::DiscreteGaussian),
        _ => Err(format!("{s:?}: discrete_laplace or discrete_gaussian")),
    }
}

/// The most windows a shifted run waits for a detection.
const MAX_DELAY: u32 = 10;

pub fn monitor_eval(a: MonitorEvalArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let manifest = Manifest::parse(&bytes).with_context(|| a.manifest.display().to_string())?;
    let doc = manifest.document();
    let d = manifest.features();
    let Some(shifted) = doc.input.features.iter().position(|f| f.name == a.shift_feature) else {
        bail!("--shift-feature {:?}: no such feature in the manifest", a.shift_feature);
    };
    let sigma = doc.reference.covariance[shifted][shifted].sqrt();
    let data = Data::open(&a.data).with_context(|| a.data.display().to_string())?;
    if data.shape().columns != d {
        bail!("{}: {} columns, the manifest has {d} features", a.data.display(), data.shape().columns);
    }
    let mut rows = Vec::new();
    data.rows(|row, _| -> Result<(), DataError> {
        rows.extend_from_slice(row);
        Ok(())
    })?;
    let count = rows.len() / d.max(1);
    if count < 100 {
        bail!("{}: {count} rows; the simulation draws from at least 100", a.data.display());
    }
    println!(
        "private monitor simulation: {} features, shift of {:?} by {} σ ({:.4}), {:?}, false-alarm target {} per window",
        d,
        a.shift_feature,
        a.shift_sigma,
        a.shift_sigma * sigma,
        a.mechanism,
        a.false_alarm_rate
    );
    println!(
        "{:>6} {:>8} {:>13} {:>13} {:>10} {:>12} {:>14}",
        "ε", "window", "false alarms", "(95 % upper)", "detected", "≤ 2 windows", "median delay"
    );
    let mut rng = SplitMix(a.seed);
    let mut batch = Vec::with_capacity(100 * d);
    for &epsilon in &a.epsilon {
        for &n in &a.window {
            let mut doc = doc.clone();
            doc.monitoring = Some(Monitoring {
                window: Window::Requests(n),
                min_window: 1,
                epsilon_per_window: epsilon,
                epsilon_per_day: 1e12,
                mechanism: a.mechanism,
                false_alarm_rate: a.false_alarm_rate,
                output_edges: None,
            });
            let manifest = Manifest::from_document(doc).context("the simulated monitoring settings")?;
            // As for a model with float scores (sensitivity d + 2, the noise the enclave adds for
            // the fraud MLP); the evaluation drives no model, so only the features drift.
            let spec = Spec::new(manifest.document(), true).context("no monitoring section")?;
            // One window of rows at a time, in requests of 100 rows; `shift` added to the feature.
            let mut window = |m: &mut Monitor, rng: &mut SplitMix, shift: f64| loop {
                batch.clear();
                for _ in 0..100 {
                    let i = (rng.next_u64_below(count as u64)) as usize;
                    batch.extend_from_slice(&rows[i * d..(i + 1) * d]);
                    let at = batch.len() - d + shifted;
                    batch[at] += shift as f32;
                }
                if let Some(closed) = m.observe(&batch, &[], 1, None, 0) {
                    return closed.release(rng);
                }
            };
            let mut null = Monitor::new(spec.clone());
            let mut alarms = 0u32;
            for _ in 0..a.null_windows {
                let w = window(&mut null, &mut rng, 0.0);
                alarms += u32::from(w.release.is_some_and(|r| !r.drifted.is_empty()));
            }
            let mut delays = Vec::new();
            for _ in 0..a.runs {
                let mut m = Monitor::new(spec.clone());
                let delay = (1..=MAX_DELAY).find(|_| {
                    let w = window(&mut m, &mut rng, a.shift_sigma * sigma);
                    w.release.is_some_and(|r| r.drifted.iter().any(|f| f == &a.shift_feature))
                });
                delays.push(delay.unwrap_or(u32::MAX));
            }
            delays.sort_unstable();
            let detected = delays.iter().filter(|&&x| x != u32::MAX).count();
            let within2 = delays.iter().filter(|&&x| x <= 2).count();
            let median = delays[delays.len() / 2];
            let rate = f64::from(alarms) / f64::from(a.null_windows.max(1));
            println!(
                "{epsilon:>6} {n:>8} {:>12.2}% {:>12.2}% {:>10} {:>12} {:>14}",
                rate * 100.0,
                wilson_upper(alarms, a.null_windows) * 100.0,
                format!("{detected}/{}", a.runs),
                format!("{within2}/{}", a.runs),
                if median == u32::MAX { format!("> {MAX_DELAY}") } else { median.to_string() }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Wilson score interval's upper end at 95 % for `k` of `n`.
fn wilson_upper(k: u32, n: u32) -> f64 {
    let (k, n, z) = (f64::from(k), f64::from(n.max(1)), 1.96f64);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (centre + spread) / (1.0 + z * z / n)
}

trait Below {
    fn next_u64_below(&mut self, n: u64) -> u64;
}

impl Below for SplitMix {
    fn next_u64_below(&mut self, n: u64) -> u64 {
        // Row sampling for a simulation: the modulo bias at n ≪ 2^64 is immaterial.
        nacre_guard::monitor::noise::Bits::next_u64(self) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wilson_bounds_contain_the_rate() {
        assert!((super::wilson_upper(0, 400) - 0.0095).abs() < 0.0005);
        let u = super::wilson_upper(4, 400);
        assert!(u > 0.01 && u < 0.03, "{u}");
    }
}
