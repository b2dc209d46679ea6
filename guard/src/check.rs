//! A manifest checked against its model: the guarded input exists and is a float tensor of
//! rows of the manifest's features, and every self-test names the model's inputs and outputs
//! with shapes the model accepts; then the self-tests themselves, run by the caller's runtime
//! (tract in the enclave and in `nacre guard check`), within the manifest's tolerance.
//! The guard stays free of tract: the model is described by [`Signature`].

use std::collections::BTreeMap;

use crate::manifest::{Manifest, TensorValue};

/// One declared input or output of the model: a dimension is `None` when it is dynamic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<Option<usize>>,
    /// Whether the element type is 32-bit float (the guard reads f32 rows).
    pub float32: bool,
}

/// The model's inputs and outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Why a manifest does not fit its model, or the model fails its self-tests.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("the guarded input {0:?} is not an input of the model")]
    NoSuchInput(String),
    #[error("the guarded input {name:?} is {shape:?} of {}; the guard reads float32 [rows, {features}] or [{features}]", if *.float32 { "float32" } else { "another type" })]
    InputShape { name: String, shape: Vec<Option<usize>>, float32: bool, features: usize },
    #[error("self-test {test}: {what} {name:?} is not one of the model's")]
    UnknownTensor { test: usize, what: &'static str, name: String },
    #[error("self-test {test}: input {name:?} is missing")]
    MissingInput { test: usize, name: String },
    #[error("self-test {test}: {what} {name:?} has shape {got:?}; the model declares {declared:?}")]
    Shape { test: usize, what: &'static str, name: String, got: Vec<usize>, declared: Vec<Option<usize>> },
    #[error("self-test {test}: the model could not run it: {reason}")]
    Run { test: usize, reason: String },
    #[error(
        "self-test {test}: output {name:?} element {index} is {got}, expected {expected} (tolerance {abs} + {rel}·|expected|)"
    )]
    Mismatch { test: usize, name: String, index: usize, got: f64, expected: f64, abs: f64, rel: f64 },
    #[error(
        "the manifest asks for explanations, which need a model whose only input is the guarded one and whose first output is float32 (it has {inputs} inputs; first output float32: {float32})"
    )]
    Explanation { inputs: usize, float32: bool },
}

fn fits(got: &[usize], declared: &[Option<usize>]) -> bool {
    got.len() == declared.len() && got.iter().zip(declared).all(|(g, d)| d.is_none_or(|d| d == *g))
}

/// Checks what can be checked without running the model.
pub fn check_signature(m: &Manifest, sig: &Signature) -> Result<(), CheckError> {
    let doc = m.document();
    let d = m.features();
    let input = sig
        .inputs
        .iter()
        .find(|i| i.name == doc.input.tensor)
        .ok_or_else(|| CheckError::NoSuchInput(doc.input.tensor.clone()))?;
    let rows_of_d = match input.shape.as_slice() {
        [last] | [_, last] => last.is_none_or(|n| n == d),
        _ => false,
    };
    if !input.float32 || !rows_of_d {
        return Err(CheckError::InputShape {
            name: input.name.clone(),
            shape: input.shape.clone(),
            float32: input.float32,
            features: d,
        });
    }
    for (test, v) in doc.self_tests.iter().flat_map(|t| t.vectors.iter()).enumerate() {
        for (what, given, declared) in
            [("input", &v.inputs, &sig.inputs), ("output", &v.outputs, &sig.outputs)]
        {
            for (name, t) in given {
                let spec = declared
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| CheckError::UnknownTensor { test, what, name: name.clone() })?;
                if !fits(&t.shape, &spec.shape) {
                    return Err(CheckError::Shape {
                        test,
                        what,
                        name: name.clone(),
                        got: t.shape.clone(),
                        declared: spec.shape.clone(),
                    });
                }
            }
        }
        if let Some(missing) = sig.inputs.iter().find(|i| !v.inputs.contains_key(&i.name)) {
            return Err(CheckError::MissingInput { test, name: missing.name.clone() });
        }
    }
    if doc.explanation.is_some() {
        let float32 = sig.outputs.first().is_some_and(|o| o.float32);
        if sig.inputs.len() != 1 || !float32 {
            return Err(CheckError::Explanation { inputs: sig.inputs.len(), float32 });
        }
    }
    Ok(())
}

/// Outputs of one run: name → (shape, values).
pub type Outputs = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// Runs every self-test through `run` and compares the outputs it names. Returns the count run.
pub fn run_self_tests(
    m: &Manifest,
    mut run: impl FnMut(&BTreeMap<String, TensorValue>) -> Result<Outputs, String>,
) -> Result<usize, CheckError> {
    let Some(tests) = &m.document().self_tests else { return Ok(0) };
    let (abs, rel) = (tests.abs_tolerance, tests.rel_tolerance);
    for (test, v) in tests.vectors.iter().enumerate() {
        let got = run(&v.inputs).map_err(|reason| CheckError::Run { test, reason })?;
        for (name, expected) in &v.outputs {
            let Some((shape, values)) = got.get(name) else {
                return Err(CheckError::UnknownTensor { test, what: "output", name: name.clone() });
            };
            if shape != &expected.shape {
                return Err(CheckError::Shape {
                    test,
                    what: "output",
                    name: name.clone(),
                    got: shape.clone(),
                    declared: expected.shape.iter().map(|&n| Some(n)).collect(),
                });
            }
            for (index, (&g, &e)) in values.iter().zip(&expected.data).enumerate() {
                let within = (g - e).abs() <= abs + rel * e.abs(); // false for NaN
                if !within {
                    return Err(CheckError::Mismatch {
                        test,
                        name: name.clone(),
                        index,
                        got: g,
                        expected: e,
                        abs,
                        rel,
                    });
                }
            }
        }
    }
    Ok(tests.vectors.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::Document;
    use crate::manifest::tests::sample;

    fn spec(name: &str, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec { name: name.into(), shape: shape.to_vec(), float32: true }
    }

    fn model() -> Signature {
        Signature {
            inputs: vec![spec("input", &[None, Some(2)])],
            outputs: vec![spec("output", &[None, Some(2)])],
        }
    }

    #[test]
    fn a_fitting_manifest_passes_and_each_misfit_is_named() {
        let m = Manifest::from_document(sample()).unwrap();
        check_signature(&m, &model()).unwrap();
        let misfit = |edit: fn(&mut Signature)| {
            let mut s = model();
            edit(&mut s);
            check_signature(&m, &s).unwrap_err()
        };
        assert!(matches!(misfit(|s| s.inputs[0].name = "x".into()), CheckError::NoSuchInput(_)));
        assert!(matches!(misfit(|s| s.inputs[0].shape = vec![None, Some(3)]), CheckError::InputShape { .. }));
        assert!(matches!(misfit(|s| s.inputs[0].float32 = false), CheckError::InputShape { .. }));
        assert!(matches!(misfit(|s| s.outputs[0].name = "probs".into()), CheckError::UnknownTensor { .. }));
        assert!(matches!(misfit(|s| s.outputs[0].shape = vec![Some(1), Some(3)]), CheckError::Shape { .. }));
        assert!(matches!(
            misfit(|s| s.inputs.push(spec("mask", &[Some(1)]))),
            CheckError::MissingInput { test: 0, .. }
        ));
        // Explanations run the model on the guarded input alone and read its first output.
        let mut two = model();
        two.inputs.push(spec("mask", &[Some(1)]));
        let untested = Manifest::from_document(Document { self_tests: None, ..sample() }).unwrap();
        assert!(matches!(
            check_signature(&untested, &two),
            Err(CheckError::Explanation { inputs: 2, float32: true })
        ));
    }

    #[test]
    fn self_tests_pass_within_the_tolerance_only() {
        let m = Manifest::from_document(sample()).unwrap();
        let answer = |v: Vec<f64>| {
            move |_: &BTreeMap<String, TensorValue>| -> Result<Outputs, String> {
                Ok([("output".to_owned(), (vec![1, 2], v.clone()))].into())
            }
        };
        // Expected [0.9, 0.1], tolerance 1e-5 + 1e-4·|e|.
        assert_eq!(run_self_tests(&m, answer(vec![0.900_05, 0.1])), Ok(1));
        assert!(matches!(
            run_self_tests(&m, answer(vec![0.9, 0.1002])),
            Err(CheckError::Mismatch { index: 1, .. })
        ));
        assert!(matches!(
            run_self_tests(&m, answer(vec![f64::NAN, 0.1])),
            Err(CheckError::Mismatch { index: 0, .. })
        ));
        assert!(matches!(
            run_self_tests(&m, |_| Ok([("output".to_owned(), (vec![2, 1], vec![0.9, 0.1]))].into())),
            Err(CheckError::Shape { .. })
        ));
        assert!(matches!(run_self_tests(&m, |_| Err("boom".into())), Err(CheckError::Run { test: 0, .. })));
    }
}
