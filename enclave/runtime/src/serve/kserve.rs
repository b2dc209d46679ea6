//! The Open Inference Protocol (KServe v2): the model metadata and response bodies, and the
//! request parser ([`parse`]) that reads a request body straight into typed tensors checked
//! against the model's declared inputs: names, datatypes, shapes (dynamic dimensions allowed
//! where the model has them), element counts, values. Requests are untrusted: every refusal
//! is an [`Invalid`] naming the input and what is wrong, and none needs more memory than the
//! model's inputs can take.

pub mod binary;
pub mod parse;
mod sink;
pub mod tensor;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;

pub use parse::{Framing, Options, ParseError, Schema, parse_request};
pub use tensor::TensorData;

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

/// An inference response: JSON, or with the binary tensor extension the JSON followed by the
/// binary outputs' raw data ([`InferResponse::encode`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the model guard flagged (`nacre_guard`, `nacre_ood_score`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    pub outputs: Vec<OutputTensor>,
}

/// One output of a response.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
    /// Sent raw after the JSON (the binary tensor extension), not as JSON `data`.
    pub binary: bool,
}

impl Serialize for OutputTensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("datatype", self.data.datatype().name())?;
        map.serialize_entry("shape", &self.shape)?;
        if self.binary {
            map.serialize_entry(
                "parameters",
                &serde_json::json!({ "binary_data_size": self.data.wire_len() }),
            )?;
        } else {
            map.serialize_entry("data", &JsonData(&self.data))?;
        }
        map.end()
    }
}

/// Elements as JSON: numbers, booleans, and strings for BYTES (tract's strings are UTF-8).
/// JSON has no NaN or infinity: such floats are written as `null`, as serde_json does.
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => s.collect_seq(v),
            TensorData::Uint8(v) => s.collect_seq(v),
            TensorData::Uint16(v) => s.collect_seq(v),
            TensorData::Uint32(v) => s.collect_seq(v),
            TensorData::Uint64(v) => s.collect_seq(v),
            TensorData::Int8(v) => s.collect_seq(v),
            TensorData::Int16(v) => s.collect_seq(v),
            TensorData::Int32(v) => s.collect_seq(v),
            TensorData::Int64(v) => s.collect_seq(v),
            TensorData::Fp16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::Fp32(v) => s.collect_seq(v),
            TensorData::Fp64(v) => s.collect_seq(v),
            TensorData::Bytes(v) => s.collect_seq(v.iter().map(String::from_utf8_lossy)),
        }
    }
}

impl InferResponse {
    /// The response body, and the length of its JSON part when some output is binary (the
    /// `Inference-Header-Content-Length` header; `None`: the body is all JSON).
    pub fn encode(&self) -> Result<(Vec<u8>, Option<usize>), serde_json::Error> {
        let mut body = serde_json::to_vec(self)?;
        if !self.outputs.iter().any(|o| o.binary) {
            return Ok((body, None));
        }
        let json_len = body.len();
        body.reserve(self.outputs.iter().filter(|o| o.binary).map(|o| o.data.wire_len()).sum());
        for output in self.outputs.iter().filter(|o| o.binary) {
            output.data.write_le(&mut body);
        }
        Ok((body, Some(json_len)))
    }
}

/// The input an error is about. Its name is not known yet when its datatype, shape or data
/// come before the name in the request (a name is still required before the input ends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject(pub Option<String>);

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(name) => write!(f, "input {name:?}"),
            None => f.write_str("an input (named later in the request)"),
        }
    }
}

/// Whose `parameters` an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Request,
    Input(Subject),
    Output(Option<String>),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Request => f.write_str("the request"),
            Scope::Input(input) => input.fmt(f),
            Scope::Output(Some(name)) => write!(f, "output {name:?}"),
            Scope::Output(None) => f.write_str("an output (named later in the request)"),
        }
    }
}

/// Why a request was refused (HTTP 400 with `{"error": reason}`). Grouped by what the request
/// got wrong: which tensors, their datatype, shape and size, the values, the rest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("input {0:?} is not an input of this model")]
    UnknownInput(String),
    #[error("input {0:?} is missing")]
    MissingInput(String),
    #[error("input {0:?} given twice")]
    DuplicateInput(String),
    #[error("output {0:?} is not an output of this model")]
    UnknownOutput(String),
    #[error("output {0:?} requested twice")]
    DuplicateOutput(String),

    #[error("input {name:?}: datatype {got}, the model takes {want}")]
    Datatype { name: String, got: String, want: String },
    #[error("{input}: datatype {got:?} is not a datatype of the inference protocol")]
    UnknownDatatype { input: Subject, got: String },
    #[error("{input}: {datatype} is not supported")]
    UnsupportedDatatype { input: Subject, datatype: &'static str },

    #[error("input {name:?}: shape {got:?} does not fit the model's {want:?}")]
    Shape { name: String, got: Vec<i64>, want: Vec<i64> },
    #[error("{input}: a shape of more than {} dimensions", parse::MAX_RANK)]
    Rank { input: Subject },
    #[error("input {0:?}: more than {MAX_ELEMENTS} elements")]
    TooLarge(String),
    #[error("input {name:?}: {got} values for shape {shape:?} ({want} expected)")]
    Count { name: String, got: usize, want: usize, shape: Vec<i64> },
    /// Refused at the first value past the count its shape allows; the rest is not read.
    #[error("input {name:?}: at least {at_least} values for shape {shape:?} ({want} expected)")]
    Overflow { name: String, at_least: usize, want: usize, shape: Vec<i64> },
    /// Data read before its input's shape: more values than the input (or, before its name,
    /// any input of the model) can take.
    #[error("{input}: more than {limit} values, the most the model's input takes")]
    TooManyValues { input: Subject, limit: usize },
    #[error("{input}: data nested deeper than {limit} levels")]
    Depth { input: Subject, limit: usize },

    #[error("input {name:?}: binary_data_size {got} does not fit {datatype} data of shape {shape:?}")]
    BinarySize { name: String, got: usize, shape: Vec<i64>, datatype: &'static str },
    #[error("input {name:?}: the binary data ends after {got} of its {want} bytes")]
    BinaryTruncated { name: String, got: usize, want: usize },
    #[error("input {name:?}: its binary data holds {got} elements; its shape takes {want}")]
    BinaryCount { name: String, got: usize, want: usize },
    #[error("{raw} raw_input_contents for {inputs} inputs: give one per input, or none")]
    RawCount { inputs: usize, raw: usize },
    #[error("input {0:?}: both raw_input_contents and contents")]
    RawAndContents(String),
    #[error("input {0:?} has no data")]
    NoData(String),
    #[error("{0} bytes after the last binary input")]
    TrailingBinary(usize),
    #[error("binary_data_size given, but no Inference-Header-Content-Length says where the JSON ends")]
    BinaryWithoutHeader,

    #[error("{input}: element {index} is {what}")]
    Value { input: Subject, index: usize, what: &'static str },

    #[error("the request id is longer than {} bytes", parse::MAX_ID)]
    IdTooLong,
    #[error("{scope}: more than {} parameters", parse::MAX_PARAMETERS)]
    TooManyParameters { scope: Scope },
    #[error("{scope}: parameter {key:?} {what}")]
    Parameter { scope: Scope, key: String, what: &'static str },
    /// Any string (a key, a name, a BYTES element) past the longest the model's inputs take,
    /// refused before it is buffered whole.
    #[error("a string in the request is longer than {limit} bytes")]
    StringTooLong { limit: usize },
}

/// The element count of `shape` for the model's tensor `spec`: same rank, each dimension the
/// model's or any positive size where the model's is dynamic, at most [`MAX_ELEMENTS`] in all.
pub fn count_for(spec: &TensorSpec, shape: &[i64]) -> Result<usize, Invalid> {
    let fits = shape.len() == spec.shape.len()
        && shape.iter().zip(&spec.shape).all(|(&g, &w)| g >= 1 && (w == -1 || g == w));
    if !fits {
        return Err(Invalid::Shape {
            name: spec.name.clone(),
            got: shape.to_vec(),
            want: spec.shape.clone(),
        });
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| Invalid::TooLarge(spec.name.clone()))
}

/// At most 64 bytes of a string the client sent, for an error message.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
