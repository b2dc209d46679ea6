//! The serving layer in-process, with an injected clock and a fake attester: certificate
//! renewal at half-life over real TLS connections, readiness when renewal keeps failing, and
//! what a tract failure shows to the console, the health endpoint and clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http_body_util::BodyExt;
use nacre_atls::fresh::{self, Nonce};
use nacre_wire::{Evidence, Tee};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::renew::{self, Schedule, Step};
use super::{App, Ready};
use crate::attest::{AttestError, Attester};
use crate::clock::Clock;
use crate::lifecycle::Failure;

const T0: OffsetDateTime = time::macros::datetime!(2030-01-01 00:00 UTC);
const DAY: Duration = Duration::hours(24);

#[derive(Debug)]
struct FakeClock(Mutex<OffsetDateTime>);

impl FakeClock {
    fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// Answers with a stand-in report (the REPORT_DATA itself) unless told to fail.
#[derive(Clone, Default)]
struct FakeAttester {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Attester for FakeAttester {
    fn attest(&mut self, report_data: &[u8; 64]) -> Result<Evidence, AttestError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(AttestError::Io("the secure processor does not answer".into()));
        }
        Ok(Evidence { tee: Tee::Sim, report: report_data.to_vec(), certs: vec![], event_log: None })
    }
}

struct Serving {
    app: Arc<App>,
    clock: Arc<FakeClock>,
    attester: FakeAttester,
    schedule: Schedule,
}

/// The sample model served from `T0` under the default configuration (24 h certificates).
fn serving() -> Serving {
    serving_with(None)
}

fn serving_with(release_log: Option<Arc<super::release_log::ReleaseLogProof>>) -> Serving {
    let clock = Arc::new(FakeClock(Mutex::new(T0)));
    let app = App::new(&crate::config::tests::good(), clock.clone()).unwrap();
    let attester = FakeAttester::default();
    let model = nacre_model::Model::load(&nacre_model::sample::mlp_onnx()).unwrap();
    let metadata = Ready::metadata(&model, "sample-mlp", "1").unwrap();
    let schedule = app
        .serve_model(Ready {
            model,
            metadata,
            binding: nacre_wire::binding::ModelBinding {
                model_identity: [7; 32],
                guard_digest: [0; 32],
                release_key_digest: [6; 32],
            },
            attester: Mutex::new(Box::new(attester.clone())),
            attestation_result: vec![],
            guard: None,
            release_log,
        })
        .unwrap();
    Serving { app, clock, attester, schedule }
}

fn current(app: &App) -> Arc<nacre_atls::AttestedCert> {
    app.presented().attested.clone().expect("an attested certificate")
}

async fn get(app: &Arc<App>, path: &str) -> (u16, serde_json::Value) {
    let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(super::router(app.clone()), request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// Accepts any certificate (these tests look at which one was presented, not at its
/// evidence), but checks the handshake signature.
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: std::net::SocketAddr) -> TlsStream {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

fn presented(tls: &TlsStream) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// One HTTP/1.1 GET on an open connection (kept alive); the status and the body.
async fn get_on(tls: &mut TlsStream, target: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {target} HTTP/1.1\r\nhost: enclave\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tls.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0; length];
    tls.read_exact(&mut body).await.unwrap();
    (status, body)
}

/// Issue 12 §4: at half of its lifetime the certificate is replaced by a new one (a new key,
/// fresh evidence) that new connections are shown; a connection made before keeps working
/// and its fresh attestations still bind the certificate it was shown.
#[test]
fn certificate_renews_at_half_life() {
    let Serving { app, clock, attester, mut schedule } = serving();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(super::serve(app.clone(), listener));

    let first = current(&app);
    assert_eq!(first.not_after(), T0 + DAY);
    let mut before = rt.block_on(connect(addr));
    assert_eq!(&presented(&before), first.cert_der());
    let attestations = attester.calls.load(Ordering::SeqCst);

    clock.set(T0 + DAY / 2 - Duration::seconds(1));
    assert_eq!(renew::step(&app, &mut schedule), Step::NotDue);
    assert_eq!(current(&app).spki_sha256(), first.spki_sha256());
    assert_eq!(attester.calls.load(Ordering::SeqCst), attestations, "no attestation before half-life");

    clock.set(T0 + DAY / 2);
    assert_eq!(renew::step(&app, &mut schedule), Step::Renewed { issued_at: T0 + DAY / 2 });
    let second = current(&app);
    assert_ne!(second.spki_sha256(), first.spki_sha256(), "a new key");
    assert_eq!(second.model(), first.model());
    assert_eq!(second.not_after(), T0 + DAY / 2 + DAY);
    assert_eq!(attester.calls.load(Ordering::SeqCst), attestations + 1, "fresh evidence");

    let after = rt.block_on(connect(addr));
    assert_eq!(&presented(&after), second.cert_der(), "new connections get the new certificate");

    // The connection made before the renewal: still served, and bound to its own certificate.
    let nonce = Nonce::from_bytes([3; 32]);
    let exporter = nacre_atls::exporter(before.get_ref().1).unwrap();
    let (status, body) = rt.block_on(get_on(&mut before, &fresh::request_target(&nonce)));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let evidence = fresh::decode_response(&body).unwrap();
    assert_eq!(evidence.report, first.fresh_report_data(&nonce, &exporter).unwrap().to_vec());

    // The next renewal is half a lifetime after this one.
    clock.set(T0 + DAY - Duration::seconds(1));
    assert_eq!(renew::step(&app, &mut schedule), Step::NotDue);
    clock.set(T0 + DAY);
    assert!(matches!(renew::step(&app, &mut schedule), Step::Renewed { .. }));
    assert_eq!(rt.block_on(get(&app, "/v2/health/ready")).0, 200);
}

/// Issue 12 §4: when the attester keeps failing, renewal retries with backoff and the enclave
/// stays ready while its certificate is valid; past `not_after` readiness turns false (and the
/// model routes refuse), until a renewal succeeds.
#[test]
fn readiness_turns_false_when_renewal_fails_past_expiry() {
    let Serving { app, clock, attester, mut schedule } = serving();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    attester.failing.store(true, Ordering::SeqCst);
    let first = current(&app);

    clock.set(T0 + DAY / 2);
    let Step::Failed { retry_in, .. } = renew::step(&app, &mut schedule) else { panic!("renewed") };
    assert_eq!(retry_in.as_secs(), 1);
    assert_eq!(renew::step(&app, &mut schedule), Step::NotDue, "backing off");
    clock.set(T0 + DAY / 2 + Duration::seconds(1));
    let Step::Failed { retry_in, .. } = renew::step(&app, &mut schedule) else { panic!("renewed") };
    assert_eq!(retry_in.as_secs(), 2);
    assert_eq!(rt.block_on(get(&app, "/v2/health/ready")).0, 200, "still valid");

    clock.set(T0 + DAY);
    assert!(matches!(renew::step(&app, &mut schedule), Step::Failed { .. }));
    assert_eq!(rt.block_on(get(&app, "/v2/health/ready")).0, 200, "valid until not_after");

    // Readiness follows the clock, not the renewal loop (which is backing off here).
    clock.set(T0 + DAY + Duration::seconds(1));
    assert_eq!(renew::step(&app, &mut schedule), Step::NotDue);
    assert_eq!(current(&app).spki_sha256(), first.spki_sha256(), "nothing replaced it");
    let (status, body) = rt.block_on(get(&app, "/v2/health/ready"));
    assert_eq!(status, 503);
    assert_eq!(body["ready"], false);
    assert_eq!(body["state"], "certificate_expired");
    assert_eq!(rt.block_on(get(&app, "/v2/models/sample-mlp")).0, 503);

    attester.failing.store(false, Ordering::SeqCst);
    clock.set(T0 + DAY + Duration::minutes(10));
    assert_eq!(
        renew::step(&app, &mut schedule),
        Step::Renewed { issued_at: T0 + DAY + Duration::minutes(10) }
    );
    assert_ne!(current(&app).spki_sha256(), first.spki_sha256());
    assert_eq!(rt.block_on(get(&app, "/v2/health/ready")).0, 200);
}

/// Issue 12 §5: tract's text (which can quote constant tensors) reaches neither the health
/// endpoint nor a client; they get the error kind and its stable code.
#[test]
fn tract_error_text_never_reaches_health_or_clients() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock = Arc::new(FakeClock(Mutex::new(T0)));
    let app = App::new(&crate::config::tests::good(), clock).unwrap();
    let load = nacre_model::Model::load(&nacre_model::sample::mlp_onnx_mistyped()).unwrap_err();
    let detail = load.tract_detail().to_owned();
    assert!(!detail.is_empty());

    let failure = Failure::Model(load);
    let console = failure.to_string();
    assert_eq!(console, "model: the model cannot be loaded (model_load_failed)");
    app.fail(&failure);
    let (status, body) = rt.block_on(get(&app, "/v2/health/ready"));
    assert_eq!(status, 503);
    assert_eq!(body["reason"], console.as_str());
    assert!(!body.to_string().contains(&detail));

    let model = nacre_model::Model::load(&nacre_model::sample::mlp_onnx()).unwrap();
    let run = model
        .run(vec![nacre_model::Tensor {
            shape: vec![1, 3],
            data: nacre_model::TensorData::Fp32(vec![1.0, 2.0, 3.0]),
        }])
        .unwrap_err();
    let reject = super::infer::model_reject(&run);
    assert_eq!((reject.status.as_u16(), reject.reason), (500, "inference_failed"));
    assert!(!reject.message.contains(run.tract_detail()));
    assert_eq!(reject.message, "inference failed (inference_failed)");
}

/// Issue 17: a model the ONNX scan refuses never serves, and readiness says why (the scan's
/// reason names operators and tensors, never their values).
#[test]
fn a_model_the_scan_refuses_is_not_ready_and_says_why() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock = Arc::new(FakeClock(Mutex::new(T0)));
    let app = App::new(&crate::config::tests::good(), clock).unwrap();
    let failure = Failure::Model(nacre_model::Model::load(b"\x08\x07\x3a\x02\x0a\x00").unwrap_err());
    let console = failure.to_string();
    assert!(console.starts_with("model: the model is refused (model_refused): "), "{console}");
    app.fail(&failure);
    let (status, body) = rt.block_on(get(&app, "/v2/health/ready"));
    assert_eq!(status, 503);
    assert_eq!(body["reason"], console.as_str());
    assert!(
        app.metrics_text().contains("nacre_enclave_failures_total{stage=\"model_refused\"} 1"),
        "{}",
        app.metrics_text()
    );
}

/// A one-leaf log: the release entry's bytes and its checkpoint, plus the same checkpoint
/// cosigned by a witness.
fn one_leaf_log() -> (nacre_protocol::messages::ReleaseLog, nacre_protocol::messages::ReleaseLog) {
    use nacre_tlog::{KeyKind, NoteSigner};
    let log = NoteSigner::from_seed("test.invalid/log", KeyKind::Checkpoint, &[1; 32]).unwrap();
    let witness = NoteSigner::from_seed("test.invalid/w", KeyKind::Cosignature, &[2; 32]).unwrap();
    let entry = br#"{"not":"decoded by the enclave"}"#.to_vec();
    let root = nacre_tlog::tree::leaf_hash(&entry);
    let note = nacre_tlog::sign_checkpoint(&log, 1, root).unwrap();
    let mut opened = nacre_tlog::open_checkpoint(&note, log.public(), &[]).unwrap();
    let line = nacre_tlog::cosign::cosign(&witness, opened.text(), 1_700_000_000).unwrap();
    opened.add_cosignatures(&line, std::slice::from_ref(witness.public())).unwrap();
    let make = |checkpoint: Vec<u8>| nacre_protocol::messages::ReleaseLog {
        entry: entry.clone().into(),
        index: 0,
        inclusion: vec![],
        checkpoint: checkpoint.into(),
    };
    (make(note), make(opened.to_bytes()))
}

#[test]
fn the_release_log_proof_keeps_the_best_checkpoint_of_its_own_leaf() {
    let (signed, cosigned) = one_leaf_log();
    let proof = super::release_log::ReleaseLogProof::new(&signed).unwrap();
    assert_eq!(proof.cosignatures(), 0);
    // Another leaf's proof is never adopted, whatever its cosignatures.
    let mut other = cosigned.clone();
    other.entry = b"{}".to_vec().into();
    assert!(!proof.offer(&other));
    assert!(proof.offer(&cosigned));
    assert_eq!(proof.cosignatures(), 1);
    // Not worse: the served proof stays the cosigned one.
    assert!(!proof.offer(&signed));
    let served = proof.proof();
    assert_eq!(
        served.checkpoint,
        nacre_tlog::ReleaseProof::new(&cosigned.entry, 0, &[], &cosigned.checkpoint).checkpoint
    );
}

/// `GET /v1/log/release`: the proof the enclave holds, as the client's `ReleaseProof` JSON; a
/// 404 (which a client requiring the log refuses) when the key release came without one.
#[test]
fn the_release_log_proof_is_served_or_its_absence_is_a_404() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let without = serving();
    let (status, body) = rt.block_on(get(&without.app, "/v1/log/release"));
    assert_eq!(status, 404, "{body}");
    let (_, cosigned) = one_leaf_log();
    let proof = Arc::new(super::release_log::ReleaseLogProof::new(&cosigned).unwrap());
    let with = serving_with(Some(proof.clone()));
    let (status, body) = rt.block_on(get(&with.app, "/v1/log/release"));
    assert_eq!(status, 200);
    let served: nacre_tlog::ReleaseProof = serde_json::from_value(body).unwrap();
    assert_eq!(served, proof.proof());
}
