//! The enclave's serving stack as a host process (sim attester over the secure processor's Unix
//! socket), against a real attestation service: key release, unsealing, attested TLS, fresh
//! attestation, KServe v2 inference, and every refusal on the way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Standard clients from PyPI (`tests/serve/clients.rs`).
#[path = "serve/clients.rs"]
mod clients;
mod common;
/// Issue 14's load test (`tests/serve/load.rs`).
#[path = "serve/load.rs"]
mod load;
#[path = "serve/python.rs"]
mod python;

use std::time::Duration;

use common::{MEASUREMENT, Options, Stack};
use nacre_atls::fresh::Nonce;
use nacre_atls::{AtlsError, Malformed};
use nacre_client::{AttestedSession, ClientError};
use serde_json::json;

const SERVING: Duration = Duration::from_secs(60);

fn sample() -> Options {
    Options::new(nacre_model::sample::mlp_onnx(), "sample-mlp")
}

fn request(x: [f32; 4]) -> serde_json::Value {
    json!({"id": "r1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]})
}

#[test]
fn serves_verified_inference_and_survives_bad_requests() {
    let stack = Stack::start(sample());
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = stack.policy();
    stack.rt.block_on(async {
        let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        assert_eq!(s.peer().claims().measurement, MEASUREMENT);
        assert_eq!(s.fresh().measurement, MEASUREMENT);
        assert_eq!(s.peer().model_identity(), &stack.model_identity);

        let meta = s.metadata("sample-mlp").await.unwrap();
        assert_eq!(meta["inputs"][0], json!({"name": "x", "datatype": "FP32", "shape": [1, 4]}));
        assert_eq!(meta["outputs"][0]["name"], "y");

        let x = [0.5f32, -1.0, 2.0, 0.25];
        let out = s.infer("sample-mlp", &request(x)).await.unwrap();
        assert_eq!(out["id"], "r1");
        assert_eq!(out["outputs"][0]["shape"], json!([1, 2]));
        let got: Vec<f32> = out["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want = nacre_model::sample::mlp_reference(&x);
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }

        // Malformed requests: 400 (or 413/404/415) naming the problem; the server keeps serving.
        let bad: &[(&[u8], u16, &str)] = &[
            (b"{not json", 400, "malformed request"),
            (
                br#"{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
                400,
                "shape",
            ),
            (br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#, 400, "3 values"),
            (
                br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,1e39,4]}]}"#,
                400,
                "not finite",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#,
                400,
                "datatype",
            ),
            (
                br#"{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                400,
                "not an input",
            ),
            (br#"{"inputs":[],"surprise":1}"#, 400, "unknown field"),
        ];
        for (body, status, reason) in bad {
            match s.infer_raw("sample-mlp", body.to_vec()).await {
                Err(ClientError::Status { status: st, message }) => {
                    assert_eq!(st, *status, "{message}");
                    assert!(message.contains(reason), "{reason:?} not in {message:?}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        match s.infer_raw("other-model", request(x).to_string().into_bytes()).await {
            Err(ClientError::Status { status: 404, .. }) => {}
            other => panic!("unknown model: {other:?}"),
        }
        // An oversized body is refused (the server may close the connection mid-upload).
        match s.infer_raw("sample-mlp", vec![b' '; 17 << 20]).await {
            Err(ClientError::Status { status: 413, .. }) | Err(ClientError::Http(_)) => {}
            other => panic!("oversized body: {other:?}"),
        }
        // Still serving, on a new connection.
        let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        let again = s.infer("sample-mlp", &request(x)).await.unwrap();
        assert_eq!(again["outputs"], out["outputs"]);

        // Metrics count rejections by reason and never contain input values.
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        assert!(metrics.contains("nacre_enclave_rejections_total{reason=\"invalid_input\"} 5"), "{metrics}");
        assert!(metrics.contains("nacre_enclave_rejections_total{reason=\"malformed\"} 2"), "{metrics}");
        assert!(!metrics.contains("0.25") && !metrics.contains("1e39"));
        let ready = s.get("/v2/health/ready").await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&ready).unwrap()["ready"], true);
    });
}

#[test]
fn clients_refuse_another_measurement_or_model_before_sending_input() {
    let stack = Stack::start(sample());
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    stack.rt.block_on(async {
        let other_measurement = stack.client_policy([0x11; 48], stack.model_identity);
        match AttestedSession::connect(&stack.url, &other_measurement).await {
            Err(ClientError::Certificate(AtlsError::Evidence(e))) => {
                assert!(e.to_string().contains("measurement"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let other_model = stack.client_policy(MEASUREMENT, [0x22; 32]);
        match AttestedSession::connect(&stack.url, &other_model).await {
            Err(ClientError::Certificate(e @ AtlsError::WrongModel { .. })) => {
                assert!(e.to_string().contains(&hex::encode([0x22; 32])), "{e}")
            }
            other => panic!("{other:?}"),
        }

        // Issue 20: a policy that requires the key release in the transparency log. The service
        // has no witness here, so the enclave holds the service-signed checkpoint only.
        let log_key = stack.service.store().log_key().vkey();
        let witness =
            nacre_tlog::NoteSigner::from_seed("witness.test/w", nacre_tlog::KeyKind::Cosignature, &[9; 32])
                .unwrap()
                .public()
                .vkey();
        let other_log =
            nacre_tlog::NoteSigner::from_seed("other.test/log", nacre_tlog::KeyKind::Checkpoint, &[8; 32])
                .unwrap();
        let refusals = [
            (
                format!("[log]\nkey = {log_key:?}\nwitnesses = [{witness:?}]\n"),
                "1 witness cosignatures needed, 0 verified",
            ),
            (format!("[log]\nkey = {:?}\n", other_log.public().vkey()), "not signed by the log key"),
        ];
        for (log, reason) in &refusals {
            let policy =
                stack.client_policy_with(MEASUREMENT, stack.model_identity, "").with_log_toml(log).unwrap();
            match AttestedSession::connect(&stack.url, &policy).await {
                Err(e @ ClientError::Log(_)) => assert!(e.to_string().contains(reason), "{log}: {e}"),
                other => panic!("{log}: {other:?}"),
            }
        }
        let policy = stack.policy().with_log_toml(&format!("[log]\nkey = {log_key:?}\n")).unwrap();
        let s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        let release = s.release().expect("the policy required the log: the session holds the verified leaf");
        assert_eq!(
            release.entry.release_key_sha256.as_deref(),
            Some(hex::encode(s.peer().model().release_key_digest).as_str())
        );
        assert_eq!(release.entry.measurement.as_deref(), Some(hex::encode(MEASUREMENT).as_str()));
        let report = nacre_client::Verification::accepted(&stack.url, &policy, &s).to_string();
        assert!(report.contains(&format!("leaf {} of", release.index)), "{report}");

        // The server saw no inference request, and only the sessions that passed asked for a
        // fresh attestation.
        let mut s = AttestedSession::connect(&stack.url, &stack.policy()).await.unwrap();
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        assert!(!metrics.contains("route=\"infer\""), "{metrics}");
        assert!(
            metrics.contains("nacre_enclave_requests_total{route=\"attestation\",status=\"200\"} 4"),
            "{metrics}"
        );
    });
}

/// Issue 20 end to end: the service pushes its checkpoints to a witness; the enclave, serving
/// already, follows the service until a checkpoint covering its release is cosigned and serves
/// that; a client requiring the witness then accepts, and reports the leaf and the witness.
#[test]
fn a_witnessed_release_satisfies_a_client_that_requires_the_witness() {
    let mut options = sample();
    options.witness = true;
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let log = format!(
        "[log]\nkey = {:?}\nwitnesses = [{:?}]\nmin_witnesses = 1\n",
        stack.service.store().log_key().vkey(),
        stack.witness_vkey.as_deref().unwrap()
    );
    let policy = stack.policy().with_log_toml(&log).unwrap();
    stack.wait_for("NACRE-ENCLAVE-LOG witnessed checkpoint with 1 cosignatures", Duration::from_secs(60));
    stack.rt.block_on(async {
        let s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        let release = s.release().unwrap();
        assert_eq!(release.checkpoint.cosigned().keys().collect::<Vec<_>>(), ["witness.test/w1"]);
        let report = nacre_client::Verification::accepted(&stack.url, &policy, &s).to_string();
        assert!(report.contains("cosigned by 1 of 1 required: witness.test/w1"), "{report}");
    });
}

#[test]
fn fresh_attestation_binds_the_nonce_and_the_connection() {
    let stack = Stack::start(sample());
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = stack.policy();
    stack.rt.block_on(async {
        let mut a = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        let mut b = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let n1 = Nonce::random().unwrap();
        let evidence = a.fresh_evidence(&n1).await.unwrap();
        let check = |evidence: &nacre_atls::Evidence, nonce: &Nonce, session: &AttestedSession| {
            nacre_atls::verify_fresh(
                &policy.attestation,
                session.peer(),
                evidence,
                nonce,
                session.exporter(),
                now,
            )
        };
        check(&evidence, &n1, &a).unwrap();
        // Replayed under a new nonce: refused.
        let n2 = Nonce::random().unwrap();
        assert!(matches!(check(&evidence, &n2, &a), Err(AtlsError::FreshEvidence(_))));
        // Carried to another connection (a relay): refused.
        assert!(matches!(check(&evidence, &n1, &b), Err(AtlsError::FreshEvidence(_))));
        // The other connection's own answer for the same nonce differs and verifies there.
        let on_b = b.fresh_evidence(&n1).await.unwrap();
        check(&on_b, &n1, &b).unwrap();
        assert_ne!(on_b.report, evidence.report);
        // Malformed nonces are refused by the server.
        for q in ["/v1/attestation", "/v1/attestation?nonce=00", "/v1/attestation?nonce=zz"] {
            assert!(matches!(a.get(q).await, Err(ClientError::Status { status: 400, .. })), "{q}");
        }
    });
}

#[test]
fn a_tampered_sealed_disk_is_refused_and_only_health_is_served() {
    let mut options = sample();
    options.tamper = Some(|sealed: &mut Vec<u8>| {
        let last = sealed.len() - 20;
        sealed[last] ^= 1;
    });
    let stack = Stack::start(options);
    let failed = stack.wait_for("NACRE-ENCLAVE-FAILED ", SERVING);
    assert!(failed.starts_with("unsealing:") && failed.contains("chunk"), "{failed}");
    assert!(failed.contains("retrying in 1 s"), "{failed}");
    stack.rt.block_on(async {
        match AttestedSession::connect(&stack.url, &stack.policy()).await {
            Err(ClientError::Certificate(AtlsError::Malformed(Malformed::NoEvidence))) => {}
            other => panic!("{other:?}"),
        }
    });
    assert!(!stack.lines.lock().unwrap().iter().any(|l| l.starts_with("NACRE-ENCLAVE-SERVING")));
}

#[test]
fn a_guest_the_release_policy_does_not_allow_gets_no_key() {
    let mut options = sample();
    options.release_measurement = [0x33; 48];
    let stack = Stack::start(options);
    let failed = stack.wait_for("NACRE-ENCLAVE-FAILED ", SERVING);
    assert!(failed.starts_with("key release:") && failed.contains("measurement"), "{failed}");
    let admin = nacre_attestation_client::Client::new(&stack.service_url, &stack.service_ca)
        .unwrap()
        .with_token(stack.admin_token.clone());
    let audit = stack.rt.block_on(admin.audit_export()).unwrap();
    let denial = audit.iter().find(|r| r.action == "deny").expect("a denial in the audit log");
    assert_eq!(denial.key_id.as_deref(), Some(common::KEY_ID));
    let reason = denial.reason.as_deref().unwrap_or("");
    assert!(reason.contains("measurement") && reason.contains(&hex::encode(MEASUREMENT)), "{reason}");
    assert!(!audit.iter().any(|r| r.action == "release"), "no key left the service");
}

#[test]
fn a_disk_padded_to_a_sector_serves_and_other_trailing_bytes_are_refused() {
    // A virtio disk rounds the file up to a whole sector with zeros.
    let mut options = sample();
    options.tamper = Some(|sealed: &mut Vec<u8>| sealed.resize(sealed.len() + 300, 0));
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    drop(stack);
    let mut options = sample();
    options.tamper = Some(|sealed: &mut Vec<u8>| sealed.push(1));
    let stack = Stack::start(options);
    let failed = stack.wait_for("NACRE-ENCLAVE-FAILED ", SERVING);
    assert!(failed.contains("non-zero bytes after the sealed model"), "{failed}");
}

/// gRPC and the fresh, channel-bound attestation on one HTTP/2 connection: the client verifies
/// the enclave's fresh evidence on the connection its gRPC calls then use, and again after.
#[test]
fn grpc_inference_runs_on_the_http2_connection_whose_attestation_was_verified() {
    use nacre_oip::inference::ModelInferRequest;
    use nacre_oip::inference::model_infer_request::InferInputTensor;

    let stack = Stack::start(sample());
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = stack.policy();
    stack.rt.block_on(async {
        let mut s =
            AttestedSession::connect_with(&stack.url, &policy, nacre_client::Wire::Http2).await.unwrap();
        assert_eq!(s.fresh().measurement, MEASUREMENT);
        let mut grpc = s.grpc().expect("an HTTP/2 session has a gRPC client");
        let x = [0.5f32, -1.0, 2.0, 0.25];
        let raw: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let request = ModelInferRequest {
            model_name: "sample-mlp".into(),
            id: "g1".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 4],
                ..Default::default()
            }],
            raw_input_contents: vec![raw.into()],
            ..Default::default()
        };
        let out = grpc.model_infer(request.clone()).await.unwrap().into_inner();
        assert_eq!(out.id, "g1");
        assert_eq!(out.outputs[0].shape, vec![1, 2]);
        let got: Vec<f32> = out.raw_output_contents[0]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want = nacre_model::sample::mlp_reference(&x);
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        // Fresh evidence again, on the same connection, after the gRPC call.
        let nonce = Nonce::random().unwrap();
        let evidence = s.fresh_evidence(&nonce).await.unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        nacre_atls::verify_fresh(&policy.attestation, s.peer(), &evidence, &nonce, s.exporter(), now)
            .unwrap();
        // Refusals come back as gRPC statuses, not as inference.
        let mut bad = request.clone();
        bad.inputs[0].shape = vec![1, 5];
        let status = grpc.model_infer(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("shape"), "{status:?}");
        let mut other = request;
        other.model_name = "other".into();
        assert_eq!(grpc.model_infer(other).await.unwrap_err().code(), tonic::Code::NotFound);
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        assert!(
            metrics.contains("nacre_enclave_requests_total{route=\"grpc_infer\",status=\"200\"} 1"),
            "{metrics}"
        );
    });
}

/// A guard manifest for the sample MLP: features in [-10, 10] (reject outside), the identity
/// covariance, out-of-distribution past a squared distance of 50 (flag), outputs rounded to 1
/// decimal.
fn guard_manifest() -> Vec<u8> {
    let identity: Vec<Vec<f64>> =
        (0..4).map(|i| (0..4).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    serde_json::to_vec(&json!({
        "format": "nacre-guard-v1",
        "input": {"tensor": "x", "features": (0..4).map(|i| json!({"name": format!("f{i}"), "min": -10.0, "max": 10.0})).collect::<Vec<_>>()},
        "reference": {"rows": 4, "histograms": vec![json!({"edges": [0.0], "counts": [2, 2]}); 4], "mean": [0.0, 0.0, 0.0, 0.0], "covariance": identity},
        "input_guard": {"schema": "reject", "ood": {"threshold": 50.0, "action": "flag"}},
        "output": {"policy": "round", "decimals": 1},
    }))
    .unwrap()
}

/// Issue 17: the guard sealed with the model runs in the enclave, and a client sees it (checked
/// against the attested digest) and can require it before any input leaves.
#[test]
fn the_sealed_guard_runs_and_clients_can_require_it() {
    let manifest = guard_manifest();
    let digest: [u8; 32] = nacre_sealed::identity::sha256(&manifest);
    let stack = Stack::start(Options { guard_manifest: Some(manifest), ..sample() });
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let with = |extra: &str| stack.client_policy_with(MEASUREMENT, stack.model_identity, extra);
    stack.rt.block_on(async {
        let pinned = with(&format!(
            "guard_digest = \"{}\"\nmin_output = \"round:2\"\nmin_ood_action = \"flag\"",
            hex::encode(digest)
        ));
        let mut s = AttestedSession::connect(&stack.url, &pinned).await.unwrap();
        assert_eq!(s.peer().model().guard_digest, digest);
        assert_eq!(s.guard().unwrap().features(), 4);
        // In range and near the reference: answered, rounded to one decimal.
        let x = [0.5f32, -1.0, 2.0, 0.25];
        let out = s.infer("sample-mlp", &request(x)).await.unwrap();
        let want = nacre_model::sample::mlp_reference(&x);
        for (g, w) in out["outputs"][0]["data"].as_array().unwrap().iter().zip(want) {
            let g = g.as_f64().unwrap();
            assert!((g - (f64::from(w) * 10.0).round() / 10.0).abs() < 1e-6, "{g} vs {w}");
        }
        assert!(out.get("parameters").is_none(), "{out}");
        // Far from the reference but in range: flagged.
        let out = s.infer("sample-mlp", &request([9.0, -9.0, 9.0, -9.0])).await.unwrap();
        assert_eq!(out["parameters"]["nacre_guard"], "out_of_distribution", "{out}");
        assert!(out["parameters"]["nacre_ood_score"].as_f64().unwrap() > 300.0);
        // Out of range: refused before the model runs.
        match s.infer("sample-mlp", &request([0.0, 11.375, 0.0, 0.0])).await {
            Err(ClientError::Status { status: 422, message }) => {
                assert!(message.contains("feature \"f1\": above max"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        // A flagged finding is input-derived (the client alone sees the flag): only the private
        // monitor counts it. A rejection shows in its 422 anyway, so the open metrics count it.
        assert!(!metrics.contains("out_of_distribution"), "{metrics}");
        assert!(metrics.contains("finding=\"above_max\",action=\"reject\"} 1"), "{metrics}");
        // No input value in the metrics (a distinctive one).
        assert!(!metrics.contains("11.375"), "{metrics}");

        // Policies the guard does not meet: refused, with the reason, before any input.
        for (extra, reason) in [
            ("min_output = \"label\"", "output policy is rounded to 1 decimals"),
            ("min_ood_action = \"reject\"", "out-of-distribution action is Flag"),
            (&format!("guard_digest = \"{}\"", "ab".repeat(32)) as &str, "guard"),
        ] {
            match AttestedSession::connect(&stack.url, &with(extra)).await {
                Err(e @ (ClientError::Guard(_) | ClientError::Certificate(_))) => {
                    assert!(e.to_string().contains(reason), "{extra}: {e}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    });
    // An enclave without a guard, under a policy that requires one.
    let plain = Stack::start(sample());
    plain.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = plain.client_policy_with(MEASUREMENT, plain.model_identity, "require_guard = true");
    plain.rt.block_on(async {
        match AttestedSession::connect(&plain.url, &policy).await {
            Err(ClientError::Guard(m)) => assert!(m.contains("runs none"), "{m}"),
            other => panic!("{other:?}"),
        }
    });
}

/// Issue 18: per-token budgets, the PRADA detector's throttle, and explanations charged at their
/// model evaluations, on the running enclave. Three clients, each its own token.
#[test]
fn budgets_extraction_alarms_and_explanations_are_per_client() {
    let tokens = ["client-a-0123456789abcdef", "client-b-0123456789abcdef", "client-c-0123456789abcdef"];
    let background = [[0.1, -0.3, 0.5, 1.0], [-0.7, 0.2, 0.0, 0.4], [0.3, 0.9, -1.2, -0.2]];
    let mut manifest: serde_json::Value = serde_json::from_slice(&guard_manifest()).unwrap();
    manifest["output"] = json!({"policy": "full"});
    manifest["budgets"] = json!({"queries": 60, "window_seconds": 3600});
    manifest["extraction"] =
        // A low delta: a natural series of ten-odd distances stays far above it, while a walk in
        // equal steps has no W at all (an alarm at any delta).
        json!({"delta": 0.5, "history": 50, "min_queries": 10, "action": "throttle", "throttle_seconds": 600});
    manifest["explanation"] = json!({"max_coalitions": 64, "deadline_ms": 10_000, "background": background});
    let hashes: Vec<String> =
        tokens.iter().map(|t| format!("\"{}\"", hex::encode(common::sha256(t.as_bytes())))).collect();
    let stack = Stack::start(Options {
        guard_manifest: Some(serde_json::to_vec(&manifest).unwrap()),
        extra_config: format!("inference_tokens_sha256 = [{}]\n", hashes.join(", ")),
        ..sample()
    });
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = stack.policy();
    stack.rt.block_on(async {
        let session = |token: &'static str| {
            let policy = policy.clone();
            let url = stack.url.clone();
            async move { AttestedSession::connect(&url, &policy).await.unwrap().with_token(token) }
        };
        let (mut a, mut b, mut c) =
            (session(tokens[0]).await, session(tokens[1]).await, session(tokens[2]).await);
        // Without a token: refused, budgets need an identity.
        let mut anonymous = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        assert!(matches!(
            anonymous.infer("sample-mlp", &request([0.0; 4])).await,
            Err(ClientError::Status { status: 401, .. })
        ));

        // An explanation: every coalition of 4 features (14), additive, and 1 + 3 × 15 = 46
        // model evaluations charged.
        let x = [1.5f32, -0.5, 0.8, 2.0];
        let e = a.explain("sample-mlp", &request(x)).await.unwrap();
        assert_eq!(
            (e["evaluations"].as_u64(), e["coalitions"].as_u64(), e["exact"].as_bool()),
            (Some(46), Some(14), Some(true)),
            "{e}"
        );
        let want = nacre_model::sample::mlp_reference(&x);
        for o in 0..2 {
            let value = e["value"][o].as_f64().unwrap();
            assert!((value - f64::from(want[o])).abs() < 1e-5, "{e}");
            let sum: f64 = e["attributions"][o].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
            assert!((sum - (value - e["base_value"][o].as_f64().unwrap())).abs() < 1e-5, "{e}");
        }
        // 60 − 46 = 14 evaluations left in A's window: 14 single-row inferences, then 429 with
        // the time to the next window.
        for i in 0..14 {
            let t = i as f32;
            a.infer(
                "sample-mlp",
                &request([(t * 1.3).sin() * 2.0, (t * 2.1).cos(), (t * 0.7 + 1.0).sin(), (t * 3.3).cos()]),
            )
            .await
            .unwrap();
        }
        let body = hyper::body::Bytes::from(serde_json::to_vec(&request([0.1, 0.2, 0.3, 0.4])).unwrap());
        let mut headers = hyper::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        let r = a
            .send(hyper::Method::POST, "/v2/models/sample-mlp/infer", headers.clone(), body.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        let message = String::from_utf8_lossy(r.body());
        assert!(
            message.contains("60 of 60") && message.contains(&format!("next window starts in {retry} s")),
            "{message}"
        );

        // B walks along one axis in equal steps (what equation-solving and augmentation
        // queries look like): the detector raises its alarm and B is throttled, with the time.
        let mut throttled = None;
        for i in 0..20 {
            match b.infer("sample-mlp", &request([i as f32 * 0.25, 0.0, 0.0, 0.0])).await {
                Ok(_) => {}
                Err(ClientError::Status { status: 429, message }) => {
                    assert!(
                        message.contains("look like model extraction: throttled, retry in 600 s"),
                        "{message}"
                    );
                    throttled = Some(i);
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(throttled.is_some_and(|i| (10..=13).contains(&i)), "throttled at {throttled:?}");
        // C, with natural-looking queries, is not affected.
        for i in 0..5 {
            let v = (i as f32 * 1.7).sin();
            c.infer("sample-mlp", &request([v, -v * 0.5, 0.3 * i as f32, 1.0 - v])).await.unwrap();
        }
        let metrics = String::from_utf8(c.get("/metrics").await.unwrap().to_vec()).unwrap();
        assert!(metrics.contains("finding=\"extraction_alarm_raised\",action=\"throttle\"} 1"), "{metrics}");
        assert!(metrics.contains("finding=\"over_budget\",action=\"refuse\"} 1"), "{metrics}");
    });
}

/// An image without client tokens never serves a manifest with budgets: every tokenless
/// client behind the host's NAT would be one client.
#[test]
fn budgets_without_tokens_never_serve() {
    let mut manifest: serde_json::Value = serde_json::from_slice(&guard_manifest()).unwrap();
    manifest["budgets"] = json!({"queries": 60, "window_seconds": 3600});
    let stack =
        Stack::start(Options { guard_manifest: Some(serde_json::to_vec(&manifest).unwrap()), ..sample() });
    let line = stack.wait_for("NACRE-ENCLAVE-FAILED", SERVING);
    assert!(line.contains("needs client tokens"), "{line}");
}

/// Row `i` of the sample MLP's 4 features: around 0, or all positive (`drifted`).
fn row(i: usize, drifted: bool) -> [f32; 4] {
    core::array::from_fn(|f| {
        let v = (((4 * i + f) as f32) * 0.37).sin() * 2.0;
        if drifted { v.abs() + 0.1 } else { v }
    })
}

/// Guard part 3 on the running enclave: rows are counted in private windows, released noised
/// to monitoring tokens only (not to inference tokens, not to anyone), under the attested
/// manifest's terms and the day's budget; `/metrics` carries no `log`/`flag` finding.
#[test]
fn private_monitoring_releases_noised_windows_to_monitoring_tokens_only() {
    let (client, reader) = ("client-a-0123456789abcdef", "monitor-0123456789abcdef");
    let mut manifest: serde_json::Value = serde_json::from_slice(&guard_manifest()).unwrap();
    manifest["reference"]["rows"] = json!(20_000);
    manifest["reference"]["histograms"] = json!(vec![json!({"edges": [0.0], "counts": [10_000, 10_000]}); 4]);
    manifest["input_guard"]["ood"]["action"] = json!("log");
    manifest["monitoring"] = json!({
        "window": {"requests": 50}, "min_window": 10, "epsilon_per_window": 8.0,
        "epsilon_per_day": 24.0, "mechanism": "discrete_laplace", "false_alarm_rate": 0.01,
    });
    let hash = |t: &str| hex::encode(common::sha256(t.as_bytes()));
    let stack = Stack::start(Options {
        guard_manifest: Some(serde_json::to_vec(&manifest).unwrap()),
        extra_config: format!(
            "inference_tokens_sha256 = [\"{}\"]\nmonitoring_tokens_sha256 = [\"{}\"]\nrate_per_second = 1000\nrate_burst = 1000\n",
            hash(client),
            hash(reader)
        ),
        ..sample()
    });
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let policy = stack.policy();
    stack.rt.block_on(async {
        // A client that allows the monitor less ε a day than the attested manifest spends is
        // refused before it sends anything.
        let strict = |max: &str| {
            stack.client_policy_with(
                MEASUREMENT,
                stack.model_identity,
                &format!("max_monitoring_epsilon_per_day = {max}"),
            )
        };
        let refused = AttestedSession::connect(&stack.url, &strict("1.0")).await;
        assert!(
            matches!(&refused, Err(ClientError::Guard(m)) if m.contains("ε 24 a day")),
            "{:?}",
            refused.err()
        );
        AttestedSession::connect(&stack.url, &strict("24")).await.unwrap();
        let mut a = AttestedSession::connect(&stack.url, &policy).await.unwrap().with_token(client);
        // Window 0 centred, window 1 all positive (drift in every feature), windows 2 and 3
        // centred; ε 8 a window, 24 a day: window 3 is withheld.
        for (w, drifted) in [false, true, false, false].into_iter().enumerate() {
            for i in 0..50 {
                a.infer("sample-mlp", &request(row(50 * w + i, drifted))).await.unwrap();
            }
        }
        // An out-of-distribution row under `log`: counted privately, not in the open metrics.
        a.infer("sample-mlp", &request([9.0, 9.0, 9.0, 9.0])).await.unwrap();
        let metrics = String::from_utf8(a.get("/metrics").await.unwrap().to_vec()).unwrap();
        assert!(!metrics.contains("out_of_distribution"), "{metrics}");

        for token in [None, Some(client)] {
            let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
            if let Some(t) = token {
                s = s.with_token(t);
            }
            assert!(matches!(s.monitoring(0).await, Err(ClientError::Status { status: 401, .. })));
        }
        let mut m = AttestedSession::connect(&stack.url, &policy).await.unwrap().with_token(reader);
        // Releases finish off the request path.
        let mut report = m.monitoring(0).await.unwrap();
        for _ in 0..100 {
            if report.windows.len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            report = m.monitoring(0).await.unwrap();
        }
        assert_eq!(report.windows.len(), 4, "{report:?}");
        assert_eq!(report.privacy.sensitivity, 6);
        assert!((report.privacy.epsilon_spent_today - 24.0).abs() < 1e-9);
        let released: Vec<_> = report.windows.iter().map(|w| w.release.as_ref()).collect();
        let (w0, w1, w2) = (released[0].unwrap(), released[1].unwrap(), released[2].unwrap());
        assert_eq!(report.windows[3].withheld, Some(nacre_guard::monitor::Withheld::PrivacyBudget));
        assert!(w0.drifted.is_empty() && w2.drifted.is_empty(), "{w0:?} {w2:?}");
        assert_eq!(w1.drifted, ["f0", "f1", "f2", "f3"], "{w1:?}");
        // Noise of scale 6/8 on each count: the size is near 50.
        assert!((w0.rows - 50).abs() < 10, "{}", w0.rows);
        assert_eq!(m.monitoring(2).await.unwrap().windows.len(), 2);
        let text = String::from_utf8(m.get("/v1/monitoring/metrics").await.unwrap().to_vec()).unwrap();
        assert!(text.contains("nacre_monitor_windows{outcome=\"released\"} 3"), "{text}");
        assert!(text.contains("nacre_monitor_windows{outcome=\"privacy_budget\"} 1"), "{text}");
    });
}
