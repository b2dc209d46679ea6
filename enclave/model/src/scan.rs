//! The ONNX scan that runs before tract sees a model: in the owner's `nacre seal` and in the
//! enclave after unsealing ([`crate::Model::load`] calls it). It decodes the protobuf with prost
//! (whose recursion limit bounds nesting) and refuses what no served model needs and what known
//! attacks use:
//! - external data of any kind (CVE-2022-25882, CVE-2024-27318, CVE-2026-27489,
//!   CVE-2026-34446: path traversal, symlinks, hardlinks): a sealed model carries every byte;
//! - operator domains and types off the allow-list (custom-op domains run code the scan cannot
//!   see; string, random, sequence and image-decoding operators have no place in a served model);
//! - STRING tensors stored as `raw_data`, which reach an `unimplemented!` in tract 0.23's tensor
//!   code, and tensors whose data does not match their declared type and shape;
//! - more nodes, subgraph nesting, path length or tensor bytes than [`Limits`] allow.
//!
//! Control-flow operators (`If`, `Loop`, `Scan`) are allowed but counted in the [`Report`]:
//! a graph that steers itself on an input compared to a constant is how ShadowLogic-style
//! backdoors hide, so the owner's tools show them.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto};

/// Operators of the default domain (`""` or `ai.onnx`) a served model may use.
#[rustfmt::skip]
const ONNX_OPS: &[&str] = &[
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Compress",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvInteger", "ConvTranspose", "Cos", "Cosh",
    "CumSum", "DFT", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "DynamicQuantizeLinear",
    "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU",
    "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization", "HammingWindow",
    "HannWindow", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "InstanceNormalization",
    "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual",
    "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "MatMul", "MatMulInteger", "Max",
    "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "Pow", "QLinearConv",
    "QLinearMatMul", "QuantizeLinear", "RNN", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign",
    "Round", "STFT", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unique", "Unsqueeze", "Upsample", "Where", "Xor",
];

/// Operators of `ai.onnx.ml` (classical models exported by skl2onnx and the like).
#[rustfmt::skip]
const ONNX_ML_OPS: &[&str] = &[
    "ArrayFeatureExtractor", "Binarizer", "LinearClassifier", "LinearRegressor", "Normalizer",
    "OneHotEncoder", "Scaler", "TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble",
];

const CONTROL_FLOW: &[&str] = &["If", "Loop", "Scan"];

/// What the scan allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nodes in all graphs together.
    pub max_nodes: usize,
    /// Graphs inside graphs (a `Loop` body is depth 1).
    pub max_subgraph_depth: usize,
    /// Nodes on the longest path through one graph.
    pub max_path: usize,
    /// Bytes of all constant tensors together, as declared by their types and shapes.
    pub max_tensor_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_nodes: 100_000, max_subgraph_depth: 4, max_path: 10_000, max_tensor_bytes: 16 << 30 }
    }
}

/// Why a model is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("the model is not an ONNX protobuf: {0}")]
    Decode(String),
    #[error("the model has no graph")]
    NoGraph,
    #[error(
        "tensor {tensor:?} refers to external data, which a sealed model never has: every byte must be inside it"
    )]
    ExternalData { tensor: String },
    #[error("the model imports operator domain {0:?}, which is not allowed (only ai.onnx and ai.onnx.ml)")]
    Domain(String),
    #[error("operator {op:?} of domain {domain:?} (node {node:?}) is not on the allow-list")]
    Operator { domain: String, op: String, node: String },
    #[error("tensor {tensor:?} is invalid: {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("the model exceeds a limit: {0}")]
    Limit(String),
}

/// What the scan saw in a model it accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub nodes: usize,
    /// Operator type → count, over every graph.
    pub operators: std::collections::BTreeMap<String, usize>,
    /// `If`, `Loop` and `Scan` nodes, which steer the graph at run time.
    pub control_flow: usize,
    pub subgraph_depth: usize,
    pub longest_path: usize,
    pub tensor_bytes: u64,
}

/// Scans `onnx` under `limits`.
pub fn scan(onnx: &[u8], limits: &Limits) -> Result<Report, ScanError> {
    let model = ModelProto::decode(onnx).map_err(|e| ScanError::Decode(e.to_string()))?;
    for opset in &model.opset_import {
        if !matches!(opset.domain.as_str(), "" | "ai.onnx" | "ai.onnx.ml") {
            return Err(ScanError::Domain(opset.domain.clone()));
        }
    }
    let graph = model.graph.as_ref().ok_or(ScanError::NoGraph)?;
    let mut report = Report::default();
    graph_scan(graph, 0, limits, &mut report)?;
    Ok(report)
}

fn graph_scan(g: &GraphProto, depth: usize, limits: &Limits, report: &mut Report) -> Result<(), ScanError> {
    if depth > limits.max_subgraph_depth {
        return Err(ScanError::Limit(format!("subgraphs nested deeper than {}", limits.max_subgraph_depth)));
    }
    report.subgraph_depth = report.subgraph_depth.max(depth);
    for t in &g.initializer {
        tensor_scan(t, limits, report)?;
    }
    for s in &g.sparse_initializer {
        sparse_scan(s, limits, report)?;
    }
    for node in &g.node {
        report.nodes += 1;
        if report.nodes > limits.max_nodes {
            return Err(ScanError::Limit(format!("more than {} nodes", limits.max_nodes)));
        }
        node_scan(node, depth, limits, report)?;
    }
    let path = longest_path(&g.node);
    if path > limits.max_path {
        return Err(ScanError::Limit(format!("a path of {path} nodes, more than {}", limits.max_path)));
    }
    report.longest_path = report.longest_path.max(path);
    Ok(())
}

fn node_scan(node: &NodeProto, depth: usize, limits: &Limits, report: &mut Report) -> Result<(), ScanError> {
    let allowed = match node.domain.as_str() {
        "" | "ai.onnx" => ONNX_OPS,
        "ai.onnx.ml" => ONNX_ML_OPS,
        _ => &[],
    };
    if !allowed.contains(&node.op_type.as_str()) {
        return Err(ScanError::Operator {
            domain: node.domain.clone(),
            op: node.op_type.clone(),
            node: node.name.clone(),
        });
    }
    *report.operators.entry(node.op_type.clone()).or_default() += 1;
    if CONTROL_FLOW.contains(&node.op_type.as_str()) {
        report.control_flow += 1;
    }
    for a in &node.attribute {
        for t in a.t.iter().chain(&a.tensors) {
            tensor_scan(t, limits, report)?;
        }
        for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
            sparse_scan(s, limits, report)?;
        }
        for g in a.g.iter().chain(&a.graphs) {
            graph_scan(g, depth + 1, limits, report)?;
        }
    }
    Ok(())
}

fn sparse_scan(s: &SparseTensorProto, limits: &Limits, report: &mut Report) -> Result<(), ScanError> {
    for t in s.values.iter().chain(&s.indices) {
        tensor_scan(t, limits, report)?;
    }
    Ok(())
}

/// Bytes per element of the fixed-size types tract 0.23 loads (its `create_tensor` and typed
/// branches); `None` for strings and for every type it does not (bfloat16, complex, float8…),
/// which are refused here rather than left to tract's conversions.
fn element_size(t: DataType) -> Option<u64> {
    Some(match t {
        DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Float16 => 2,
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        _ => return None,
    })
}

fn tensor_scan(t: &TensorProto, limits: &Limits, report: &mut Report) -> Result<(), ScanError> {
    let bad = |reason: String| ScanError::Tensor { tensor: t.name.clone(), reason };
    if !t.external_data.is_empty() || t.data_location == Some(DataLocation::External as i32) {
        return Err(ScanError::ExternalData { tensor: t.name.clone() });
    }
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let elements = t
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
        .ok_or_else(|| bad(format!("dimensions {:?} are negative or overflow", t.dims)))?;
    let dtype =
        DataType::try_from(t.data_type).map_err(|_| bad(format!("unknown data type {}", t.data_type)))?;
    let bytes = if dtype == DataType::String {
        if !t.raw_data.is_empty() {
            return Err(bad("a STRING tensor stored as raw_data (tract cannot read it)".into()));
        }
        if t.string_data.len() as u64 != elements {
            return Err(bad(format!("{} strings for {elements} elements", t.string_data.len())));
        }
        t.string_data.iter().map(|s| s.len() as u64).sum()
    } else {
        let size = element_size(dtype).ok_or_else(|| bad(format!("data type {dtype:?} is not supported")))?;
        let bytes = elements.checked_mul(size).ok_or_else(|| bad("too large".into()))?;
        let typed = [
            t.float_data.len(),
            t.int32_data.len(),
            t.int64_data.len(),
            t.double_data.len(),
            t.uint64_data.len(),
            t.string_data.len(),
        ];
        let stored = typed.iter().filter(|&&n| n > 0).count() + usize::from(!t.raw_data.is_empty());
        if stored > 1 {
            return Err(bad("its data is in more than one field".into()));
        }
        // A typed field holds one element per entry (float16 and the small integers one each
        // in int32_data); raw_data holds exactly the bytes.
        if !t.raw_data.is_empty() && t.raw_data.len() as u64 != bytes {
            return Err(bad(format!("{} raw bytes for {elements} elements of {dtype:?}", t.raw_data.len())));
        }
        if let Some(&n) = typed.iter().find(|&&n| n > 0)
            && n as u64 != elements
        {
            return Err(bad(format!("{n} values for {elements} elements of {dtype:?}")));
        }
        bytes
    };
    report.tensor_bytes = report.tensor_bytes.saturating_add(bytes);
    if report.tensor_bytes > limits.max_tensor_bytes {
        return Err(ScanError::Limit(format!(
            "constant tensors of more than {} bytes",
            limits.max_tensor_bytes
        )));
    }
    Ok(())
}

/// Nodes on the longest path through the graph's data flow (inputs and constants are depth 0).
/// Nodes are visited in order with each output's depth recorded; ONNX requires topological
/// order, and an out-of-order input simply counts as depth 0 here (tract refuses such graphs).
fn longest_path(nodes: &[NodeProto]) -> usize {
    let mut depth: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    let mut longest = 0;
    for n in nodes {
        let d = 1 + n.input.iter().filter_map(|i| depth.get(i.as_str())).copied().max().unwrap_or(0);
        for o in &n.output {
            depth.insert(o.as_str(), d);
        }
        longest = longest.max(d);
    }
    longest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tract_onnx::pb::{AttributeProto, OperatorSetIdProto, StringStringEntryProto};

    fn sample() -> ModelProto {
        ModelProto::decode(&crate::sample::mlp_onnx()[..]).unwrap()
    }

    fn scanned(m: &ModelProto) -> Result<Report, ScanError> {
        scan(&m.encode_to_vec(), &Limits::default())
    }

    fn graph(m: &mut ModelProto) -> &mut GraphProto {
        m.graph.as_mut().unwrap()
    }

    #[test]
    fn the_sample_passes_and_is_described() {
        let r = scanned(&sample()).unwrap();
        assert_eq!(r.nodes, 5);
        assert_eq!(r.operators.get("MatMul"), Some(&2));
        assert_eq!((r.control_flow, r.subgraph_depth, r.longest_path), (0, 0, 5));
        assert_eq!(r.tensor_bytes, (12 + 3 + 6 + 2) * 4);
    }

    #[test]
    fn external_data_in_every_form_is_refused() {
        let mut m = sample();
        graph(&mut m).initializer[0].data_location = Some(DataLocation::External as i32);
        assert!(matches!(scanned(&m), Err(ScanError::ExternalData { .. })));
        for location in ["../../etc/passwd", "/etc/shadow", "weights.bin"] {
            let mut m = sample();
            graph(&mut m).initializer[1].external_data =
                vec![StringStringEntryProto { key: "location".into(), value: location.into() }];
            assert!(matches!(scanned(&m), Err(ScanError::ExternalData { .. })), "{location}");
        }
        // Inside a Constant node's attribute too.
        let mut m = sample();
        let mut t = graph(&mut m).initializer[0].clone();
        t.external_data = vec![StringStringEntryProto { key: "location".into(), value: "x".into() }];
        graph(&mut m).node[0].attribute.push(AttributeProto {
            name: "value".into(),
            t: Some(t),
            ..Default::default()
        });
        assert!(matches!(scanned(&m), Err(ScanError::ExternalData { .. })));
    }

    #[test]
    fn operators_and_domains_off_the_list_are_refused() {
        let mut m = sample();
        m.opset_import.push(OperatorSetIdProto { domain: "com.microsoft".into(), version: 1 });
        assert_eq!(scanned(&m), Err(ScanError::Domain("com.microsoft".into())));
        for (domain, op) in
            [("", "RegexFullMatch"), ("", "RandomNormal"), ("custom", "Relu"), ("", "NoSuchOp")]
        {
            let mut m = sample();
            let n = &mut graph(&mut m).node[1];
            n.domain = domain.into();
            n.op_type = op.into();
            assert!(matches!(scanned(&m), Err(ScanError::Operator { .. })), "{domain} {op}");
        }
    }

    #[test]
    fn inconsistent_and_string_raw_tensors_are_refused() {
        type Edit = fn(&mut TensorProto);
        let edits: [(&str, Edit); 8] = [
            ("complex", |t| t.data_type = DataType::Complex64 as i32),
            ("bfloat16", |t| {
                t.data_type = DataType::Bfloat16 as i32;
                t.float_data.clear();
                t.raw_data = vec![0; 24];
            }),
            ("STRING raw", |t| {
                t.data_type = DataType::String as i32;
                t.float_data.clear();
                t.raw_data = vec![0; 48];
            }),
            ("too few values", |t| {
                t.float_data.pop();
            }),
            ("raw and typed", |t| t.raw_data = vec![0; 48]),
            ("raw length", |t| {
                t.float_data.clear();
                t.raw_data = vec![0; 47];
            }),
            ("negative dim", |t| t.dims = vec![-1, 3]),
            ("unknown type", |t| t.data_type = 99),
        ];
        for (what, edit) in edits {
            let mut m = sample();
            edit(&mut graph(&mut m).initializer[0]);
            assert!(matches!(scanned(&m), Err(ScanError::Tensor { .. })), "{what}: {:?}", scanned(&m));
        }
    }

    #[test]
    fn limits_hold_and_control_flow_is_counted() {
        let m = sample();
        let bytes = m.encode_to_vec();
        let tight = |f: fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            scan(&bytes, &l)
        };
        assert!(matches!(tight(|l| l.max_nodes = 4), Err(ScanError::Limit(_))));
        assert!(matches!(tight(|l| l.max_path = 4), Err(ScanError::Limit(_))));
        assert!(matches!(tight(|l| l.max_tensor_bytes = 91), Err(ScanError::Limit(_))));
        assert!(tight(|l| l.max_tensor_bytes = 92).is_ok());
        // An If whose branches are graphs: counted, and nesting beyond the limit refused.
        let mut m = sample();
        let body = GraphProto { node: vec![graph(&mut m).node[1].clone()], ..Default::default() };
        let mut iff = NodeProto { op_type: "If".into(), name: "steer".into(), ..Default::default() };
        iff.attribute.push(AttributeProto {
            name: "then_branch".into(),
            g: Some(body.clone()),
            ..Default::default()
        });
        graph(&mut m).node.push(iff.clone());
        let r = scanned(&m).unwrap();
        assert_eq!((r.control_flow, r.subgraph_depth), (1, 1));
        let mut nested = body;
        for _ in 0..5 {
            let mut n = iff.clone();
            n.attribute[0].g = Some(nested);
            nested = GraphProto { node: vec![n], ..Default::default() };
        }
        let mut m = sample();
        graph(&mut m).node.extend(nested.node);
        assert!(matches!(scanned(&m), Err(ScanError::Limit(_))));
        assert!(matches!(scan(b"\xff\xff\xff", &Limits::default()), Err(ScanError::Decode(_))));
    }
}
