//! The one module through which Nacre uses tract (STYLE.md: load from a byte buffer, optimize
//! once, share the runnable plan, run per request). The model owner's `nacre seal` loads the
//! model here before sealing it; the enclave loads the unsealed buffer here.
#![forbid(unsafe_code)]

pub mod sample;

use std::io::Cursor;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

/// Which step of using the model failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// Parsing, optimizing or planning the ONNX model.
    Load,
    /// Reading the declared inputs and outputs of a loaded model.
    Signature,
    /// Running one inference.
    Run,
}

impl ModelErrorKind {
    /// A stable code for logs, health endpoints and API errors.
    pub fn code(self) -> &'static str {
        match self {
            ModelErrorKind::Load => "model_load_failed",
            ModelErrorKind::Signature => "model_signature_unreadable",
            ModelErrorKind::Run => "inference_failed",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ModelErrorKind::Load => "the model cannot be loaded",
            ModelErrorKind::Signature => "the model's inputs and outputs cannot be read",
            ModelErrorKind::Run => "inference failed",
        }
    }
}

/// Why a model could not be loaded or run.
///
/// `Display` and `Debug` give the kind and its stable code only. tract's own text can describe
/// the model's constant tensors (its weights), so it is kept apart, in [`ModelError::tract_detail`],
/// for the model owner's tools (which hold the plaintext model anyway); the enclave never
/// prints or returns it.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", .kind.message(), .kind.code())]
pub struct ModelError {
    kind: ModelErrorKind,
    detail: String,
}

impl ModelError {
    fn new(kind: ModelErrorKind, detail: String) -> Self {
        ModelError { kind, detail }
    }

    pub fn kind(&self) -> ModelErrorKind {
        self.kind
    }

    /// The stable code of the kind ([`ModelErrorKind::code`]).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// tract's message, whole. It can quote constant tensors of the model: show it only to
    /// someone who may see the plaintext model, never from inside the enclave.
    pub fn tract_detail(&self) -> &str {
        &self.detail
    }
}

impl core::fmt::Debug for ModelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ModelError").field("kind", &self.kind).finish_non_exhaustive()
    }
}

fn load_error(e: impl core::fmt::Display) -> ModelError {
    ModelError::new(ModelErrorKind::Load, format!("{e:#}"))
}

fn signature_error(e: impl core::fmt::Display) -> ModelError {
    ModelError::new(ModelErrorKind::Signature, format!("{e:#}"))
}

fn run_error(e: impl core::fmt::Display) -> ModelError {
    ModelError::new(ModelErrorKind::Run, format!("{e:#}"))
}

/// One declared input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// KServe v2 datatype name.
    pub datatype: String,
    pub shape: Vec<Option<usize>>,
}

fn kserve_datatype(t: DatumType) -> &'static str {
    match t {
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::F16 => "FP16",
        DatumType::I64 => "INT64",
        DatumType::I32 => "INT32",
        DatumType::I16 => "INT16",
        DatumType::I8 => "INT8",
        DatumType::U8 => "UINT8",
        DatumType::Bool => "BOOL",
        _ => "UNSUPPORTED",
    }
}

/// An optimized, runnable model; cheap to clone and share between requests.
#[derive(Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
}

impl core::fmt::Debug for Model {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model").field("inputs", &self.plan.model().inputs.len()).finish()
    }
}

impl Model {
    /// Parses ONNX from memory (models with external data files are refused: there is no file
    /// system to read them from), optimizes once and builds the plan.
    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        let load = || -> TractResult<Arc<TypedRunnableModel>> {
            tract_onnx::onnx().model_for_read(&mut Cursor::new(onnx))?.into_optimized()?.into_runnable()
        };
        load().map(|plan| Model { plan }).map_err(load_error)
    }

    /// The declared input facts (dtype and shape), for request validation.
    pub fn input_facts(&self) -> Result<Vec<TypedFact>, ModelError> {
        let m = self.plan.model();
        (0..m.inputs.len()).map(|i| m.input_fact(i).cloned().map_err(signature_error)).collect()
    }

    /// Names, element types and shapes (`None` = dynamic) of the model's inputs and outputs,
    /// as the serving layer declares them to clients and validates requests against.
    pub fn signature(&self) -> Result<(Vec<TensorInfo>, Vec<TensorInfo>), ModelError> {
        let m = self.plan.model();
        // An output's ONNX name is its outlet label; the producing node has its own name.
        let info = |outlet: &OutletId, fact: &TypedFact| TensorInfo {
            name: m.outlet_label(*outlet).unwrap_or(&m.node(outlet.node).name).to_owned(),
            datatype: kserve_datatype(fact.datum_type).to_owned(),
            shape: fact.shape.iter().map(|d| d.to_usize().ok()).collect(),
        };
        let mut inputs = Vec::new();
        for (i, o) in m.inputs.iter().enumerate() {
            inputs.push(info(o, m.input_fact(i).map_err(signature_error)?));
        }
        let mut outputs = Vec::new();
        for (i, o) in m.outputs.iter().enumerate() {
            outputs.push(info(o, m.output_fact(i).map_err(signature_error)?));
        }
        Ok((inputs, outputs))
    }

    /// Runs one inference on FP32 inputs (in model input order) and returns FP32 outputs
    /// with their shapes.
    #[allow(clippy::type_complexity)] // (shape, row-major data) pairs: clearer spelled out
    pub fn run_f32(
        &self,
        inputs: Vec<(Vec<usize>, Vec<f32>)>,
    ) -> Result<Vec<(Vec<usize>, Vec<f32>)>, ModelError> {
        let tensors = inputs
            .into_iter()
            .map(|(shape, data)| {
                tract_ndarray::ArrayD::from_shape_vec(shape, data).map(|a| a.into_tensor().into())
            })
            .collect::<Result<TVec<TValue>, _>>()
            .map_err(run_error)?;
        let outputs = self.plan.run(tensors).map_err(run_error)?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().map_err(run_error)?;
                Ok((view.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }

    /// Runs one inference.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
        self.plan.run(inputs).map_err(run_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_sample_mlp() {
        let model = Model::load(&sample::mlp_onnx()).unwrap();
        let facts = model.input_facts().unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].datum_type, f32::datum_type());
        let x = tract_ndarray::arr2(&[[1.0f32, 2.0, 3.0, 4.0]]).into_tensor();
        let out = model.run(tvec!(x.into())).unwrap();
        let y = out[0].to_plain_array_view::<f32>().unwrap();
        let expected = sample::mlp_reference(&[1.0, 2.0, 3.0, 4.0]);
        for (a, b) in y.iter().zip(expected.iter()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn signature_and_f32_runs() {
        let model = Model::load(&sample::mlp_onnx()).unwrap();
        let (inputs, outputs) = model.signature().unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!((inputs[0].name.as_str(), outputs[0].name.as_str()), ("x", "y"));
        assert_eq!(inputs[0].datatype, "FP32");
        assert_eq!(inputs[0].shape.last(), Some(&Some(4)));
        assert_eq!(outputs[0].shape.last(), Some(&Some(2)));
        let out = model.run_f32(vec![(vec![1, 4], vec![1.0, 2.0, 3.0, 4.0])]).unwrap();
        let expected = sample::mlp_reference(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(out[0].0, vec![1, 2]);
        for (a, b) in out[0].1.iter().zip(expected.iter()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(model.run_f32(vec![(vec![1, 3], vec![1.0, 2.0, 3.0])]).is_err());
    }

    #[test]
    fn refuses_what_is_not_onnx() {
        assert_eq!(Model::load(b"not a model").unwrap_err().kind(), ModelErrorKind::Load);
        let mut truncated = sample::mlp_onnx();
        truncated.truncate(truncated.len() / 2);
        assert_eq!(Model::load(&truncated).unwrap_err().kind(), ModelErrorKind::Load);
    }

    /// tract's messages can quote constant tensors; the error's display and debug forms carry
    /// the kind and code only, the text stays in `tract_detail`.
    #[test]
    fn tract_error_text_is_not_displayed() {
        let mut truncated = sample::mlp_onnx();
        truncated.truncate(truncated.len() / 2);
        let load = Model::load(&truncated).unwrap_err();
        assert!(!load.tract_detail().is_empty());
        assert_eq!(load.to_string(), "the model cannot be loaded (model_load_failed)");
        assert!(!format!("{load:?}").contains(load.tract_detail()));
        let model = Model::load(&sample::mlp_onnx()).unwrap();
        let run = model.run_f32(vec![(vec![1, 3], vec![1.0, 2.0, 3.0])]).unwrap_err();
        assert_eq!(run.kind(), ModelErrorKind::Run);
        assert!(!run.tract_detail().is_empty());
        assert_eq!(run.to_string(), "inference failed (inference_failed)");
        assert!(!format!("{run:?}").contains(run.tract_detail()));
    }
}
