//! The one module through which Nacre uses tract (STYLE.md: load from a byte buffer, optimize
//! once, share the runnable plan, run per request). The model owner's `nacre seal` loads the
//! model here before sealing it; the enclave loads the unsealed buffer here.
#![forbid(unsafe_code)]

pub mod guarded;
pub mod sample;
pub mod scan;
pub mod tensor;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{DimLike, bail};

pub use tensor::{ByteStrings, Datatype, DatatypeError, Tensor, TensorData};

/// Which step of using the model failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// The scan before tract ([`scan`]) refused the model.
    Refused,
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
            ModelErrorKind::Refused => "model_refused",
            ModelErrorKind::Load => "model_load_failed",
            ModelErrorKind::Signature => "model_signature_unreadable",
            ModelErrorKind::Run => "inference_failed",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ModelErrorKind::Refused => "the model is refused",
            ModelErrorKind::Load => "the model cannot be loaded",
            ModelErrorKind::Signature => "the model's inputs and outputs cannot be read",
            ModelErrorKind::Run => "inference failed",
        }
    }
}

/// Why a model could not be loaded or run.
///
/// `Display` and `Debug` give the kind and its stable code only, and for a refusal the scan's
/// reason (names of operators and tensors, never their values). tract's own text can describe
/// the model's constant tensors (its weights), so it is kept apart, in [`ModelError::tract_detail`],
/// for the model owner's tools (which hold the plaintext model anyway); the enclave never
/// prints or returns it.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelError {
    kind: ModelErrorKind,
    detail: String,
}

impl core::fmt::Display for ModelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.kind.message(), self.kind.code())?;
        if self.kind == ModelErrorKind::Refused {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
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
    /// The protocol's datatype; `None` for a tract type the protocol cannot carry (TDim,
    /// quantized types, blobs), named in `tract_type`.
    pub datatype: Option<Datatype>,
    pub tract_type: String,
    pub shape: Vec<Option<usize>>,
}

fn datatype_of(t: DatumType) -> Option<Datatype> {
    Some(match t {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::U16 => Datatype::Uint16,
        DatumType::U32 => Datatype::Uint32,
        DatumType::U64 => Datatype::Uint64,
        DatumType::I8 => Datatype::Int8,
        DatumType::I16 => Datatype::Int16,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 => Datatype::Int64,
        DatumType::F16 => Datatype::Fp16,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        DatumType::String => Datatype::Bytes,
        _ => return None,
    })
}

/// A request tensor as tract takes it. BYTES become tract strings: each element must be
/// UTF-8 (the serving layer refuses other bytes before this).
fn to_tract(t: Tensor) -> TractResult<TValue> {
    fn array<T: Datum>(shape: &[usize], v: Vec<T>) -> TractResult<tract_onnx::prelude::Tensor> {
        Ok(tract_ndarray::ArrayD::from_shape_vec(shape, v)?.into_tensor())
    }
    let Tensor { shape, data } = t;
    let tensor = match data {
        TensorData::Bytes(s) => {
            let strings =
                s.iter().map(|e| std::str::from_utf8(e).map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
            array(&shape, strings)?
        }
        other => tensor::each!(other, v => array(&shape, v)?, _s => bail!("BYTES are matched above")),
    };
    Ok(tensor.into())
}

/// An output tensor of tract's as the serving layer takes it.
fn from_tract(t: &tract_onnx::prelude::Tensor) -> TractResult<Tensor> {
    fn plain<T: Datum + Clone>(t: &tract_onnx::prelude::Tensor) -> TractResult<Vec<T>> {
        Ok(t.to_plain_array_view::<T>()?.iter().cloned().collect())
    }
    let data = match t.datum_type() {
        DatumType::Bool => TensorData::Bool(plain(t)?),
        DatumType::U8 => TensorData::Uint8(plain(t)?),
        DatumType::U16 => TensorData::Uint16(plain(t)?),
        DatumType::U32 => TensorData::Uint32(plain(t)?),
        DatumType::U64 => TensorData::Uint64(plain(t)?),
        DatumType::I8 => TensorData::Int8(plain(t)?),
        DatumType::I16 => TensorData::Int16(plain(t)?),
        DatumType::I32 => TensorData::Int32(plain(t)?),
        DatumType::I64 => TensorData::Int64(plain(t)?),
        DatumType::F16 => TensorData::Fp16(plain(t)?),
        DatumType::F32 => TensorData::Fp32(plain(t)?),
        DatumType::F64 => TensorData::Fp64(plain(t)?),
        DatumType::String => TensorData::Bytes(plain::<String>(t)?.into_iter().collect()),
        other => bail!("output of type {other:?} has no datatype in the inference protocol"),
    };
    Ok(Tensor { shape: t.shape().to_vec(), data })
}

/// How long one run's steps took: handing the inputs to tract, running the plan, taking the
/// outputs back (Triton's compute input, infer and output).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTimes {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

/// An optimized, runnable model; cheap to clone and share between requests.
#[derive(Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    /// The same model optimized with its batch dimension fixed at 1, where it has one: tract
    /// then picks kernels for the known shapes (measured on the small CNN: 97–111 µs against
    /// 157–159 µs for the generic plan), and batch 1 is what most clients send.
    batch1: Option<Arc<TypedRunnableModel>>,
}

/// Models up to this size get a plan specialised for batch 1 beside the generic one: the
/// second plan holds its own packed weights, so it doubles the weights' memory.
pub const BATCH1_PLAN_MAX_BYTES: usize = 64 << 20;

/// The symbol every input's first dimension is, when they share one: the batch dimension.
fn batch_symbol(model: &TypedModel) -> TractResult<Option<Symbol>> {
    let mut symbol: Option<Symbol> = None;
    for i in 0..model.inputs.len() {
        let fact = model.input_fact(i)?;
        let Some(TDim::Sym(s)) = fact.shape.iter().next() else { return Ok(None) };
        match &symbol {
            Some(seen) if seen != s => return Ok(None),
            _ => symbol = Some(s.clone()),
        }
    }
    Ok(symbol)
}

impl core::fmt::Debug for Model {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model").field("inputs", &self.plan.model().inputs.len()).finish()
    }
}

impl Model {
    /// Parses ONNX from memory (models with external data files are refused: there is no file
    /// system to read them from), optimizes once and builds the plan.
    /// A model of at most [`BATCH1_PLAN_MAX_BYTES`] with a batch dimension also gets a plan
    /// specialised for batch 1 ([`Self::has_batch1_plan`]).
    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        Self::load_with(onnx, onnx.len() <= BATCH1_PLAN_MAX_BYTES)
    }

    /// [`Self::load`], choosing whether to build the batch-1 plan (benchmarks compare both).
    pub fn load_with(onnx: &[u8], batch1_plan: bool) -> Result<Self, ModelError> {
        // Nothing reaches tract that the scan refuses (external data, unknown operators,
        // STRING raw_data, inconsistent tensors, oversized graphs).
        scan::scan(onnx, &scan::Limits::default())
            .map_err(|e| ModelError::new(ModelErrorKind::Refused, e.to_string()))?;
        let load = || -> TractResult<Model> {
            let typed = tract_onnx::onnx().model_for_read(&mut Cursor::new(onnx))?.into_typed()?;
            let batch1 = match batch_symbol(&typed)? {
                Some(n) if batch1_plan => {
                    let fixed = typed.set_symbols(&[(n, TDim::Val(1))].into_iter().collect())?;
                    Some(fixed.into_optimized()?.into_runnable()?)
                }
                _ => None,
            };
            Ok(Model { plan: typed.into_optimized()?.into_runnable()?, batch1 })
        };
        load().map_err(load_error)
    }

    /// Whether batch-1 requests run on a plan specialised for them.
    pub fn has_batch1_plan(&self) -> bool {
        self.batch1.is_some()
    }

    /// Whether every input's first dimension is one shared dynamic dimension (the batch).
    pub fn has_batch_dimension(&self) -> bool {
        batch_symbol(self.plan.model()).ok().flatten().is_some()
    }

    /// Whether requests can be stacked along the batch dimension and their outputs cut back
    /// apart: every input and every output has the batch as its first dimension.
    pub fn batchable(&self) -> bool {
        let m = self.plan.model();
        let Ok(Some(n)) = batch_symbol(m) else { return false };
        (0..m.outputs.len()).all(|i| {
            m.output_fact(i).is_ok_and(|f| matches!(f.shape.iter().next(), Some(TDim::Sym(s)) if *s == n))
        })
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
            datatype: datatype_of(fact.datum_type),
            tract_type: format!("{:?}", fact.datum_type),
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

    /// Runs one inference: `inputs` in the model's input order, outputs in its output order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        self.run_timed(inputs).map(|(outputs, _)| outputs)
    }

    /// [`Self::run`], and how long each step took.
    pub fn run_timed(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, RunTimes), ModelError> {
        let start = Instant::now();
        let plan = match &self.batch1 {
            Some(b1) if inputs.iter().all(|t| t.shape.first() == Some(&1)) => b1,
            _ => &self.plan,
        };
        let inputs =
            inputs.into_iter().map(to_tract).collect::<TractResult<TVec<TValue>>>().map_err(run_error)?;
        let converted = Instant::now();
        let outputs = plan.run(inputs).map_err(run_error)?;
        let ran = Instant::now();
        let outputs = outputs.iter().map(|t| from_tract(t)).collect::<TractResult<_>>().map_err(run_error)?;
        let times = RunTimes { input: converted - start, infer: ran - converted, output: ran.elapsed() };
        Ok((outputs, times))
    }
}

/// Where a run's time goes, by operator: for the benchmarks that compare tract with other
/// runtimes (`scripts/bench-serving.sh`), not for serving.
pub mod profile {
    use super::*;
    use tract_onnx::tract_core::plan::{SimpleState, eval};

    /// Runs `inputs` `iters` times on the plan that serving would pick and returns, per
    /// operator name, the total time spent in it, largest first.
    pub fn by_operator(
        model: &Model,
        inputs: &[Tensor],
        iters: usize,
    ) -> Result<Vec<(String, Duration)>, ModelError> {
        let plan = match &model.batch1 {
            Some(b1) if inputs.iter().all(|t| t.shape.first() == Some(&1)) => b1,
            _ => &model.plan,
        };
        let mut totals: std::collections::HashMap<String, Duration> = Default::default();
        let mut state = SimpleState::new(plan).map_err(run_error)?;
        for _ in 0..iters {
            let values = inputs
                .iter()
                .cloned()
                .map(to_tract)
                .collect::<TractResult<TVec<TValue>>>()
                .map_err(run_error)?;
            state
                .run_plan_with_eval(values, |ctx, op_state, node, input| {
                    let start = Instant::now();
                    let out = eval(ctx, op_state, node, input);
                    *totals.entry(node.op().name().to_string()).or_default() += start.elapsed();
                    out
                })
                .map_err(run_error)?;
        }
        let mut out: Vec<(String, Duration)> = totals.into_iter().collect();
        out.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor { shape: shape.to_vec(), data: TensorData::Fp32(v.to_vec()) }
    }

    #[test]
    fn signature_and_runs() {
        let model = Model::load(&sample::mlp_onnx()).unwrap();
        let (inputs, outputs) = model.signature().unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!((inputs[0].name.as_str(), outputs[0].name.as_str()), ("x", "y"));
        assert_eq!(inputs[0].datatype, Some(Datatype::Fp32));
        assert_eq!(inputs[0].shape.last(), Some(&Some(4)));
        assert_eq!(outputs[0].shape.last(), Some(&Some(2)));
        let out = model.run(vec![fp32(&[1, 4], &[1.0, 2.0, 3.0, 4.0])]).unwrap();
        let expected = sample::mlp_reference(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(out[0].shape, vec![1, 2]);
        let TensorData::Fp32(y) = &out[0].data else { panic!("{:?}", out[0].data) };
        for (a, b) in y.iter().zip(expected.iter()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        assert!(model.run(vec![fp32(&[1, 3], &[1.0, 2.0, 3.0])]).is_err());
        assert!(model.run(vec![fp32(&[1, 4], &[1.0, 2.0, 3.0])]).is_err(), "fewer elements than the shape");
    }

    /// A model with a batch dimension runs batch 1 on its specialised plan, and other batches
    /// on the generic one, with the same results.
    #[test]
    fn batch1_plan_beside_the_generic_one() {
        let fixed = Model::load(&sample::mlp_onnx()).unwrap();
        assert!(!fixed.has_batch_dimension() && !fixed.has_batch1_plan());
        let model = Model::load(&sample::mlp_onnx_batched()).unwrap();
        assert!(model.has_batch_dimension() && model.has_batch1_plan() && model.batchable());
        assert!(!fixed.batchable());
        assert!(!Model::load_with(&sample::mlp_onnx_batched(), false).unwrap().has_batch1_plan());
        let ops = profile::by_operator(&model, &[fp32(&[1, 4], &[1.0; 4])], 3).unwrap();
        assert!(!ops.is_empty() && ops.iter().all(|(name, _)| !name.is_empty()), "{ops:?}");
        let rows = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0], [0.1, -0.2, 0.3, -0.4]];
        let run = |rows: &[[f32; 4]]| {
            let x: Vec<f32> = rows.iter().flatten().copied().collect();
            let out = model.run(vec![fp32(&[rows.len(), 4], &x)]).unwrap();
            assert_eq!(out[0].shape, vec![rows.len(), 2]);
            let TensorData::Fp32(y) = &out[0].data else { panic!("{:?}", out[0].data) };
            y.clone()
        };
        let batched = run(&rows);
        for (i, row) in rows.iter().enumerate() {
            let single = run(std::slice::from_ref(row));
            let expected = sample::mlp_reference(row);
            for j in 0..2 {
                assert!((single[j] - expected[j]).abs() < 1e-5, "row {i}: {single:?} vs {expected:?}");
                assert!((batched[2 * i + j] - expected[j]).abs() < 1e-5, "row {i} in the batch");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_onnx() {
        // The scan refuses these before tract sees them, and says why.
        let not = Model::load(b"not a model").unwrap_err();
        assert_eq!(not.kind(), ModelErrorKind::Refused);
        assert!(
            not.to_string().starts_with("the model is refused (model_refused): the model is not an ONNX"),
            "{not}"
        );
        let mut truncated = sample::mlp_onnx();
        truncated.truncate(truncated.len() / 2);
        assert_eq!(Model::load(&truncated).unwrap_err().kind(), ModelErrorKind::Refused);
    }

    /// tract's messages can quote constant tensors; the error's display and debug forms carry
    /// the kind and code only, the text stays in `tract_detail`.
    #[test]
    fn tract_error_text_is_not_displayed() {
        let load = Model::load(&sample::mlp_onnx_mistyped()).unwrap_err();
        assert!(!load.tract_detail().is_empty());
        assert_eq!(load.to_string(), "the model cannot be loaded (model_load_failed)");
        assert!(!format!("{load:?}").contains(load.tract_detail()));
        let model = Model::load(&sample::mlp_onnx()).unwrap();
        let run = model.run(vec![fp32(&[1, 3], &[1.0, 2.0, 3.0])]).unwrap_err();
        assert_eq!(run.kind(), ModelErrorKind::Run);
        assert!(!run.tract_detail().is_empty());
        assert_eq!(run.to_string(), "inference failed (inference_failed)");
        assert!(!format!("{run:?}").contains(run.tract_detail()));
    }

    #[test]
    fn tensors_cross_to_tract_and_back_in_every_datatype() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![1, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![1, u32::MAX]),
            TensorData::Uint64(vec![1, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-1, 2]),
            TensorData::Int32(vec![-1, i32::MAX]),
            TensorData::Int64(vec![i64::MIN, 2]),
            TensorData::Fp16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]),
            TensorData::Fp32(vec![0.25, -1.5]),
            TensorData::Fp64(vec![1e300, -0.0]),
            TensorData::Bytes(["ab".to_owned(), "ü".to_owned()].into_iter().collect()),
        ];
        for data in cases {
            let t = Tensor { shape: vec![1, 2], data };
            let back = from_tract(&to_tract(t.clone()).unwrap().into_tensor()).unwrap();
            assert_eq!(back, t);
        }
        let not_utf8 = ByteStrings::from_parts(vec![0xff], vec![1]).unwrap();
        assert!(to_tract(Tensor { shape: vec![1], data: TensorData::Bytes(not_utf8) }).is_err());
    }
}
