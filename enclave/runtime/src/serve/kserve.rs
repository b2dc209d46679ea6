//! The Open Inference Protocol (KServe v2) request and response bodies, and the validation a
//! request passes before tract sees it: declared input names, datatype, shape (dynamic
//! dimensions allowed where the model has them), element count, and no NaN or infinity.
//! Requests are untrusted: every refusal names the input and what is wrong.

use serde::{Deserialize, Serialize};

/// Largest element count of one input (bounds the memory one request can make us allocate).
pub const MAX_ELEMENTS: usize = 1 << 22;

/// A declared model input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    /// KServe datatype name (`FP32`, `INT64`, …).
    pub datatype: String,
    /// `-1` for a dynamic dimension (KServe's convention in metadata).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Row-major, flat or nested; numbers only.
    pub data: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<f32>,
}

/// A validated FP32 input, ready for tract.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedInput {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Why a request was refused (HTTP 400 with `{"error": reason}`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("input {0:?} is not an input of this model")]
    UnknownInput(String),
    #[error("input {0:?} is missing")]
    MissingInput(String),
    #[error("input {0:?} given twice")]
    DuplicateInput(String),
    #[error("input {name:?}: datatype {got}, the model takes {want}")]
    Datatype { name: String, got: String, want: String },
    #[error("input {name:?}: shape {got:?} does not fit the model's {want:?}")]
    Shape { name: String, got: Vec<i64>, want: Vec<i64> },
    #[error("input {name:?}: {got} values for shape {shape:?} ({want} expected)")]
    Count { name: String, got: usize, want: usize, shape: Vec<i64> },
    #[error("input {name:?}: element {index} is {what}")]
    Value { name: String, index: usize, what: &'static str },
    #[error("input {0:?}: more than {MAX_ELEMENTS} elements")]
    TooLarge(String),
    #[error("output {0:?} is not an output of this model")]
    UnknownOutput(String),
}

/// Checks `req` against the model's declared inputs; returns the inputs in model order.
pub fn validate(
    req: &InferRequest,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    allow_non_finite: bool,
) -> Result<Vec<CheckedInput>, Invalid> {
    for (i, t) in req.inputs.iter().enumerate() {
        if req.inputs[..i].iter().any(|o| o.name == t.name) {
            return Err(Invalid::DuplicateInput(t.name.clone()));
        }
        if !inputs.iter().any(|s| s.name == t.name) {
            return Err(Invalid::UnknownInput(t.name.clone()));
        }
    }
    if let Some(wanted) = &req.outputs
        && let Some(o) = wanted.iter().find(|o| !outputs.iter().any(|s| s.name == o.name))
    {
        return Err(Invalid::UnknownOutput(o.name.clone()));
    }
    let mut out = Vec::with_capacity(inputs.len());
    for spec in inputs {
        let t = req
            .inputs
            .iter()
            .find(|t| t.name == spec.name)
            .ok_or_else(|| Invalid::MissingInput(spec.name.clone()))?;
        if t.datatype != spec.datatype {
            return Err(Invalid::Datatype {
                name: t.name.clone(),
                got: t.datatype.clone(),
                want: spec.datatype.clone(),
            });
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape.iter().zip(&spec.shape).all(|(&g, &w)| g >= 1 && (w == -1 || g == w));
        if !fits {
            return Err(Invalid::Shape {
                name: t.name.clone(),
                got: t.shape.clone(),
                want: spec.shape.clone(),
            });
        }
        let want = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| Invalid::TooLarge(t.name.clone()))?;
        let mut data = Vec::with_capacity(want.min(MAX_ELEMENTS));
        flatten(&t.name, &t.data, &mut data, allow_non_finite, want)?;
        if data.len() != want {
            return Err(Invalid::Count {
                name: t.name.clone(),
                got: data.len(),
                want,
                shape: t.shape.clone(),
            });
        }
        out.push(CheckedInput { shape: t.shape.iter().map(|&d| d as usize).collect(), data });
    }
    Ok(out)
}

fn flatten(
    name: &str,
    v: &serde_json::Value,
    out: &mut Vec<f32>,
    allow_non_finite: bool,
    limit: usize,
) -> Result<(), Invalid> {
    match v {
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(name, item, out, allow_non_finite, limit)?;
            }
            Ok(())
        }
        serde_json::Value::Number(n) => {
            if out.len() >= limit {
                // Count the rest without storing it: the error reports the true count.
                out.push(0.0);
                return Ok(());
            }
            let index = out.len();
            let x =
                n.as_f64().ok_or(Invalid::Value { name: name.into(), index, what: "not a number" })? as f32;
            if !x.is_finite() && !allow_non_finite {
                return Err(Invalid::Value {
                    name: name.into(),
                    index,
                    what: "not finite (NaN, ±inf or out of FP32 range)",
                });
            }
            out.push(x);
            Ok(())
        }
        _ => Err(Invalid::Value { name: name.into(), index: out.len(), what: "not a number" }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn specs() -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        (
            vec![TensorSpec { name: "x".into(), datatype: "FP32".into(), shape: vec![-1, 4] }],
            vec![TensorSpec { name: "y".into(), datatype: "FP32".into(), shape: vec![-1, 2] }],
        )
    }

    fn req(json: &str) -> InferRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn accepts_flat_and_nested_data() {
        let (i, o) = specs();
        let flat = req(r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#);
        let nested =
            req(r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}]}"#);
        assert_eq!(validate(&flat, &i, &o, false).unwrap()[0].data, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(validate(&nested, &i, &o, false).unwrap()[0].shape, vec![2, 4]);
    }

    #[test]
    fn every_bad_request_is_named() {
        let (i, o) = specs();
        let cases = [
            (r#"{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#, "not an input"),
            (r#"{"inputs":[]}"#, "missing"),
            (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#, "datatype"),
            (r#"{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, "shape"),
            (r#"{"inputs":[{"name":"x","shape":[0,4],"datatype":"FP32","data":[]}]}"#, "shape"),
            (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#, "3 values"),
            (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, "5 values"),
            (r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,"3",4]}]}"#, "element 2"),
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,1e39,4]}]}"#,
                "not finite",
            ),
            (r#"{"inputs":[{"name":"x","shape":[4194305,4],"datatype":"FP32","data":[]}]}"#, "more than"),
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                "twice",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"q"}]}"#,
                "not an output",
            ),
        ];
        for (json, reason) in cases {
            let e = validate(&req(json), &i, &o, false).unwrap_err().to_string();
            assert!(e.contains(reason), "{json}: {e}");
        }
        assert!(serde_json::from_str::<InferRequest>(r#"{"inputs":[],"extra":1}"#).is_err());
    }
}
