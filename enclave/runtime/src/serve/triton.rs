//! Triton's model-configuration extension (`GET /v2/models/{m}[/versions/{v}]/config`): the
//! model's `ModelConfig` as JSON, as Triton's tools and clients read it.
//!
//! The configuration states what the enclave serves, nothing more: `max_batch_size` 0 (the
//! batch is the first dimension of each tensor's shape, which requests fill), and each
//! tensor's full shape with -1 for a dynamic dimension.

use serde_json::{Value, json};

use super::kserve::{ModelMetadata, TensorSpec};
use nacre_model::Datatype;

pub fn config(meta: &ModelMetadata) -> Value {
    let tensor = |t: &TensorSpec| {
        // The metadata's datatypes are the protocol's names (`Ready::metadata`).
        let data_type = Datatype::parse(&t.datatype).map_or("TYPE_INVALID", Datatype::config_name);
        json!({"name": t.name, "data_type": data_type, "dims": t.shape})
    };
    json!({
        "name": meta.name,
        "platform": meta.platform,
        "backend": "tract",
        "version_policy": {"specific": {"versions": meta.versions}},
        "max_batch_size": 0,
        "input": meta.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": meta.outputs.iter().map(tensor).collect::<Vec<_>>(),
    })
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
        let c = config(&meta);
        assert_eq!(c["max_batch_size"], 0);
        assert_eq!(c["input"][0], json!({"name": "x", "data_type": "TYPE_INT64", "dims": [-1, 4]}));
        assert_eq!(c["output"][0]["data_type"], "TYPE_STRING");
        assert_eq!(c["version_policy"]["specific"]["versions"][0], "3");
    }
}
