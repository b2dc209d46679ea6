#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! The private monitor's cost per request, for `scripts/bench-monitoring.sh`: 30 features on
//! 10-bin reference histograms plus the output's 20 bins (the fraud MLP's shape), single-row
//! requests counted by `Monitor::observe`, each call timed on its own; windows of 10,000 rows
//! close (and are set aside) as they would while serving. Then the release of one window
//! (exact noise, thresholds cached) and a calibration, timed once each. JSON lines.
//!
//! ```text
//! monitor_bench CALLS    # e.g. 1000000
//! ```

use std::time::Instant;

use nacre_guard::manifest::{
    Action, Document, FORMAT, Feature, Histogram, InputGuard, InputSchema, Mechanism, Monitoring,
    OutputPolicy, Reference, Window,
};
use nacre_guard::monitor::noise::{OsBits, SplitMix, normal};
use nacre_guard::monitor::{Monitor, Spec};

const D: usize = 30;
const EDGES: [f64; 9] = [-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816];

fn main() {
    let calls: usize = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().unwrap());
    let doc = Document {
        format: FORMAT.into(),
        input: InputSchema {
            tensor: "features".into(),
            features: (0..D)
                .map(|j| Feature { name: format!("f{j}"), min: None, max: None, allowed: None })
                .collect(),
        },
        reference: Reference {
            rows: 20_000,
            histograms: (0..D)
                .map(|_| Histogram { edges: EDGES.to_vec(), counts: vec![2_000; 10] })
                .collect(),
            mean: vec![0.0; D],
            covariance: (0..D).map(|i| (0..D).map(|j| f64::from(u8::from(i == j))).collect()).collect(),
        },
        self_tests: None,
        input_guard: InputGuard { schema: Action::Log, ood: None },
        output: OutputPolicy::Full,
        budgets: None,
        extraction: None,
        explanation: None,
        monitoring: Some(Monitoring {
            window: Window::Requests(10_000),
            min_window: 1_000,
            epsilon_per_window: 1.0,
            epsilon_per_day: 1e9,
            mechanism: Mechanism::DiscreteLaplace,
            false_alarm_rate: 0.01,
            output_edges: None,
        }),
    };
    let spec = Spec::new(&doc, true).unwrap();
    let mut rng = SplitMix(1);
    let requests: Vec<[f32; D]> =
        (0..4096).map(|_| core::array::from_fn(|_| normal(&mut rng) as f32)).collect();
    let scores: Vec<f32> = (0..4096).map(|_| rng.unit() as f32).collect();
    let mut m = Monitor::new(spec.clone());
    let mut closed = Vec::new();
    let mut ns = Vec::with_capacity(calls);
    for i in 0..calls {
        let (x, s) = (&requests[i % 4096], &scores[i % 4096..i % 4096 + 1]);
        let t = Instant::now();
        let c = m.observe(std::hint::black_box(&x[..]), s, 1, None, 0);
        ns.push(t.elapsed().as_nanos() as u64);
        if let Some(c) = c {
            closed.push(c);
        }
    }
    // The clock's own cost per timed call, and the mean without per-call timing.
    let mut empty = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        std::hint::black_box(());
        empty.push(t.elapsed().as_nanos() as u64);
    }
    empty.sort_unstable();
    let mut m2 = Monitor::new(spec.clone());
    let t = Instant::now();
    for i in 0..calls {
        let (x, s) = (&requests[i % 4096], &scores[i % 4096..i % 4096 + 1]);
        std::hint::black_box(m2.observe(std::hint::black_box(&x[..]), s, 1, None, 0));
    }
    let batch_mean = t.elapsed().as_nanos() as f64 / calls as f64;
    ns.sort_unstable();
    let pct = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    println!(
        "{{\"op\": \"monitor_observe\", \"features\": {D}, \"calls\": {calls}, \"p50_ns\": {}, \"p99_ns\": {}, \"mean_ns\": {mean:.1}, \"windows\": {}, \"clock_ns\": {}, \"untimed_mean_ns\": {batch_mean:.1}}}",
        pct(0.5),
        pct(0.99),
        closed.len(),
        empty[empty.len() / 2]
    );
    let t = Instant::now();
    let thresholds = spec.thresholds(10_000);
    let calibrate_ms = t.elapsed().as_secs_f64() * 1e3;
    let window = closed.pop().expect("a closed window");
    let t = Instant::now();
    let record = window.release(&mut OsBits::new());
    let release_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(record.release.is_some() && thresholds.features.len() == D);
    println!(
        "{{\"op\": \"monitor_window\", \"calibrate_ms\": {calibrate_ms:.1}, \"release_ms\": {release_ms:.2}}}"
    );
}
