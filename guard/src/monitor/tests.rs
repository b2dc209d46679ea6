#![allow(clippy::unwrap_used)]
use super::noise::{SplitMix, normal};
use super::*;
use crate::manifest::{Action, Feature, Histogram, InputGuard, InputSchema, OutputPolicy, Reference};

/// Deciles of the standard normal: ten bins of 10 % each.
const DECILES: [f64; 9] = [-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816];

fn doc(d: usize, window: Window, min_window: u64, eps: (f64, f64), mechanism: Mechanism) -> Document {
    let histograms = (0..d).map(|_| Histogram { edges: DECILES.to_vec(), counts: vec![2_000; 10] }).collect();
    let identity = (0..d).map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    Document {
        format: crate::manifest::FORMAT.into(),
        input: InputSchema {
            tensor: "x".into(),
            features: (0..d)
                .map(|i| Feature { name: format!("f{i}"), min: None, max: None, allowed: None })
                .collect(),
        },
        reference: Reference { rows: 20_000, histograms, mean: vec![0.0; d], covariance: identity },
        self_tests: None,
        input_guard: InputGuard { schema: Action::Log, ood: None },
        output: OutputPolicy::Full,
        budgets: None,
        extraction: None,
        explanation: None,
        monitoring: Some(Monitoring {
            window,
            min_window,
            epsilon_per_window: eps.0,
            epsilon_per_day: eps.1,
            mechanism,
            false_alarm_rate: 0.01,
            output_edges: None,
        }),
    }
}

/// `n` rows of `d` standard normal features, feature 0 shifted by `shift`; scores in [0, 1].
fn traffic(rng: &mut SplitMix, n: usize, d: usize, shift: f64) -> (Vec<f32>, Vec<f32>) {
    let rows = (0..n * d).map(|i| (normal(rng) + if i % d == 0 { shift } else { 0.0 }) as f32).collect();
    let scores = (0..n).map(|_| rng.unit() as f32).collect();
    (rows, scores)
}

fn run(m: &mut Monitor, rng: &mut SplitMix, n: usize, shift: f64, now_ms: u64) -> Vec<WindowRecord> {
    let d = m.spec().names.len();
    let mut out = Vec::new();
    for _ in 0..n / 100 {
        let (rows, scores) = traffic(rng, 100, d, shift);
        if let Some(c) = m.observe(&rows, &scores, 1, None, now_ms) {
            out.push(c.release(rng));
        }
    }
    out
}

#[test]
fn a_quarter_sigma_shift_is_seen_in_one_window_and_only_in_its_feature() {
    let spec =
        Spec::new(&doc(8, Window::Requests(10_000), 1_000, (1.0, 100.0), Mechanism::DiscreteLaplace), true)
            .unwrap();
    let mut m = Monitor::new(spec);
    let mut rng = SplitMix(1);
    let calm = run(&mut m, &mut rng, 30_000, 0.0, 1_000);
    assert_eq!(calm.len(), 3);
    let drifted: usize = calm.iter().map(|w| w.release.as_ref().unwrap().drifted.len()).sum();
    assert!(drifted <= 1, "no drift, yet {drifted} features alarmed: {calm:?}");
    let shifted = run(&mut m, &mut rng, 10_000, 0.25, 2_000);
    let r = shifted[0].release.as_ref().unwrap();
    assert_eq!(r.drifted, vec!["f0".to_string()], "{r:?}");
    assert!(r.features[0].distances.ks > 0.07, "{:?}", r.features[0]);
    // The noised counts are not the true ones, and add up to about the window.
    assert!((r.rows - 10_000).abs() < 2_000, "{}", r.rows);
    assert_eq!(r.noise_scale, 10.0);
    assert_eq!(shifted[0].index, 3);
    // Scores uniform in [0, 1]: the quantiles come out near their values.
    let q = r.output.as_ref().unwrap().quantiles.unwrap();
    assert!((q[0] - 0.5).abs() < 0.05 && (q[1] - 0.9).abs() < 0.05);
}

#[test]
fn the_daily_budget_withholds_windows_until_the_next_utc_day() {
    for mechanism in [Mechanism::DiscreteLaplace, Mechanism::DiscreteGaussian] {
        let spec = Spec::new(&doc(2, Window::Requests(500), 100, (1.0, 2.0), mechanism), true).unwrap();
        let mut m = Monitor::new(spec);
        let mut rng = SplitMix(2);
        let day = 86_400_000;
        // ε = 2 a day pays two windows of ε = 1; under the Gaussian, ρ = ε²/2 composes: 2 = 4 × 0.5.
        let paid = if mechanism == Mechanism::DiscreteLaplace { 2 } else { 4 };
        let w = run(&mut m, &mut rng, 500 * (paid + 1), 0.0, day + 5);
        let outcome: Vec<_> = w.iter().map(|w| w.withheld).collect();
        let mut want = vec![None; paid];
        want.push(Some(Withheld::PrivacyBudget));
        assert_eq!(outcome, want, "{mechanism:?}");
        assert!(w[paid].release.is_none());
        assert!((m.report(0, day + 6).privacy.epsilon_spent_today - 2.0).abs() < 1e-9);
        let next = run(&mut m, &mut rng, 500, 0.0, 2 * day);
        assert!(next[0].release.is_some());
        assert!((m.report(0, 2 * day).privacy.epsilon_spent_today - 1.0).abs() < 1e-9);
    }
}

#[test]
fn time_windows_close_on_unix_boundaries_and_small_ones_are_withheld() {
    let spec =
        Spec::new(&doc(2, Window::Seconds(60), 400, (2.0, 100.0), Mechanism::DiscreteLaplace), true).unwrap();
    let mut m = Monitor::new(spec);
    let mut rng = SplitMix(3);
    let t0 = 1_800_000_000_000u64; // a whole minute
    assert!(run(&mut m, &mut rng, 1_000, 0.0, t0 + 1_000).is_empty());
    // The next minute's first request closes the last one.
    let w = run(&mut m, &mut rng, 100, 0.0, t0 + 61_000);
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].start_ms, w[0].end_ms), (t0 + 1_000, t0 + 60_000));
    assert!(w[0].release.is_some());
    // 100 rows < min_window 400: withheld, found by a read-time tick.
    let closed = m.tick(t0 + 125_000).unwrap();
    let rec = closed.release(&mut rng);
    assert_eq!(rec.withheld, Some(Withheld::BelowMinWindow));
    // Minutes with no request make no window.
    assert!(m.tick(t0 + 300_000).is_none());
    m.publish(rec);
    m.publish(w[0].clone());
    let report = m.report(1, t0 + 300_000);
    assert_eq!(report.windows.len(), 1);
    assert_eq!(report.windows[0].index, 1);
    assert_eq!(m.counts(), (1, 1));
    assert_eq!(m.latest().unwrap().index, 0);
}

#[test]
fn findings_and_out_of_range_values_have_a_bin() {
    let spec =
        Spec::new(&doc(2, Window::Requests(3), 1, (10.0, 100.0), Mechanism::DiscreteLaplace), true).unwrap();
    let mut m = Monitor::new(spec);
    assert!(m.observe(&[f32::NAN, 1e30], &[2.0], 1, Some(Finding::OutOfDistribution), 0).is_none());
    assert!(m.observe(&[-1e30, 0.0], &[-1.0], 1, Some(Finding::Schema), 0).is_none());
    let c = m.observe(&[0.1, 0.1], &[0.5], 1, None, 0).unwrap();
    // Raw counts never show in Debug output (logs, panics).
    assert!(!format!("{m:?}{c:?}").contains("counts"), "{m:?} {c:?}");
    // Bins: NaN and −1e30 below the first edge, 1e30 above the last.
    assert_eq!(&c.counts[0..10], &[2, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(&c.counts[10..20], &[0, 0, 0, 0, 0, 2, 0, 0, 0, 1]);
    let out = 20;
    assert_eq!(c.counts[out], 1);
    assert_eq!(c.counts[out + 10], 1);
    assert_eq!(c.counts[out + 19], 1);
    assert_eq!(&c.counts[out + 20..], &[1, 1]);
}

#[test]
fn branch_free_bins_equal_the_fitted_ones() {
    // Edges that f32 cannot hold exactly, and inputs on both sides of them.
    let edges = vec![-0.1, 0.1, 1.0 / 3.0, 0.7, 1e39];
    let mut d = doc(1, Window::Requests(1_000_000), 1, (1.0, 10.0), Mechanism::DiscreteLaplace);
    d.reference.histograms[0] = Histogram { edges: edges.clone(), counts: vec![1; 6] };
    let mut fast = Monitor::new(Spec::new(&d, true).unwrap());
    let mut xs: Vec<f32> = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
    for &e in &edges[..4] {
        let r = e as f32;
        xs.extend([r.next_down(), r, r.next_up()]);
    }
    let mut counts = crate::fit::Counts::new(vec![edges]);
    for x in &xs {
        counts.push(&[*x]);
        fast.observe(&[*x], &[], 1, None, 0);
    }
    let got: Vec<u64> = fast.counts[..6].iter().map(|&c| u64::from(c)).collect();
    assert_eq!(got, counts.histograms[0].counts);
}

#[test]
fn a_model_without_scores_still_releases_windows() {
    // The first output not FP32: no scores to count, no output histogram (sensitivity d + 1),
    // and the windows still count their rows.
    let spec =
        Spec::new(&doc(2, Window::Requests(1_000), 500, (1.0, 10.0), Mechanism::DiscreteLaplace), false)
            .unwrap();
    let mut m = Monitor::new(spec);
    let mut rng = SplitMix(6);
    let mut released = None;
    for _ in 0..10 {
        let (rows, _) = traffic(&mut rng, 100, 2, 0.0);
        if let Some(c) = m.observe(&rows, &[], 1, None, 0) {
            released = Some(c.release(&mut rng));
        }
    }
    let r = released.unwrap().release.unwrap();
    assert!((r.rows - 1_000).abs() < 100, "{}", r.rows);
    assert_eq!(r.output, None);
    assert_eq!(r.noise_scale, 3.0);
    // And the report stays valid JSON (no NaN).
    let json = serde_json::to_string(&r).unwrap();
    let _: Release = serde_json::from_str(&json).unwrap();
}

#[test]
fn quantiles_interpolate_within_bins() {
    let edges = [0.0, 1.0, 2.0];
    assert_eq!(quantile(&edges, &[0, 10, 10, 0], 0.5), 1.0);
    assert_eq!(quantile(&edges, &[0, 10, 10, 0], 0.25), 0.5);
    assert_eq!(quantile(&edges, &[5, 0, 0, -3], 0.9), 0.0);
    assert!(quantile(&edges, &[-1, -1, 0, 0], 0.5).is_nan());
}

#[test]
fn records_round_trip_as_json() {
    let spec =
        Spec::new(&doc(2, Window::Requests(1_000), 10, (1.0, 10.0), Mechanism::DiscreteGaussian), true)
            .unwrap();
    let mut m = Monitor::new(spec);
    let mut rng = SplitMix(4);
    let w = run(&mut m, &mut rng, 1_000, 0.0, 7);
    m.publish(w[0].clone());
    let report = m.report(0, 8);
    let json = serde_json::to_string(&report).unwrap();
    // serde_json's default float parsing may move a last bit: compare all but the distances.
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.privacy, report.privacy);
    let (a, b) = (back.windows[0].release.as_ref().unwrap(), report.windows[0].release.as_ref().unwrap());
    assert_eq!((&a.output, a.findings, a.rows), (&b.output, b.findings, b.rows));
    for (x, y) in a.features.iter().zip(&b.features) {
        assert_eq!((&x.counts, x.drift), (&y.counts, y.drift));
        assert!((x.distances.psi - y.distances.psi).abs() < 1e-15);
    }
    assert_eq!(back.privacy.sensitivity, 4);
}
