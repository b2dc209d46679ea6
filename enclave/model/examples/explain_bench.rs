#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! One explanation's latency inside the enclave's code path, for `scripts/bench-extraction.sh`:
//! `nacre_model::guarded::explain` (KernelSHAP over tract) on MODEL with the background rows
//! of BG.npy, for each row of ROWS.npy at the cap of COALITIONS, REPEATS times. One JSON line:
//! p50, p99, mean in ms, and the model evaluations one explanation cost.
//!
//! ```text
//! explain_bench MODEL.onnx BG.npy ROWS.npy COALITIONS REPEATS
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use nacre_guard::Manifest;
use nacre_guard::data::Data;
use nacre_model::Model;
use nacre_model::guarded::{explain, explanation_plan};

fn rows(path: &str) -> Vec<Vec<f64>> {
    let data = Data::open(Path::new(path)).unwrap();
    let mut out = Vec::new();
    data.rows(|r, _| -> Result<(), nacre_guard::data::DataError> {
        out.push(r.iter().map(|&v| f64::from(v)).collect());
        Ok(())
    })
    .unwrap();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = Model::load(&std::fs::read(&args[0]).unwrap()).unwrap();
    let (bg, xs) = (rows(&args[1]), rows(&args[2]));
    let (cap, repeats): (u32, usize) = (args[3].parse().unwrap(), args[4].parse().unwrap());
    let (inputs, _) = model.signature().unwrap();
    let d = bg[0].len();
    let doc = serde_json::json!({
        "format": "nacre-guard-v1",
        "input": {"tensor": inputs[0].name, "features": (0..d).map(|i| serde_json::json!({"name": format!("f{i}")})).collect::<Vec<_>>()},
        "reference": {"rows": 2, "histograms": vec![serde_json::json!({"edges": [0.0], "counts": [1, 1]}); d],
                      "mean": vec![0.0; d],
                      "covariance": (0..d).map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect::<Vec<f64>>()).collect::<Vec<_>>()},
        "input_guard": {"schema": "log"},
        "output": {"policy": "full"},
        "explanation": {"max_coalitions": cap, "deadline_ms": 600_000, "background": bg},
    });
    let manifest = Manifest::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let mut ms = Vec::new();
    let mut evaluations = 0;
    for _ in 0..repeats {
        for x in &xs {
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let t = Instant::now();
            let plan = explanation_plan(&manifest, &x).unwrap();
            let e = explain(&model, &manifest, &plan, &x, Instant::now() + Duration::from_secs(600)).unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            evaluations = e.evaluations;
        }
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({"op": "nacre_explain", "coalitions": cap, "background": bg.len(), "features": d,
            "evaluations": evaluations, "explanations": ms.len(), "p50_ms": ms[ms.len() / 2],
            "p99_ms": ms[(ms.len() - 1) * 99 / 100], "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64})
    );
}
