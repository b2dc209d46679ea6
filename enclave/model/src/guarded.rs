//! A loaded model checked against its guard manifest: the manifest's input and self-tests fit
//! the model's declared signature, then the self-tests run here, on tract, which is what they
//! test (their expected outputs came from the owner's own runtime). The owner's `nacre guard
//! check` and `nacre seal --guard-manifest` run this before sealing; the enclave runs it after
//! unsealing, and a model that fails never serves.

use std::collections::BTreeMap;

use nacre_guard::Manifest;
use nacre_guard::check::{CheckError, Outputs, Signature, TensorSpec, check_signature, run_self_tests};
use nacre_guard::manifest::TensorValue;

use crate::tensor::{Datatype, Tensor, TensorData};
use crate::{Model, ModelError, TensorInfo};

/// The model's signature as the guard reads it.
pub fn signature(model: &Model) -> Result<Signature, ModelError> {
    let (inputs, outputs) = model.signature()?;
    let spec = |t: &TensorInfo| TensorSpec {
        name: t.name.clone(),
        shape: t.shape.clone(),
        float32: t.datatype == Some(Datatype::Fp32),
    };
    Ok(Signature { inputs: inputs.iter().map(spec).collect(), outputs: outputs.iter().map(spec).collect() })
}

/// Why a guarded model is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardedError {
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("the guard manifest does not fit the model: {0}")]
    Check(#[from] CheckError),
}

/// Checks `manifest` against `model` and runs its self-tests; returns how many ran.
pub fn check(model: &Model, manifest: &Manifest) -> Result<usize, GuardedError> {
    let (inputs, _) = model.signature()?;
    check_signature(manifest, &signature(model)?)?;
    let run = |given: &BTreeMap<String, TensorValue>| -> Result<Outputs, String> {
        let mut ordered = Vec::with_capacity(inputs.len());
        for info in &inputs {
            let t = given.get(&info.name).ok_or_else(|| format!("input {:?} is missing", info.name))?;
            ordered.push(to_tensor(&info.name, info.datatype, t)?);
        }
        let (_, outputs) = model.signature().map_err(|e| e.to_string())?;
        // tract's message is not shown: inside the enclave it could quote weights.
        let got = model.run(ordered).map_err(|e| e.to_string())?;
        outputs
            .iter()
            .zip(got)
            .map(|(info, t)| Ok((info.name.clone(), (t.shape.clone(), to_f64(&info.name, &t.data)?))))
            .collect()
    };
    Ok(run_self_tests(manifest, run)?)
}

/// Why an explanation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("the guard manifest has no explanation settings")]
    NotConfigured,
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("the explanation passed its deadline of {0} ms")]
    Deadline(u32),
    #[error("{0}")]
    Shap(String),
}

/// The manifest's KernelSHAP plan for the row `x`: how many evaluations it will cost, before
/// any runs. The sampling is seeded from the row, so one input always gets one explanation.
pub fn explanation_plan(manifest: &Manifest, x: &[f32]) -> Result<nacre_guard::shap::Plan, ExplainError> {
    let settings = manifest.document().explanation.as_ref().ok_or(ExplainError::NotConfigured)?;
    let seed = x
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, v| (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3));
    Ok(nacre_guard::shap::Plan::new(x, &settings.background, settings.max_coalitions as usize, seed))
}

/// Runs `plan` for the row `x` on `model` (whose only input is the guarded one, checked with
/// the manifest), explaining its first output, and gives up at `deadline`.
pub fn explain(
    model: &Model,
    manifest: &Manifest,
    plan: &nacre_guard::shap::Plan,
    x: &[f32],
    deadline: std::time::Instant,
) -> Result<nacre_guard::shap::Explanation, ExplainError> {
    let settings = manifest.document().explanation.as_ref().ok_or(ExplainError::NotConfigured)?;
    let d = x.len();
    // Rows per run: a batch where the model has a batch dimension, else one at a time.
    let chunk = if model.has_batch_dimension() { 4096 } else { 1 };
    let rank = model.signature()?.0.first().map_or(2, |i| i.shape.len());
    let eval = |rows: &[f32], count: usize| -> Result<Vec<f32>, ExplainError> {
        if std::time::Instant::now() > deadline {
            return Err(ExplainError::Deadline(settings.deadline_ms));
        }
        let shape = if rank == 1 { vec![d] } else { vec![count, d] };
        let mut outputs = model.run(vec![Tensor { shape, data: TensorData::Fp32(rows.to_vec()) }])?;
        match outputs.first_mut().map(|t| std::mem::replace(&mut t.data, TensorData::Fp32(Vec::new()))) {
            Some(TensorData::Fp32(v)) => Ok(v),
            _ => Err(ExplainError::Shap("the first output is not float32".into())),
        }
    };
    plan.explain(x, &settings.background, chunk, eval).map_err(|e| match e {
        nacre_guard::shap::ShapError::Model(e) => e,
        other => ExplainError::Shap(other.to_string()),
    })
}

/// A self-test input as the model declares it: floats as they are, integers only when every
/// value is integral and in range.
fn to_tensor(name: &str, datatype: Option<Datatype>, t: &TensorValue) -> Result<Tensor, String> {
    let ints = |lo: f64, hi: f64| -> Result<Vec<i64>, String> {
        t.data
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 && (lo..=hi).contains(&v) {
                    Ok(v as i64)
                } else {
                    Err(format!("input {name:?}: {v} is not an integer of its type"))
                }
            })
            .collect()
    };
    let data = match datatype {
        Some(Datatype::Fp32) => TensorData::Fp32(t.data.iter().map(|&v| v as f32).collect()),
        Some(Datatype::Fp64) => TensorData::Fp64(t.data.clone()),
        Some(Datatype::Int64) => TensorData::Int64(ints(-(2f64.powi(53)), 2f64.powi(53))?),
        Some(Datatype::Int32) => TensorData::Int32(
            ints(f64::from(i32::MIN), f64::from(i32::MAX))?.into_iter().map(|v| v as i32).collect(),
        ),
        other => {
            return Err(format!("input {name:?}: self-tests take float and integer inputs, not {other:?}"));
        }
    };
    Ok(Tensor { shape: t.shape.clone(), data })
}

fn to_f64(name: &str, data: &TensorData) -> Result<Vec<f64>, String> {
    Ok(match data {
        TensorData::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
        TensorData::Uint8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Int8(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Fp16(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Bytes(_) => return Err(format!("output {name:?} is BYTES; self-tests compare numbers")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nacre_guard::manifest::{
        Action, Document, FORMAT, Feature, Histogram, InputGuard, InputSchema, OutputPolicy, Reference,
        SelfTest, SelfTests,
    };

    /// A manifest for the sample MLP (x: f32[1,4] → y: f32[1,2]) with one self-test whose
    /// expected output is the plain-Rust reference's.
    pub(crate) fn manifest(expected: [f32; 2]) -> Manifest {
        let x = [1.0f32, -2.0, 0.5, 3.0];
        let features = (0..4)
            .map(|i| Feature { name: format!("f{i}"), min: Some(-10.0), max: Some(10.0), allowed: None })
            .collect();
        let tv = |shape: Vec<usize>, data: Vec<f64>| TensorValue { shape, data };
        Manifest::from_document(Document {
            format: FORMAT.into(),
            input: InputSchema { tensor: "x".into(), features },
            reference: Reference {
                rows: 4,
                histograms: vec![Histogram { edges: vec![0.0], counts: vec![2, 2] }; 4],
                mean: vec![0.0; 4],
                covariance: (0..4)
                    .map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
                    .collect(),
            },
            self_tests: Some(SelfTests {
                abs_tolerance: 1e-5,
                rel_tolerance: 1e-5,
                expected_from: "nacre_model::sample::mlp_reference".into(),
                vectors: vec![SelfTest {
                    inputs: [("x".to_owned(), tv(vec![1, 4], x.iter().map(|&v| f64::from(v)).collect()))]
                        .into(),
                    outputs: [(
                        "y".to_owned(),
                        tv(vec![1, 2], expected.iter().map(|&v| f64::from(v)).collect()),
                    )]
                    .into(),
                }],
            }),
            input_guard: InputGuard { schema: Action::Reject, ood: None },
            output: OutputPolicy::Full,
            budgets: None,
            extraction: None,
            explanation: None,
            monitoring: None,
        })
        .unwrap()
    }

    #[test]
    fn the_sample_passes_its_self_test_and_a_wrong_expectation_fails() {
        let model = Model::load(&crate::sample::mlp_onnx()).unwrap();
        let right = crate::sample::mlp_reference(&[1.0, -2.0, 0.5, 3.0]);
        assert_eq!(check(&model, &manifest(right)).unwrap(), 1);
        let wrong = [right[0] + 0.01, right[1]];
        assert!(matches!(
            check(&model, &manifest(wrong)),
            Err(GuardedError::Check(CheckError::Mismatch { index: 0, .. }))
        ));
    }
}
