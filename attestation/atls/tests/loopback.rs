//! Attested TLS over real rustls connections on 127.0.0.1, with simulated-TEE evidence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use nacre_atls::fresh::{self, Exporter, Nonce};
use nacre_atls::{
    AtlsError, AttestationPolicy, AttestedCert, AttestedServerVerifier, CertOptions, EVIDENCE_OID, Malformed,
};
use nacre_sim::{SimCa, SimParams};
use nacre_verifier::{Appraiser, EvidenceVerifier, Policy, PolicyViolation, SnpRoots, VerifyError};
use nacre_wire::binding::ModelBinding;
use nacre_wire::{Evidence, Tee};
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const OTHER_MEASUREMENT: [u8; 48] = [0xa5; 48];
const MODEL: [u8; 32] = [0x3c; 32];
/// What the certificate binds: the model, a guard manifest's digest and a release key's.
const BINDING: ModelBinding =
    ModelBinding { model_identity: MODEL, guard_digest: [0x4d; 32], release_key_digest: [0x5e; 32] };

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The simulated TEE a guest attests with.
struct SimTee {
    ca: SimCa,
}

impl SimTee {
    fn new() -> Arc<Self> {
        Arc::new(SimTee { ca: SimCa::generate(SimParams::new(time::OffsetDateTime::now_utc())).unwrap() })
    }

    fn evidence(&self, report_data: [u8; 64], measurement: [u8; 48]) -> Evidence {
        let mut report = self.ca.report_template();
        report.report_data = report_data;
        report.measurement = measurement;
        let signed = self.ca.sign(&report).unwrap();
        let mut certs: Vec<ByteBuf> = self.ca.chain_der().into_iter().map(ByteBuf::from).collect();
        certs.push(ByteBuf::from(self.ca.crl_der().to_vec()));
        Evidence { tee: Tee::Sim, report: signed.to_vec(), certs, event_log: None }
    }

    fn cert_with(&self, options: &CertOptions) -> Arc<AttestedCert> {
        let attest = |rd| Ok::<_, std::convert::Infallible>(self.evidence(rd, MEASUREMENT));
        Arc::new(AttestedCert::generate(options, BINDING, attest).unwrap())
    }

    fn cert(&self) -> Arc<AttestedCert> {
        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        self.cert_with(&CertOptions::new(sans, time::OffsetDateTime::now_utc()))
    }

    /// A client policy trusting this sim root and allowing `measurements`.
    fn policy(&self, measurements: &[[u8; 48]], model: [u8; 32]) -> AttestationPolicy {
        let list: Vec<String> = measurements.iter().map(|m| format!("\"{}\"", hex::encode(m))).collect();
        let policy = Policy::from_toml(&format!("[sim]\nmeasurements = [{}]\n", list.join(", "))).unwrap();
        let verifier =
            EvidenceVerifier::new(None).with_sim(SnpRoots::insecure_sim(self.ca.ark_der()).unwrap());
        AttestationPolicy::new(verifier, Appraiser::new(policy), model)
    }

    fn client(&self, measurements: &[[u8; 48]], model: [u8; 32]) -> Client {
        self.client_with_guard(measurements, model, None)
    }

    fn client_with_guard(
        &self,
        measurements: &[[u8; 48]],
        model: [u8; 32],
        guard: Option<[u8; 32]>,
    ) -> Client {
        let verifier = AttestedServerVerifier::new(self.policy(measurements, model).with_guard_digest(guard));
        let config = Arc::new(verifier.client_config().unwrap());
        Client { verifier, config }
    }
}

struct Client {
    verifier: Arc<AttestedServerVerifier>,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<ClientTls> {
        connect_with(addr, self.config.clone()).await
    }

    /// Connects expecting the handshake to fail, and returns the typed reason.
    async fn refused(&self, addr: SocketAddr) -> AtlsError {
        match self.connect(addr).await {
            Ok(_) => panic!("the handshake succeeded"),
            Err(e) => {
                AtlsError::from_io(&e).unwrap_or_else(|| panic!("not an attested-TLS refusal: {e}")).clone()
            }
        }
    }
}

async fn connect_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// How the test server answers `GET /v1/attestation`.
#[derive(Clone)]
enum Mode {
    /// Fresh evidence for the request's nonce and this connection's exporter.
    Honest,
    /// The first answer on a connection, for every later request too.
    ReplayFirst,
    /// Honest binding, but from a guest with another measurement.
    Measurement([u8; 48]),
    /// Terminates TLS with the (leaked) certificate key and forwards requests to the real guest.
    Relay { upstream: SocketAddr, client: Arc<rustls::ClientConfig> },
}

struct Server {
    addr: SocketAddr,
    /// The exporter value the server computed on each accepted connection.
    exporters: mpsc::UnboundedReceiver<Exporter>,
}

/// Serves `config` on 127.0.0.1; `guest` answers attestation requests.
async fn serve(
    config: rustls::ServerConfig,
    guest: Option<(Arc<SimTee>, Arc<AttestedCert>)>,
    mode: Mode,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, exporters) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx, guest, mode) = (acceptor.clone(), tx.clone(), guest.clone(), mode.clone());
            tokio::spawn(async move {
                // Refused handshakes are what many tests are about.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let exporter = fresh::exporter(tls.get_ref().1).unwrap();
                let _ = tx.send(exporter);
                let Some((tee, cert)) = guest else { return };
                let mut first: Option<Vec<u8>> = None;
                let mut upstream: Option<ClientTls> = None;
                while let Some(target) = read_head(&mut tls).await {
                    let Some(query) = target.strip_prefix("/v1/attestation?") else {
                        write_response(&mut tls, 404, b"").await;
                        continue;
                    };
                    let nonce = match fresh::parse_query(query) {
                        Ok(n) => n,
                        Err(_) => {
                            write_response(&mut tls, 400, b"").await;
                            continue;
                        }
                    };
                    let honest = |measurement| {
                        let rd = cert.fresh_report_data(&nonce, &exporter).unwrap();
                        fresh::encode_response(&tee.evidence(rd, measurement)).unwrap()
                    };
                    let body = match &mode {
                        Mode::Honest => honest(MEASUREMENT),
                        Mode::ReplayFirst => first.get_or_insert_with(|| honest(MEASUREMENT)).clone(),
                        Mode::Measurement(m) => honest(*m),
                        Mode::Relay { upstream: addr, client } => {
                            if upstream.is_none() {
                                upstream = Some(connect_with(*addr, client.clone()).await.unwrap());
                            }
                            let up = upstream.as_mut().unwrap();
                            up.write_all(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
                            read_response(up).await.1
                        }
                    };
                    write_response(&mut tls, 200, &body).await;
                }
            });
        }
    });
    Server { addr, exporters }
}

/// Reads an HTTP/1.1 head and returns the request target (or the status line); None at EOF.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if s.read(&mut byte).await.ok()? == 0 || head.len() > 8192 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).ok()?;
    Some(text.split(' ').nth(1)?.to_owned())
}

async fn write_response<S: AsyncWrite + Unpin>(s: &mut S, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
        fresh::CONTENT_TYPE,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
}

/// Reads a response written by [`write_response`]: (status, body).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (u16, Vec<u8>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let text = String::from_utf8(head).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = text.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
    assert!(len <= nacre_atls::MAX_EVIDENCE_LEN);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (status, body)
}

/// Asks for a fresh attestation with `nonce` on `tls`.
async fn get_attestation(tls: &mut ClientTls, nonce: &Nonce) -> Evidence {
    let request = format!("GET {} HTTP/1.1\r\nhost: localhost\r\n\r\n", fresh::request_target(nonce));
    tls.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(tls).await;
    assert_eq!(status, 200);
    fresh::decode_response(&body).unwrap()
}

fn tls13_server(cert: CertificateDer<'static>, key: &KeyPair) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `with_single_cert`: its key/certificate check parses the certificate with webpki,
    // which refuses a critical unknown extension before the client could see it.
    let key = provider.key_provider.load_private_key(key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![cert], key);
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
}

/// A certificate made with rcgen and its own key, carrying `extensions`.
fn forged_cert(extensions: Vec<CustomExtension>) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.custom_extensions = extensions;
    (params.self_signed(&key).unwrap().der().clone(), key)
}

fn is_report_data_mismatch(e: &VerifyError) -> bool {
    matches!(e, VerifyError::Policy(PolicyViolation::ReportData { .. }))
}

#[tokio::test]
async fn the_right_guest_is_accepted_and_what_was_verified_is_recorded() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let server = serve(cert.server_config().unwrap(), None, Mode::Honest).await;
    let client = tee.client(&[MEASUREMENT], MODEL);
    let tls = client.connect(server.addr).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let peer = client.verifier.peer(conn).expect("the verifier recorded the connection's certificate");
    assert_eq!(peer.claims().measurement, MEASUREMENT);
    assert_eq!(peer.claims().tee, Tee::Sim);
    assert_eq!(peer.model_identity(), &MODEL);
    assert_eq!(peer.model(), &BINDING, "the guard and release-key digests the evidence binds");
    assert_eq!(peer.spki_sha256(), cert.spki_sha256());
    let shown = peer.to_string();
    assert!(shown.contains(&hex::encode(MEASUREMENT)) && shown.contains(&hex::encode(MODEL)), "{shown}");
    assert!(shown.contains(&hex::encode([0x4d; 32])) && shown.contains(&hex::encode([0x5e; 32])), "{shown}");
}

#[tokio::test]
async fn a_guard_pin_is_enforced() {
    let tee = SimTee::new();
    let server = serve(tee.cert().server_config().unwrap(), None, Mode::Honest).await;
    let client = tee.client_with_guard(&[MEASUREMENT], MODEL, Some([0x4d; 32]));
    client.connect(server.addr).await.unwrap();
    for other in [[0x4e; 32], [0; 32]] {
        let e = tee.client_with_guard(&[MEASUREMENT], MODEL, Some(other)).refused(server.addr).await;
        assert!(matches!(&e, AtlsError::WrongGuard { .. }), "{e}");
        assert!(e.to_string().contains(&hex::encode([0x4d; 32])), "{e}");
    }
}

#[tokio::test]
async fn another_model_identity_is_refused() {
    let tee = SimTee::new();
    let server = serve(tee.cert().server_config().unwrap(), None, Mode::Honest).await;
    let e = tee.client(&[MEASUREMENT], [0x3d; 32]).refused(server.addr).await;
    assert!(matches!(&e, AtlsError::WrongModel { .. }), "{e}");
    assert!(
        e.to_string().contains(&hex::encode(MODEL)) && e.to_string().contains(&hex::encode([0x3d; 32])),
        "{e}"
    );
}

#[tokio::test]
async fn a_policy_naming_another_measurement_refuses() {
    let tee = SimTee::new();
    let server = serve(tee.cert().server_config().unwrap(), None, Mode::Honest).await;
    let e = tee.client(&[OTHER_MEASUREMENT], MODEL).refused(server.addr).await;
    assert!(
        matches!(
            &e,
            AtlsError::Evidence(VerifyError::Policy(PolicyViolation::NotAllowed {
                field: "measurement",
                ..
            }))
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&hex::encode(MEASUREMENT)), "{e}");
}

#[tokio::test]
async fn evidence_copied_into_a_certificate_with_another_key_is_refused() {
    let tee = SimTee::new();
    let genuine = tee.cert();
    let ext = nacre_atls::extension::custom_extension(genuine.evidence()).unwrap();
    let binding = nacre_atls::extension::binding_extension(genuine.model());
    let (der, key) = forged_cert(vec![ext.clone(), binding]);
    let server = serve(tls13_server(der, &key), None, Mode::Honest).await;
    let e = tee.client(&[MEASUREMENT], MODEL).refused(server.addr).await;
    assert!(matches!(&e, AtlsError::Evidence(v) if is_report_data_mismatch(v)), "{e}");
    // Without the model binding extension, the certificate is refused before any appraisal.
    let (der, key) = forged_cert(vec![ext]);
    let server = serve(tls13_server(der, &key), None, Mode::Honest).await;
    let e = tee.client(&[MEASUREMENT], MODEL).refused(server.addr).await;
    assert!(matches!(&e, AtlsError::Malformed(Malformed::NoBinding)), "{e}");
}

#[tokio::test]
async fn missing_duplicate_garbage_or_critical_extensions_are_refused() {
    let tee = SimTee::new();
    let client = tee.client(&[MEASUREMENT], MODEL);
    let genuine = tee.cert();
    let good = || nacre_atls::extension::custom_extension(genuine.evidence()).unwrap();
    let raw = |content: Vec<u8>| CustomExtension::from_oid_content(EVIDENCE_OID, content);
    let mut critical = good();
    critical.set_criticality(true);
    let other = CustomExtension::from_oid_content(&[2, 25, 1], vec![0x05, 0x00]);
    // (name, the forged certificate's extensions, the expected reason)
    type Case = (&'static str, Vec<CustomExtension>, fn(&Malformed) -> bool);
    let cases: Vec<Case> = vec![
        ("none", vec![], |m| matches!(m, Malformed::NoEvidence)),
        ("two", vec![good(), good()], |m| matches!(m, Malformed::DuplicateEvidence { count: 2 })),
        ("not DER", vec![raw(b"garbage".to_vec())], |m| matches!(m, Malformed::Der(_))),
        ("garbage CBOR", vec![raw(vec![0x04, 0x03, 0xff, 0x00, 0x01])], |m| matches!(m, Malformed::Cbor(_))),
        ("bare CBOR", vec![raw(fresh::encode_response(genuine.evidence()).unwrap())], |m| {
            matches!(m, Malformed::Der(_))
        }),
        ("critical", vec![critical], |m| matches!(m, Malformed::CriticalEvidence)),
        ("another extension twice", vec![good(), other.clone(), other], |m| {
            matches!(m, Malformed::DuplicateExtension)
        }),
    ];
    for (name, extensions, expected) in cases {
        let (der, key) = forged_cert(extensions);
        let server = serve(tls13_server(der, &key), None, Mode::Honest).await;
        let e = client.refused(server.addr).await;
        assert!(matches!(&e, AtlsError::Malformed(m) if expected(m)), "{name}: {e}");
    }
}

#[tokio::test]
async fn a_chain_of_more_than_one_certificate_is_refused() {
    let tee = SimTee::new();
    let genuine = tee.cert();
    let (extra, _) = forged_cert(vec![]);
    let chain = vec![genuine.cert_der().clone(), extra];
    let certified = rustls::sign::CertifiedKey::new(chain, genuine.certified_key().key.clone());
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let server = serve(config, None, Mode::Honest).await;
    let e = tee.client(&[MEASUREMENT], MODEL).refused(server.addr).await;
    assert!(matches!(e, AtlsError::Malformed(Malformed::ChainLength { count: 2 })), "{e}");
}

#[tokio::test]
async fn a_certificate_outside_its_validity_is_refused() {
    let tee = SimTee::new();
    let now = time::OffsetDateTime::now_utc();
    let expired = CertOptions {
        subject_alt_names: vec!["localhost".into()],
        not_before: now - time::Duration::days(2),
        not_after: now - time::Duration::days(1),
    };
    let server = serve(tee.cert_with(&expired).server_config().unwrap(), None, Mode::Honest).await;
    let e = tee.client(&[MEASUREMENT], MODEL).refused(server.addr).await;
    assert!(matches!(e, AtlsError::CertificateNotValidNow { .. }), "{e}");
}

#[tokio::test]
async fn fresh_attestation_is_bound_to_the_connection() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let mut server =
        serve(cert.server_config().unwrap(), Some((tee.clone(), cert.clone())), Mode::Honest).await;
    let client = tee.client(&[MEASUREMENT], MODEL);
    let policy = client.verifier.policy().clone();

    let mut a = client.connect(server.addr).await.unwrap();
    let exporter_a = fresh::exporter(a.get_ref().1).unwrap();
    assert_eq!(server.exporters.recv().await.unwrap(), exporter_a, "both sides derive the same exporter");
    let peer = client.verifier.peer(a.get_ref().1).unwrap();
    let nonce = Nonce::random().unwrap();
    let evidence_a = get_attestation(&mut a, &nonce).await;
    let fresh_claims =
        fresh::verify_fresh(&policy, &peer, &evidence_a, &nonce, &exporter_a, now_unix()).unwrap();
    assert_eq!(fresh_claims.measurement, MEASUREMENT);

    // The same nonce on another connection: A's evidence does not carry B's exporter.
    let b = client.connect(server.addr).await.unwrap();
    let exporter_b = fresh::exporter(b.get_ref().1).unwrap();
    assert_eq!(server.exporters.recv().await.unwrap(), exporter_b);
    assert_ne!(exporter_a, exporter_b);
    let e = fresh::verify_fresh(&policy, &peer, &evidence_a, &nonce, &exporter_b, now_unix()).unwrap_err();
    assert!(matches!(&e, AtlsError::FreshEvidence(v) if is_report_data_mismatch(v)), "{e}");
}

#[tokio::test]
async fn a_relay_holding_the_leaked_key_is_detected() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let guest = serve(cert.server_config().unwrap(), Some((tee.clone(), cert.clone())), Mode::Honest).await;
    // The relay presents the guest's own certificate with the leaked key, and obtains genuine
    // fresh evidence from the guest over its own connection.
    let relay_client = tee.client(&[MEASUREMENT], MODEL).config;
    let relay = serve(
        cert.server_config().unwrap(),
        Some((tee.clone(), cert.clone())),
        Mode::Relay { upstream: guest.addr, client: relay_client },
    )
    .await;

    let client = tee.client(&[MEASUREMENT], MODEL);
    let mut tls = client.connect(relay.addr).await.expect("the leaked certificate itself verifies");
    let peer = client.verifier.peer(tls.get_ref().1).unwrap();
    let exporter = fresh::exporter(tls.get_ref().1).unwrap();
    let nonce = Nonce::random().unwrap();
    let evidence = get_attestation(&mut tls, &nonce).await;
    let e = fresh::verify_fresh(client.verifier.policy(), &peer, &evidence, &nonce, &exporter, now_unix())
        .unwrap_err();
    assert!(matches!(&e, AtlsError::FreshEvidence(v) if is_report_data_mismatch(v)), "{e}");
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let server =
        serve(cert.server_config().unwrap(), Some((tee.clone(), cert.clone())), Mode::ReplayFirst).await;
    let client = tee.client(&[MEASUREMENT], MODEL);
    let mut tls = client.connect(server.addr).await.unwrap();
    let peer = client.verifier.peer(tls.get_ref().1).unwrap();
    let exporter = fresh::exporter(tls.get_ref().1).unwrap();
    let policy = client.verifier.policy();

    let first = Nonce::random().unwrap();
    let evidence = get_attestation(&mut tls, &first).await;
    fresh::verify_fresh(policy, &peer, &evidence, &first, &exporter, now_unix()).unwrap();
    let second = Nonce::random().unwrap();
    let replayed = get_attestation(&mut tls, &second).await;
    assert_eq!(replayed, evidence);
    let e = fresh::verify_fresh(policy, &peer, &replayed, &second, &exporter, now_unix()).unwrap_err();
    assert!(matches!(&e, AtlsError::FreshEvidence(v) if is_report_data_mismatch(v)), "{e}");
}

#[tokio::test]
async fn fresh_evidence_from_another_guest_is_refused() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let mode = Mode::Measurement(OTHER_MEASUREMENT);
    let server = serve(cert.server_config().unwrap(), Some((tee.clone(), cert.clone())), mode).await;
    // Both measurements are acceptable to the policy; they must still be the same guest's.
    let client = tee.client(&[MEASUREMENT, OTHER_MEASUREMENT], MODEL);
    let mut tls = client.connect(server.addr).await.unwrap();
    let peer = client.verifier.peer(tls.get_ref().1).unwrap();
    let exporter = fresh::exporter(tls.get_ref().1).unwrap();
    let nonce = Nonce::random().unwrap();
    let evidence = get_attestation(&mut tls, &nonce).await;
    let e = fresh::verify_fresh(client.verifier.policy(), &peer, &evidence, &nonce, &exporter, now_unix())
        .unwrap_err();
    assert!(matches!(e, AtlsError::DifferentGuest { what: "measurement", .. }), "{e}");
}

#[tokio::test]
async fn tls12_is_never_negotiated() {
    let tee = SimTee::new();
    let cert = tee.cert();
    let client = tee.client(&[MEASUREMENT], MODEL);
    let provider = || Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    // A TLS 1.2-only client cannot talk to the guest.
    let server = serve(cert.server_config().unwrap(), None, Mode::Honest).await;
    let tls12_client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(client.verifier.clone())
        .with_no_client_auth();
    assert!(connect_with(server.addr, Arc::new(tls12_client)).await.is_err());

    // The attested client cannot talk to a TLS 1.2-only server, even with the genuine
    // certificate and key.
    let tls12_server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(cert.certified_key())));
    let old = serve(tls12_server, None, Mode::Honest).await;
    assert!(client.connect(old.addr).await.is_err());

    // Even a client configuration that allows TLS 1.2 gets no TLS 1.2 handshake past the
    // verifier.
    let both = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(client.verifier.clone())
        .with_no_client_auth();
    let e = connect_with(old.addr, Arc::new(both)).await.unwrap_err();
    assert_eq!(AtlsError::from_io(&e), Some(&AtlsError::Tls12Refused), "{e}");
}
