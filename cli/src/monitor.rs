//! `nacre monitor URL`: verifies the enclave like every client command, then fetches the private
//! monitor's released windows with a monitoring token and shows drift per feature over time — a
//! terminal table, and with `--svg` a heat map a person would rather look at (plain SVG: no font
//! or GUI dependency).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use nacre_client::{AttestedSession, ClientPolicy};
use nacre_guard::monitor::{FeatureWindow, Release, Report, WindowRecord};

#[derive(Args, Debug)]
pub struct MonitorArgs {
    pub url: String,
    #[arg(long)]
    pub policy: PathBuf,
    /// A monitoring token (the role the image names with `--monitoring-token-file`).
    #[arg(long)]
    pub token_file: PathBuf,
    /// Windows from this index on.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Columns of the table: the latest this many windows.
    #[arg(long, default_value_t = 8)]
    pub last: usize,
    /// Also write the drift heat map (every window fetched) to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print the report as JSON instead.
    #[arg(long)]
    pub json: bool,
}

pub fn monitor(args: MonitorArgs) -> Result<ExitCode> {
    let token = crate::client::read_token_file(&args.token_file)?;
    let policy = ClientPolicy::load(&args.policy)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async {
        let session = AttestedSession::connect(&args.url, &policy).await?;
        session.with_token(token.as_str()).monitoring(args.since).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report, args.last));
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&report)).with_context(|| format!("writing {}", path.display()))?;
        println!("drift heat map: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A feature's drift in one window as a multiple of its alarm threshold (the largest over PSI,
/// KS and Hellinger): above 1 is an alarm.
pub fn score(f: &FeatureWindow) -> f64 {
    let ratio = |v: f64, t: f64| if t > 0.0 { v / t } else { 0.0 };
    ratio(f.distances.psi, f.thresholds.psi)
        .max(ratio(f.distances.ks, f.thresholds.ks))
        .max(ratio(f.distances.hellinger, f.thresholds.hellinger))
}

fn released(report: &Report) -> Vec<(&WindowRecord, &Release)> {
    report.windows.iter().filter_map(|w| w.release.as_ref().map(|r| (w, r))).collect()
}

fn time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// The terminal table: the privacy terms, then per feature its drift score in the latest
/// windows (`*` past the threshold), then the output quantiles.
pub fn table(report: &Report, last: usize) -> String {
    let p = &report.privacy;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "private monitor (attested terms): {:?}, ε {} per window, {} per day ({} spent today), unit: one {}, \
         false alarms ≤ {} per window",
        p.mechanism,
        p.epsilon_per_window,
        p.epsilon_per_day,
        p.epsilon_spent_today,
        p.unit,
        report.false_alarm_rate
    );
    let withheld = report.windows.iter().filter(|w| w.release.is_none()).count();
    let all = released(report);
    let _ = writeln!(out, "windows: {} released, {withheld} withheld", all.len());
    let shown = &all[all.len().saturating_sub(last.max(1))..];
    if shown.is_empty() {
        return out;
    }
    let _ = writeln!(out, "drift ÷ threshold per feature (* = alarm):");
    let _ = write!(out, "  {:<24}", "window");
    for (w, _) in shown {
        let _ = write!(out, " {:>9}", format!("#{}", w.index));
    }
    let _ = write!(out, "\n  {:<24}", "ends (UTC)");
    for (w, _) in shown {
        let _ = write!(out, " {:>9}", time(w.end_ms));
    }
    let _ = write!(out, "\n  {:<24}", "rows (noised)");
    for (_, r) in shown {
        let _ = write!(out, " {:>9}", r.rows);
    }
    out.push('\n');
    for (f, feature) in shown[0].1.features.iter().enumerate() {
        let _ = write!(out, "  {:<24}", truncate(&feature.name, 24));
        for (_, r) in shown {
            let cell = r
                .features
                .get(f)
                .map_or("-".to_string(), |x| format!("{:.2}{}", score(x), if x.drift { "*" } else { " " }));
            let _ = write!(out, " {cell:>9}");
        }
        out.push('\n');
    }
    let _ = write!(out, "  {:<24}", "top score p50/p99");
    for (_, r) in shown {
        let cell = r
            .output
            .as_ref()
            .and_then(|o| o.quantiles)
            .map_or("-".to_string(), |[p50, _, p99]| format!("{p50:.2}/{p99:.2}"));
        let _ = write!(out, " {cell:>9}");
    }
    out.push('\n');
    if let Some((w, r)) = shown.last()
        && !r.drifted.is_empty()
    {
        let _ = writeln!(out, "window #{} drifted: {}", w.index, r.drifted.join(", "));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).chain(['…']).collect() }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The heat map: a row per feature, a column per released window, the colour the drift score
/// on a log scale (white at 0.1, red at 1 and past it), alarms outlined; below it the top
/// score's p50 and p99 per window.
pub fn svg(report: &Report) -> String {
    let all = released(report);
    let names: Vec<&str> =
        all.first().map(|(_, r)| r.features.iter().map(|f| f.name.as_str()).collect()).unwrap_or_default();
    let (cell_w, cell_h, left, top) = (18.0, 14.0, 170.0, 40.0);
    let cols = all.len().max(1) as f64;
    let grid_h = names.len() as f64 * cell_h;
    let chart_h = 90.0;
    // Wide enough for the title whatever the number of windows.
    let width = (left + cols * cell_w + 40.0).max(640.0);
    let height = top + grid_h + chart_h + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let p = &report.privacy;
    let _ = writeln!(
        s,
        r#"<text x="8" y="16" font-size="13">Drift ÷ alarm threshold per feature and window ({:?}, ε {} per window)</text>"#,
        p.mechanism, p.epsilon_per_window
    );
    let _ = writeln!(
        s,
        r##"<text x="8" y="30" fill="#555">white ≤ 0.1 · red ≥ 1 (alarm, outlined) · log scale</text>"##
    );
    for (i, name) in names.iter().enumerate() {
        let y = top + i as f64 * cell_h;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + cell_h - 3.0,
            xml(name)
        );
    }
    for (c, (w, r)) in all.iter().enumerate() {
        let x = left + c as f64 * cell_w;
        for (i, f) in r.features.iter().enumerate() {
            let v = score(f);
            let t = (v.max(1e-3).log10() + 1.0).clamp(0.0, 1.0); // 0.1 → 0, 1 → 1
            let gb = (255.0 * (1.0 - t)).round() as u8;
            let stroke = if f.drift { r#" stroke="black" stroke-width="1.5""# } else { "" };
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="{}" height="{}" fill="rgb(255,{gb},{gb})"{stroke}><title>#{} {}: {v:.3}</title></rect>"#,
                top + i as f64 * cell_h,
                cell_w - 1.0,
                cell_h - 1.0,
                w.index,
                xml(&f.name)
            );
        }
        if c % 5 == 0 {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#555">#{}</text>"##,
                x,
                top + grid_h + 12.0,
                w.index
            );
        }
    }
    // The output's top score, p50 and p99, per window.
    let base = top + grid_h + 24.0 + chart_h;
    let _ =
        writeln!(s, r#"<text x="8" y="{}">top score p50 (blue), p99 (orange)</text>"#, base - chart_h / 2.0);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="#999"/>"##,
        left + cols * cell_w
    );
    let (lo, hi) = all
        .iter()
        .filter_map(|(_, r)| r.output.as_ref()?.quantiles)
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (k, colour) in [(0usize, "#1f77b4"), (2, "#ff7f0e")] {
        let points: Vec<String> = all
            .iter()
            .enumerate()
            .filter_map(|(c, (_, r))| r.output.as_ref()?.quantiles.map(|q| (c, q[k])))
            .map(|(c, v)| {
                let x = left + c as f64 * cell_w + cell_w / 2.0;
                let y = base - (v - lo) / span * (chart_h - 10.0);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
    if lo.is_finite() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{base}" fill="#555" text-anchor="end">{lo:.2}</text>"##,
            left - 6.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#555" text-anchor="end">{hi:.2}</text>"##,
            left - 6.0,
            base - chart_h + 10.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use nacre_guard::manifest::{Mechanism, Window};
    use nacre_guard::monitor::drift::Distances;
    use nacre_guard::monitor::{OutputWindow, Privacy};

    use super::*;

    fn report() -> Report {
        let feature = |name: &str, psi: f64, drift: bool| FeatureWindow {
            name: name.into(),
            counts: vec![1, 2],
            distances: Distances { psi, ks: 0.01, hellinger: 0.01 },
            thresholds: Distances { psi: 0.1, ks: 0.1, hellinger: 0.1 },
            drift,
        };
        let window = |index, psi: f64| WindowRecord {
            index,
            start_ms: 0,
            end_ms: 3_600_000 * index,
            release: Some(Release {
                rows: 1000,
                epsilon: 1.0,
                mechanism: Mechanism::DiscreteLaplace,
                noise_scale: 4.0,
                features: vec![feature("amount<&>", psi, psi > 0.1), feature("v1", 0.005, false)],
                output: Some(OutputWindow {
                    edges: vec![0.5],
                    counts: vec![600, 400],
                    quantiles: Some([0.4, 0.6, 0.9]),
                }),
                findings: [0, 3],
                drifted: if psi > 0.1 { vec!["amount<&>".into()] } else { vec![] },
            }),
            withheld: None,
        };
        Report {
            privacy: Privacy {
                mechanism: Mechanism::DiscreteLaplace,
                epsilon_per_window: 1.0,
                epsilon_per_day: 24.0,
                epsilon_spent_today: 3.0,
                unit: "row".into(),
                sensitivity: 4,
            },
            window: Window::Requests(1000),
            min_window: 100,
            false_alarm_rate: 0.01,
            windows: vec![window(1, 0.02), window(2, 0.5)],
        }
    }

    #[test]
    fn the_table_marks_the_drifted_feature_in_its_window() {
        let t = table(&report(), 8);
        assert!(t.contains("2 released, 0 withheld"), "{t}");
        let row = t.lines().find(|l| l.trim_start().starts_with("amount")).unwrap();
        assert!(row.contains("0.20 ") && row.contains("5.00*"), "{row}");
        assert!(t.contains("window #2 drifted: amount<&>"), "{t}");
    }

    #[test]
    fn the_svg_is_well_formed_and_escapes_names() {
        let s = svg(&report());
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("amount&lt;&amp;&gt;") && !s.contains("amount<&>"));
        // One cell per feature and window; the alarm outlined, at full red.
        assert_eq!(s.matches("<rect x=").count(), 4);
        assert_eq!(s.matches(r#"fill="rgb(255,0,0)" stroke="black""#).count(), 1);
    }
}
