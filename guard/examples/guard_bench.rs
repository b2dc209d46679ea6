#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! The input guard's cost per request, for `scripts/bench-guard.sh`: a manifest fitted to
//! 20,000 rows of 30 correlated features, then `InputGuard::check` on single-row requests
//! (the fraud MLP's shape), each call timed on its own. One JSON line: p50, p99, mean in ns.
//!
//! ```text
//! guard_bench ROWS CALLS    # e.g. 20000 200000
//! ```

use std::time::Instant;

use nacre_guard::fit::{Counts, Moments};
use nacre_guard::manifest::{
    Action, Document, FORMAT, Feature, InputGuard, InputSchema, Ood, OutputPolicy, Reference,
};
use nacre_guard::{InputGuard as Guard, Manifest};

const D: usize = 30;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Correlated rows: each feature a mix of its own uniform noise and a shared one.
fn row(i: u64) -> [f32; D] {
    let u = |k: u64| (splitmix(i * 64 + k) >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
    let shared = u(63);
    let mut r = [0f32; D];
    for (j, v) in r.iter_mut().enumerate() {
        *v = (u(j as u64) + 0.5 * shared * (j as f64 / D as f64)) as f32;
    }
    r
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (rows, calls) = (args[0], args[1]);
    let mut m = Moments::new(D, 100_000, 1);
    for i in 0..rows {
        m.push(&row(i)).unwrap();
    }
    let f = m.finish().unwrap();
    let mut counts = Counts::new((0..D).map(|j| f.edges(j, 10)).collect());
    for i in 0..rows {
        counts.push(&row(i));
    }
    let threshold = f.ood_threshold(0.999).unwrap();
    let doc = Document {
        format: FORMAT.into(),
        input: InputSchema {
            tensor: "features".into(),
            features: (0..D)
                .map(|j| Feature {
                    name: format!("f{j}"),
                    min: Some(f.min[j] - 1.0),
                    max: Some(f.max[j] + 1.0),
                    allowed: None,
                })
                .collect(),
        },
        reference: Reference {
            rows,
            histograms: counts.histograms,
            mean: f.mean.clone(),
            covariance: f.covariance.clone(),
        },
        self_tests: None,
        input_guard: InputGuard {
            schema: Action::Reject,
            ood: Some(Ood { threshold, action: Action::Flag }),
        },
        output: OutputPolicy::Full,
        budgets: None,
        extraction: None,
        explanation: None,
        monitoring: None,
    };
    let manifest = Manifest::from_document(doc).unwrap();
    let guard = Guard::new(&manifest);
    let requests: Vec<[f32; D]> = (0..1024).map(|i| row(rows + i)).collect();
    let mut scratch = Vec::with_capacity(D);
    let mut ns = Vec::with_capacity(calls as usize);
    let mut flagged = 0u64;
    for i in 0..calls {
        let x = &requests[(i % 1024) as usize];
        let t = Instant::now();
        let v = guard.check(std::hint::black_box(x), &mut scratch);
        ns.push(t.elapsed().as_nanos() as u64);
        flagged += u64::from(std::hint::black_box(v).out_of_distribution);
    }
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    ns.sort_unstable();
    let q = |p: f64| ns[((ns.len() - 1) as f64 * p) as usize];
    println!(
        r#"{{"op":"guard_check","features":{D},"calls":{calls},"p50_ns":{},"p99_ns":{},"mean_ns":{mean:.1},"flagged":{flagged}}}"#,
        q(0.5),
        q(0.99)
    );
}
