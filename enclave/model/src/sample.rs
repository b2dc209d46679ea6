//! A small ONNX model built in code (no downloads, no Python): `y = relu(x·W1 + b1)·W2 + b2`,
//! x: f32[1, 4], y: f32[1, 2]. Used by tests and the demo; [`mlp_reference`] computes the same
//! function in plain Rust so outputs can be checked.

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{Tensor, Value};
use tract_onnx::pb::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

const W1: [[f32; 3]; 4] = [[0.5, -1.0, 0.25], [1.5, 0.5, -0.5], [-0.75, 0.25, 1.0], [0.1, 0.2, 0.3]];
const B1: [f32; 3] = [0.1, -0.2, 0.3];
const W2: [[f32; 2]; 3] = [[1.0, -1.0], [0.5, 2.0], [-1.5, 0.75]];
const B2: [f32; 2] = [0.05, -0.05];

fn tensor(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: data,
        ..Default::default()
    }
}

/// A value's declaration; a negative dimension is the dynamic batch dimension `N`.
fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims.iter().map(|&d| Dimension {
        value: Some(if d < 0 {
            dimension::Value::DimParam("N".into())
        } else {
            dimension::Value::DimValue(d)
        }),
        ..Default::default()
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: dim.collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// The serialized ONNX model.
pub fn mlp_onnx() -> Vec<u8> {
    mlp(1)
}

/// The model with W1 one row too wide: it passes the scan (every tensor is consistent) and
/// tract refuses it when typing the graph. For tests of how load failures are reported.
pub fn mlp_onnx_mistyped() -> Vec<u8> {
    let mut m = ModelProto::decode(&mlp(1)[..]).unwrap_or_default();
    if let Some(w1) = m.graph.as_mut().and_then(|g| g.initializer.first_mut()) {
        w1.dims = vec![5, 3];
        w1.float_data.extend([0.0; 3]);
    }
    m.encode_to_vec()
}

/// The same model with a dynamic batch dimension: f32[N,4] -> f32[N,2].
pub fn mlp_onnx_batched() -> Vec<u8> {
    mlp(-1)
}

fn mlp(batch: i64) -> Vec<u8> {
    let graph = GraphProto {
        name: "nacre-sample-mlp".into(),
        node: vec![
            node("MatMul", &["x", "w1"], "h0"),
            node("Add", &["h0", "b1"], "h1"),
            node("Relu", &["h1"], "h2"),
            node("MatMul", &["h2", "w2"], "h3"),
            node("Add", &["h3", "b2"], "y"),
        ],
        initializer: vec![
            tensor("w1", &[4, 3], W1.iter().flatten().copied().collect()),
            tensor("b1", &[3], B1.to_vec()),
            tensor("w2", &[3, 2], W2.iter().flatten().copied().collect()),
            tensor("b2", &[2], B2.to_vec()),
        ],
        input: vec![value("x", &[batch, 4])],
        output: vec![value("y", &[batch, 2])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "nacre".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The same function in plain Rust.
pub fn mlp_reference(x: &[f32; 4]) -> [f32; 2] {
    let mut h = B1;
    for (j, hj) in h.iter_mut().enumerate() {
        for (i, xi) in x.iter().enumerate() {
            *hj += xi * W1[i][j];
        }
        *hj = hj.max(0.0);
    }
    let mut y = B2;
    for (k, yk) in y.iter_mut().enumerate() {
        for (j, hj) in h.iter().enumerate() {
            *yk += hj * W2[j][k];
        }
    }
    y
}
