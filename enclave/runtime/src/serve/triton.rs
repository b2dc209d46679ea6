//! Triton's model-configuration extension (`GET /v2/models/{m}[/versions/{v}]/config`): the
//! model's `ModelConfig` as JSON, as Triton's tools and clients read it.
//!
//! The configuration states what the enclave serves, nothing more. Without dynamic batching:
//! `max_batch_size` 0 (the batch, if any, is the first dimension of each tensor's shape, which
//! requests fill) and each tensor's full shape, -1 for a dynamic dimension. With it, as Triton
//! states a batching model: `max_batch_size` N, the shapes without the batch dimension, and
//! `dynamic_batching` with the queue delay.

use serde_json::{Value, json};

use super::batcher::BatchConfig;
use super::kserve::{ModelMetadata, TensorSpec};
use nacre_model::Datatype;

/// A tensor's dims as the configuration states them: without the batch dimension when the
/// model batches (`max_batch_size` > 0).
pub fn dims(t: &TensorSpec, batching: Option<BatchConfig>) -> Vec<i64> {
    let skip = usize::from(batching.is_some()).min(t.shape.len());
    t.shape[skip..].to_vec()
}

pub fn config(meta: &ModelMetadata, batching: Option<BatchConfig>) -> Value {
    let tensor = |t: &TensorSpec| {
        // The metadata's datatypes are the protocol's names (`Ready::metadata`).
        let data_type = Datatype::parse(&t.datatype).map_or("TYPE_INVALID", Datatype::config_name);
        json!({"name": t.name, "data_type": data_type, "dims": dims(t, batching)})
    };
    let mut config = json!({
        "name": meta.name,
        "platform": meta.platform,
        "backend": "tract",
        "version_policy": {"specific": {"versions": meta.versions}},
        "max_batch_size": batching.map_or(0, |b| b.max_batch_size),
        "input": meta.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": meta.outputs.iter().map(tensor).collect::<Vec<_>>(),
    });
    if let Some(b) = batching {
        config["dynamic_batching"] =
            json!({"max_queue_delay_microseconds": b.max_queue_delay.as_micros() as u64});
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_states_the_served_signature() {
        let meta = ModelMetadata {
            name: "m".into(),
            versions: vec!["3".into()],
            platform: "onnx_tract".into(),
            inputs: vec![TensorSpec { name: "x".into(), datatype: "INT64".into(), shape: vec![-1, 4] }],
            outputs: vec![TensorSpec { name: "y".into(), datatype: "BYTES".into(), shape: vec![-1] }],
        };
        let c = config(&meta, None);
        assert_eq!(c["max_batch_size"], 0);
        assert_eq!(c["input"][0], json!({"name": "x", "data_type": "TYPE_INT64", "dims": [-1, 4]}));
        assert_eq!(c["output"][0]["data_type"], "TYPE_STRING");
        assert_eq!(c["version_policy"]["specific"]["versions"][0], "3");
        assert!(c.get("dynamic_batching").is_none());
        let batching =
            BatchConfig { max_batch_size: 16, max_queue_delay: std::time::Duration::from_micros(250) };
        let c = config(&meta, Some(batching));
        assert_eq!(c["max_batch_size"], 16);
        assert_eq!(c["input"][0]["dims"], json!([4]));
        assert_eq!(c["output"][0]["dims"], json!([]));
        assert_eq!(c["dynamic_batching"]["max_queue_delay_microseconds"], 250);
    }
}
