//! The one module through which Nacre uses tract (STYLE.md: load from a byte buffer, optimize
//! once, share the runnable plan, run per request). The model owner's `nacre seal` loads the
//! model here before sealing it; the enclave loads the unsealed buffer here.
#![forbid(unsafe_code)]

pub mod sample;

use std::io::Cursor;
use std::sync::Arc;

use tract_onnx::prelude::*;

/// Why a model could not be loaded or run. tract's own message is kept whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Run(String),
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
        load().map(|plan| Model { plan }).map_err(|e| ModelError::Load(format!("{e:#}")))
    }

    /// The declared input facts (dtype and shape), for request validation.
    pub fn input_facts(&self) -> Result<Vec<TypedFact>, ModelError> {
        let m = self.plan.model();
        (0..m.inputs.len())
            .map(|i| m.input_fact(i).cloned().map_err(|e| ModelError::Load(format!("{e:#}"))))
            .collect()
    }

    /// Runs one inference.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
        self.plan.run(inputs).map_err(|e| ModelError::Run(format!("{e:#}")))
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
    fn refuses_what_is_not_onnx() {
        assert!(matches!(Model::load(b"not a model"), Err(ModelError::Load(_))));
        let mut truncated = sample::mlp_onnx();
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(Model::load(&truncated), Err(ModelError::Load(_))));
    }
}
