//! The enclave's KernelSHAP ([`nacre_model::guarded::explain`] over nacre-guard's `shap`) on
//! tract, against the `shap` package's values in `shap-golden.json` (scripts/shap-golden.py,
//! computed once; provenance in the file):
//! - the 4-feature sample MLP, where every coalition is evaluated: equal to shap's exact values;
//! - the demo's 30-feature fraud MLP at the default cap of 2,048 coalitions: within 2 % of the
//!   row's total attribution (Σ|φ|) of shap at 65,536 coalitions (shap's own estimate at its
//!   default 2,108 is within 0.6 %), and additive: Σφ = f(x) − E[f(background)] to 1e-5.

use std::time::{Duration, Instant};

use nacre_guard::Manifest;
use nacre_model::Model;
use nacre_model::guarded::{explain, explanation_plan};
use serde_json::{Value, json};
use sha2::Digest;

fn golden() -> Value {
    serde_json::from_str(include_str!("shap-golden.json")).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// A guard manifest for `features` inputs named `tensor`, explaining with `background`.
fn manifest(tensor: &str, features: usize, background: &[Vec<f64>], max_coalitions: u32) -> Manifest {
    let doc = json!({
        "format": "nacre-guard-v1",
        "input": {"tensor": tensor, "features": (0..features).map(|i| json!({"name": format!("f{i}")})).collect::<Vec<_>>()},
        "reference": {
            "rows": 2,
            "histograms": vec![json!({"edges": [0.0], "counts": [1, 1]}); features],
            "mean": vec![0.0; features],
            "covariance": (0..features).map(|i| (0..features).map(|j| if i == j { 1.0 } else { 0.0 }).collect::<Vec<f64>>()).collect::<Vec<_>>(),
        },
        "input_guard": {"schema": "log"},
        "output": {"policy": "full"},
        "explanation": {"max_coalitions": max_coalitions, "deadline_ms": 60_000, "background": background},
    });
    Manifest::parse(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn run(model: &Model, m: &Manifest, x: &[f64]) -> nacre_guard::shap::Explanation {
    let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let plan = explanation_plan(m, &x).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let e = explain(model, m, &plan, &x, deadline).unwrap();
    assert_eq!(e.evaluations, plan.evaluations());
    for (o, a) in e.attributions.iter().enumerate() {
        let sum: f64 = a.iter().sum();
        assert!(
            (sum - (e.value[o] - e.base[o])).abs() < 1e-5,
            "additivity: {sum} vs {}",
            e.value[o] - e.base[o]
        );
    }
    e
}

#[test]
fn kernel_shap_is_exact_on_the_sample_and_close_on_the_fraud_mlp() {
    let g = golden();
    let model = Model::load(&nacre_model::sample::mlp_onnx_batched()).unwrap();
    let s = &g["sample"];
    let bg = rows(&s["background"]);
    let m = manifest("x", 4, &bg, 2048);
    let base: Vec<f64> = serde_json::from_value(s["base"].clone()).unwrap();
    for (r, x) in rows(&s["rows"]).iter().enumerate() {
        let e = run(&model, &m, x);
        assert!(e.exact && e.coalitions == 14, "{} coalitions", e.coalitions);
        let want: Vec<Vec<f64>> = serde_json::from_value(s["values"][r].clone()).unwrap();
        for o in 0..2 {
            assert!((e.base[o] - base[o]).abs() < 1e-5, "base {o}: {} vs shap {}", e.base[o], base[o]);
            for j in 0..4 {
                let (got, want) = (e.attributions[o][j], want[o][j]);
                assert!((got - want).abs() < 1e-5, "row {r} output {o} feature {j}: {got} vs shap {want}");
            }
        }
    }

    let f = &g["fraud"];
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("fraud-mlp-{}.onnx", std::process::id()));
    crate::models_py(&["make".as_ref(), "fraud-mlp".as_ref(), path.as_os_str()]);
    let onnx = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&onnx)),
        f["onnx_sha256"].as_str().unwrap(),
        "models.py made another fraud MLP than the golden values are for"
    );
    let model = Model::load(&onnx).unwrap();
    let bg = rows(&f["background"]);
    let m = manifest("features", 30, &bg, 2048);
    let base = f["base"][0].as_f64().unwrap();
    let mut worst = 0.0f64;
    for (r, x) in rows(&f["rows"]).iter().enumerate() {
        let e = run(&model, &m, x);
        assert!(!e.exact && e.coalitions <= 2048);
        assert!((e.base[0] - base).abs() < 1e-5, "base: {} vs shap {base}", e.base[0]);
        let want: Vec<f64> = serde_json::from_value(f["values"][r][0].clone()).unwrap();
        let total: f64 = want.iter().map(|v| v.abs()).sum();
        let err = e.attributions[0].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        worst = worst.max(err / total);
        assert!(err <= 0.02 * total, "row {r}: max |φ − φ_shap| = {err}, Σ|φ_shap| = {total}");
    }
    eprintln!("fraud MLP: worst max|φ − φ_shap| / Σ|φ_shap| = {worst:.4} at 2,048 coalitions");
}
