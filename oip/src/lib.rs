//! The Open Inference Protocol's gRPC wire types (KServe v2 as Triton defines it): the messages of
//! Triton's `grpc_service.proto` and `model_config.proto` (vendored unmodified in `proto/`), the
//! tonic server for `inference.GRPCInferenceService` and its client.
//!
//! The code in `src/generated/` is made by `scripts/gen-grpc.sh` and committed, so that building
//! this crate needs neither protoc nor a build script. A test checks that it was generated from the
//! protos as they are now.
//!
//! No connection handling lives here. The generated server,
//! [`inference::grpc_inference_service_server::GrpcInferenceServiceServer`], is a
//! `tower::Service<http::Request<B>>` that the enclave hands to its own hyper HTTP/2 connections;
//! the generated client, [`inference::grpc_inference_service_client::GrpcInferenceServiceClient`],
//! runs over any `tower::Service` that sends `http::Request`s (the verifying client's attested h2
//! connection). The server's `max_decoding_message_size` defaults to 4 MiB: a server that accepts
//! larger tensors must raise it, and bound it.
//!
//! `bytes` fields (`raw_input_contents`, `raw_output_contents`, `bytes_contents`, …) are
//! [`prost::bytes::Bytes`]: decoding slices them out of the received buffer rather than copying.

/// `package inference`: the messages, `grpc_inference_service_server` and
/// `grpc_inference_service_client`.
///
/// Generated code: it spells out paths (`std::marker::Send`, `tonic::codegen::Service`) that the
/// workspace's `unused_qualifications` flags, and Triton's comments hold `<placeholders>` that
/// rustdoc takes for HTML. Clippy's lints are already allowed inside it by prost-build and
/// tonic-build.
#[allow(unused_qualifications, rustdoc::invalid_html_tags)]
#[path = "generated/inference.rs"]
pub mod inference;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::Path;

    use prost::Message;
    use prost::bytes::Bytes;
    use sha2::{Digest, Sha256};

    use crate::inference::infer_parameter::ParameterChoice;
    use crate::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    use crate::inference::{InferParameter, ModelInferRequest};

    const GENERATED: &str = include_str!("generated/inference.rs");

    /// The `// proto-sha256: NAME HEX` lines that scripts/gen-grpc.sh writes at the top.
    fn recorded_hashes() -> BTreeMap<String, String> {
        GENERATED
            .lines()
            .filter_map(|line| line.strip_prefix("// proto-sha256: "))
            .map(|rest| {
                let (name, hash) = rest.split_once(' ').expect("`NAME HEX` after proto-sha256:");
                (name.to_owned(), hash.to_owned())
            })
            .collect()
    }

    /// Staleness check: every .proto in proto/ (and no other) is recorded in the generated file's
    /// header with its current SHA-256. Fails after a proto changes until scripts/gen-grpc.sh runs.
    #[test]
    fn generated_code_matches_protos() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut current = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("oip/proto") {
            let path = entry.expect("oip/proto entry").path();
            if path.extension().is_some_and(|e| e == "proto") {
                let name = path.file_name().expect("file name").to_string_lossy().into_owned();
                let bytes = std::fs::read(&path).expect("read proto");
                current.insert(name, hex::encode(Sha256::digest(&bytes)));
            }
        }
        assert!(current.contains_key("grpc_service.proto"), "{current:?}");
        assert_eq!(
            recorded_hashes(),
            current,
            "oip/src/generated/inference.rs is stale: run scripts/gen-grpc.sh"
        );
    }

    fn sample_request() -> ModelInferRequest {
        // Two FP32 inputs in raw_input_contents, as tritonclient's set_data_from_numpy sends them.
        let a: Vec<u8> = [1.5f32, -2.0, 0.25, 1e-7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = (0u8..=255).cycle().take(3 * 224 * 224).collect();
        ModelInferRequest {
            model_name: "resnet".into(),
            model_version: "1".into(),
            id: "req-7".into(),
            parameters: HashMap::from([(
                "binary_data_output".into(),
                InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(true)) },
            )]),
            inputs: vec![
                InferInputTensor {
                    name: "a".into(),
                    datatype: "FP32".into(),
                    shape: vec![2, 2],
                    ..Default::default()
                },
                InferInputTensor {
                    name: "image".into(),
                    datatype: "UINT8".into(),
                    shape: vec![1, 3, 224, 224],
                    ..Default::default()
                },
            ],
            outputs: vec![InferRequestedOutputTensor { name: "probs".into(), ..Default::default() }],
            raw_input_contents: vec![Bytes::from(a), Bytes::from(b)],
        }
    }

    #[test]
    fn model_infer_request_round_trips() {
        let request = sample_request();
        let encoded = Bytes::from(request.encode_to_vec());
        let decoded = ModelInferRequest::decode(encoded.clone()).expect("decode");
        assert_eq!(decoded, request);
        assert_eq!(decoded.encode_to_vec(), encoded);

        // Raw tensors are slices of the received buffer, not copies.
        let range = encoded.as_ptr_range();
        for raw in &decoded.raw_input_contents {
            assert!(range.contains(&raw.as_ptr()), "raw input was copied");
        }
    }

    #[test]
    fn truncated_request_is_rejected() {
        let encoded = sample_request().encode_to_vec();
        let truncated = &encoded[..encoded.len() - 1];
        assert!(ModelInferRequest::decode(truncated).is_err());
    }

    /// The generated client and server talk to each other through tower alone (no tonic transport):
    /// the served RPC answers, an RPC left to the default stubs answers UNIMPLEMENTED, and the
    /// server's decoding limit holds.
    mod service {
        use tonic::codegen::http::Uri;
        use tonic::{Code, Request, Response, Status};

        use super::sample_request;
        use crate::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
        use crate::inference::grpc_inference_service_server::{
            GrpcInferenceService, GrpcInferenceServiceServer,
        };
        use crate::inference::model_infer_response::InferOutputTensor;
        use crate::inference::{
            ModelInferRequest, ModelInferResponse, RepositoryIndexRequest, ServerLiveRequest,
            ServerLiveResponse,
        };

        /// Serves two RPCs; everything else falls to the generated UNIMPLEMENTED stubs.
        struct Echo;

        #[tonic::async_trait]
        impl GrpcInferenceService for Echo {
            async fn server_live(
                &self,
                _request: Request<ServerLiveRequest>,
            ) -> Result<Response<ServerLiveResponse>, Status> {
                Ok(Response::new(ServerLiveResponse { live: true }))
            }

            async fn model_infer(
                &self,
                request: Request<ModelInferRequest>,
            ) -> Result<Response<ModelInferResponse>, Status> {
                let request = request.into_inner();
                Ok(Response::new(ModelInferResponse {
                    model_name: request.model_name,
                    model_version: request.model_version,
                    id: request.id,
                    outputs: request
                        .inputs
                        .into_iter()
                        .map(|i| InferOutputTensor {
                            name: i.name,
                            datatype: i.datatype,
                            shape: i.shape,
                            ..Default::default()
                        })
                        .collect(),
                    raw_output_contents: request.raw_input_contents,
                    ..Default::default()
                }))
            }
        }

        fn client(
            server: GrpcInferenceServiceServer<Echo>,
        ) -> GrpcInferenceServiceClient<GrpcInferenceServiceServer<Echo>> {
            GrpcInferenceServiceClient::with_origin(server, Uri::from_static("http://enclave.invalid"))
                .max_decoding_message_size(1 << 20)
        }

        #[tokio::test]
        async fn client_and_server_over_tower() {
            let mut client = client(GrpcInferenceServiceServer::new(Echo).max_decoding_message_size(1 << 20));

            let live = client.server_live(ServerLiveRequest {}).await.expect("ServerLive");
            assert!(live.into_inner().live);

            let request = sample_request();
            let response = client.model_infer(request.clone()).await.expect("ModelInfer").into_inner();
            assert_eq!(response.id, request.id);
            assert_eq!(response.raw_output_contents, request.raw_input_contents);
            assert_eq!(response.outputs[1].shape, [1, 3, 224, 224]);

            let status = client
                .repository_index(RepositoryIndexRequest::default())
                .await
                .expect_err("RepositoryIndex is not served");
            assert_eq!(status.code(), Code::Unimplemented);
        }

        #[tokio::test]
        async fn server_decoding_limit_holds() {
            // The sample request is about 150 KiB.
            let mut client =
                client(GrpcInferenceServiceServer::new(Echo).max_decoding_message_size(64 << 10));
            let status = client.model_infer(sample_request()).await.expect_err("over the limit");
            assert_eq!(status.code(), Code::OutOfRange);
        }
    }
}
