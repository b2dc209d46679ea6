//! `nacre._native`: nacre-client for Python. Everything that decides whether an enclave is
//! trusted — the policy file, the attested certificate, the fresh channel-bound attestation, the
//! verification document — is nacre-client's; this module only carries it across: it loads the
//! policy (refusing the simulated TEE unless the caller opted in), runs the client on one I/O
//! runtime with the GIL released, and turns outcomes into Python objects and exceptions (in one
//! place, [`Failure::into_py_err`]). The Python API around it is `python/nacre/*.py`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, header};
use nacre_client::report::Status;
use nacre_client::{AttestedSession, ClientError, ClientPolicy, Verification as Document, Wire};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::runtime::Runtime;
use zeroize::Zeroizing;

/// The exceptions are Python classes (`nacre/_errors.py`): `TransportError` is also a builtin
/// `ConnectionError`, and `VerificationError` wraps its document in `nacre.Verification`.
mod errors {
    pyo3::import_exception!(nacre._errors, PolicyError);
    pyo3::import_exception!(nacre._errors, VerificationError);
    pyo3::import_exception!(nacre._errors, TransportError);
    pyo3::import_exception!(nacre._errors, SessionClosedError);
}

/// Why a call failed, by cause.
#[derive(Debug)]
enum Failure {
    /// The policy file did not load, or it trusts the simulated TEE and the caller did not opt in.
    Policy(String),
    /// The enclave failed verification: the document names the step and the reason. Nothing but
    /// the fresh-attestation nonce was sent.
    Refused(Box<Verification>),
    /// The enclave could not be reached to verify it (the document's connection step failed).
    Unreachable(Box<Verification>),
    /// A request on a verified connection failed in transport; whether the server acted on it
    /// is unknown, so it is not retried.
    Transport(String),
    /// The session was closed by its owner.
    Closed,
    /// Arguments that cannot be sent (a URL that is not `https://HOST[:PORT]`, a bad header).
    Misuse(String),
    /// The I/O runtime could not start.
    Internal(String),
}

impl Failure {
    /// A failed [`AttestedSession::connect_with`]: its refusal document, by where it failed.
    fn from_connect(url: &str, error: &ClientError) -> Self {
        match error {
            ClientError::Url(_) => Failure::Misuse(error.to_string()),
            ClientError::Connect { .. } | ClientError::Timeout => {
                Failure::Unreachable(Box::new(Verification::from_refusal(url, error)))
            }
            _ => Failure::Refused(Box::new(Verification::from_refusal(url, error))),
        }
    }

    fn into_py_err(self, py: Python<'_>) -> PyErr {
        let with_document = |v: Box<Verification>| Py::new(py, *v);
        match self {
            Failure::Policy(message) => errors::PolicyError::new_err(message),
            Failure::Refused(v) => match with_document(v) {
                Ok(v) => errors::VerificationError::new_err((v,)),
                Err(e) => e,
            },
            Failure::Unreachable(v) => {
                let message = v.document.reason().unwrap_or("the enclave could not be reached").to_owned();
                match with_document(v) {
                    Ok(v) => errors::TransportError::new_err((message, v)),
                    Err(e) => e,
                }
            }
            Failure::Transport(message) => errors::TransportError::new_err((message,)),
            Failure::Closed => errors::SessionClosedError::new_err("the session is closed"),
            Failure::Misuse(message) => PyValueError::new_err(message),
            Failure::Internal(message) => PyRuntimeError::new_err(message),
        }
    }
}

/// One I/O runtime per process. Multi-threaded with one worker so that the connection drivers
/// nacre-client spawns keep running between calls: a session sees the enclave close an idle
/// connection (HTTP/2 GOAWAY) and verifies a new one before its next request.
fn runtime() -> Result<&'static Runtime, Failure> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("nacre-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Failure::Internal(format!("the I/O runtime did not start: {e}")))
}

/// `ClientPolicy::load`, then the simulated TEE's opt-in: a policy with `insecure_sim_root`
/// accepts evidence signed by a key on this machine, so it is refused before any connection
/// unless the caller asked for it by name.
fn load_policy(path: &Path, allow_insecure_sim: bool) -> Result<ClientPolicy, Failure> {
    let policy = ClientPolicy::load(path).map_err(|e| Failure::Policy(e.to_string()))?;
    if policy.insecure_sim && !allow_insecure_sim {
        return Err(Failure::Policy(format!(
            "client policy {}: insecure_sim_root trusts the simulated TEE (no hardware root of trust, \
             development only); pass allow_insecure_sim=True to accept it",
            path.display()
        )));
    }
    Ok(policy)
}

/// Connects and verifies both attestations; the session and its document.
async fn connect(
    url: &str,
    policy: &ClientPolicy,
    wire: Wire,
) -> Result<(AttestedSession, Verification), Failure> {
    match AttestedSession::connect_with(url, policy, wire).await {
        Ok(session) => {
            let verification = Verification::from_session(url, policy, &session);
            Ok((session, verification))
        }
        Err(e) => Err(Failure::from_connect(url, &e)),
    }
}

/// The verification document (`nacre verify`'s), and on acceptance the verified certificate.
#[pyclass(frozen, module = "nacre._native")]
#[derive(Clone, Debug)]
struct Verification {
    document: Document,
    /// Present only on acceptance.
    peer: Option<Peer>,
}

#[derive(Clone, Debug)]
struct Peer {
    certificate_pem: String,
    /// The certificate's subjectAltName DNS names and IP addresses: what a TLS library checks
    /// the server name against.
    certificate_names: Vec<String>,
    spki_sha256: String,
    model_identity: String,
    guard_digest: String,
    release_key_digest: String,
}

impl Verification {
    fn from_session(url: &str, policy: &ClientPolicy, session: &AttestedSession) -> Self {
        let peer = session.peer();
        Verification {
            document: Document::accepted(url, policy, session),
            peer: Some(Peer {
                certificate_pem: peer.certificate_pem(),
                certificate_names: subject_alt_names(peer.certificate_der()),
                spki_sha256: hex::encode(peer.spki_sha256()),
                model_identity: hex::encode(peer.model_identity()),
                guard_digest: hex::encode(peer.model().guard_digest),
                release_key_digest: hex::encode(peer.model().release_key_digest),
            }),
        }
    }

    fn from_refusal(url: &str, error: &ClientError) -> Self {
        Verification { document: Document::refused(url, error), peer: None }
    }
}

fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[pymethods]
impl Verification {
    #[getter]
    fn url(&self) -> &str {
        &self.document.url
    }

    #[getter]
    fn accepted(&self) -> bool {
        self.document.accepted
    }

    /// Every step: `{"step", "status" ("passed" | "failed" | "not run"), "detail"}`.
    #[getter]
    fn steps<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.document
            .steps
            .iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("step", s.name)?;
                d.set_item("status", s.status.as_str())?;
                d.set_item("detail", &s.detail)?;
                Ok(d)
            })
            .collect()
    }

    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.document.warnings.clone()
    }

    /// The failed step's reason (refusals only).
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.document.reason()
    }

    /// The failed step's name (refusals only).
    #[getter]
    fn failed_step(&self) -> Option<&str> {
        self.document.steps.iter().find(|s| s.status == Status::Failed).map(|s| s.name)
    }

    /// The document as JSON text, exactly as `nacre verify --json` prints it.
    fn to_json(&self) -> String {
        self.document.document.to_string()
    }

    /// The document as Python objects (`verdict`, `steps`, and on acceptance the claims).
    #[getter]
    fn document<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.call_method1("loads", (self.to_json(),))
    }

    /// Whether the policy trusted the simulated TEE.
    #[getter]
    fn insecure_sim(&self) -> bool {
        self.document.document.get("insecure_sim").and_then(|v| v.as_bool()).unwrap_or(false)
    }

    #[getter]
    fn certificate_pem(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.certificate_pem.as_str())
    }

    #[getter]
    fn certificate_names(&self) -> Vec<String> {
        self.peer.as_ref().map(|p| p.certificate_names.clone()).unwrap_or_default()
    }

    #[getter]
    fn spki_sha256(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.spki_sha256.as_str())
    }

    #[getter]
    fn model_identity(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.model_identity.as_str())
    }

    #[getter]
    fn guard_digest(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.guard_digest.as_str())
    }

    #[getter]
    fn release_key_digest(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.release_key_digest.as_str())
    }

    /// `nacre verify`'s text.
    fn __str__(&self) -> String {
        self.document.to_string()
    }

    fn __repr__(&self) -> String {
        let verdict = if self.document.accepted { "accepted" } else { "refused" };
        format!("<nacre.Verification {verdict} {}>", self.document.url)
    }
}

/// `nacre verify URL --policy FILE`: connects, verifies both attestations, closes. A refusal
/// raises `VerificationError` (unreachable: `TransportError`), each carrying the document.
#[pyfunction]
#[pyo3(signature = (url, policy, *, allow_insecure_sim = false))]
fn verify(py: Python<'_>, url: &str, policy: PathBuf, allow_insecure_sim: bool) -> PyResult<Verification> {
    let run = || {
        let policy = load_policy(&policy, allow_insecure_sim)?;
        let rt = runtime()?;
        // The session is dropped (its connection closed) once its document is written.
        rt.block_on(async { connect(url, &policy, Wire::Http1).await.map(|(_, v)| v) })
    };
    py.detach(run).map_err(|f| f.into_py_err(py))
}

/// Requests on an [`AttestedSession`]: each goes over a connection whose certificate and fresh,
/// channel-bound attestation were verified. HTTP/2, so that a connection the enclave closed is
/// seen as closed; a new one is verified from the start before anything is sent on it.
#[pyclass(frozen, module = "nacre._native")]
struct Session {
    url: String,
    policy: ClientPolicy,
    token: Option<Zeroizing<String>>,
    state: Mutex<State>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Session").field("url", &self.url).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    session: Option<AttestedSession>,
    /// The document of the current (last verified) connection.
    verification: Verification,
    /// Connections verified so far.
    verifications: u64,
    closed: bool,
}

impl Session {
    /// The verified connection, verifying a new one when there is none or the last is gone.
    async fn connection<'s>(&self, state: &'s mut State) -> Result<&'s mut AttestedSession, Failure> {
        if state.closed {
            return Err(Failure::Closed);
        }
        let alive = state.session.take().filter(|s| s.http2().is_some_and(|c| !c.is_closed()));
        let session = match alive {
            Some(s) => s,
            None => {
                let (s, verification) = connect(&self.url, &self.policy, Wire::Http2).await?;
                state.verification = verification;
                state.verifications += 1;
                match &self.token {
                    Some(t) => s.with_token(t.as_str()),
                    None => s,
                }
            }
        };
        Ok(state.session.insert(session))
    }

    /// `f` on the state, waiting for it without the GIL: a request in another thread holds the
    /// lock for as long as it takes.
    fn with_state<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut State) -> T + Send) -> T {
        py.detach(|| f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    async fn send(
        &self,
        state: &mut State,
        method: Method,
        target: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Bytes>, Failure> {
        let session = self.connection(state).await?;
        match session.send(method, target, headers, body).await {
            Ok(response) => Ok(response),
            Err(e) => {
                // The connection may be broken; the next request verifies a new one.
                state.session = None;
                Err(Failure::Transport(format!("{}: {e}", self.url)))
            }
        }
    }
}

/// Names of headers that HTTP/2 forbids (RFC 9113 §8.2.2) or that the session sets itself.
const RESERVED: [&str; 6] =
    ["host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

fn header_map(pairs: Vec<(String, String)>) -> Result<HeaderMap, Failure> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Failure::Misuse(format!("header name {name:?} is not a valid name")))?;
        if RESERVED.contains(&n.as_str()) || n == header::CONTENT_LENGTH {
            return Err(Failure::Misuse(format!(
                "header {name:?} is set by the session (HTTP/2, a length from the body)"
            )));
        }
        // The value may be a token: it is not quoted in the error.
        let v = HeaderValue::from_str(&value).map_err(|_| {
            Failure::Misuse(format!("header {name:?}: the value is not a valid header value"))
        })?;
        map.append(n, v);
    }
    Ok(map)
}

/// A response as the Python layer builds `nacre.Response` from it: status, headers in order
/// (repeated names repeated), body.
type Reply = (u16, Vec<(String, String)>, Py<PyBytes>);

#[pymethods]
impl Session {
    /// Verifies the enclave at `url` under the policy file (both attestations) before returning.
    #[new]
    #[pyo3(signature = (url, policy, *, token = None, allow_insecure_sim = false))]
    fn new(
        py: Python<'_>,
        url: String,
        policy: PathBuf,
        token: Option<String>,
        allow_insecure_sim: bool,
    ) -> PyResult<Self> {
        let token = token.map(Zeroizing::new);
        if token.as_ref().is_some_and(|t| HeaderValue::from_str(&format!("Bearer {}", t.as_str())).is_err()) {
            return Err(Failure::Misuse("the token is not a valid header value".into()).into_py_err(py));
        }
        let run = || {
            let policy = load_policy(&policy, allow_insecure_sim)?;
            let rt = runtime()?;
            let (session, verification) = rt.block_on(connect(&url, &policy, Wire::Http2))?;
            let session = match &token {
                Some(t) => session.with_token(t.as_str()),
                None => session,
            };
            let state = State { session: Some(session), verification, verifications: 1, closed: false };
            Ok(Session { url, policy, token, state: Mutex::new(state) })
        };
        py.detach(run).map_err(|f: Failure| f.into_py_err(py))
    }

    /// One request: `(status, [(name, value)], body)`, whatever the status. `target` is the
    /// path and query (`/v2/health/ready`); `timeout` (seconds) covers a reconnection's
    /// verification too.
    #[pyo3(signature = (method, target, headers, body, timeout = None))]
    fn request(
        &self,
        py: Python<'_>,
        method: &str,
        target: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Option<f64>,
    ) -> PyResult<Reply> {
        let prepared = (|| {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| Failure::Misuse(format!("method {method:?}")))?;
            if !target.starts_with('/') {
                return Err(Failure::Misuse(format!("{target:?}: a path on the enclave, starting with /")));
            }
            let timeout = timeout
                .map(Duration::try_from_secs_f64)
                .transpose()
                .map_err(|_| Failure::Misuse("timeout: a positive number of seconds".into()))?;
            Ok((method, header_map(headers)?, timeout, runtime()?))
        })();
        let (method, headers, timeout, rt) = prepared.map_err(|f| f.into_py_err(py))?;
        let body = Bytes::from(body);
        let result = py.detach(|| {
            // One request at a time on the session; other threads wait here without the GIL.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            rt.block_on(async {
                let send = self.send(&mut state, method, target, headers, body);
                match timeout {
                    None => send.await,
                    Some(limit) => tokio::time::timeout(limit, send).await.unwrap_or_else(|_| {
                        Err(Failure::Transport(format!("{}{target}: timed out after {limit:?}", self.url)))
                    }),
                }
            })
        });
        let response = result.map_err(|f| f.into_py_err(py))?;
        let (parts, body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Ok((parts.status.as_u16(), headers, PyBytes::new(py, &body).unbind()))
    }

    /// The verification of the current connection (a reconnection replaces it).
    #[getter]
    fn verification(&self, py: Python<'_>) -> Verification {
        self.with_state(py, |s| s.verification.clone())
    }

    /// How many connections were verified (1, plus one per reconnection).
    #[getter]
    fn verifications(&self, py: Python<'_>) -> u64 {
        self.with_state(py, |s| s.verifications)
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.with_state(py, |s| s.closed)
    }

    /// Closes the connection; later requests raise `SessionClosedError`.
    fn close(&self, py: Python<'_>) {
        self.with_state(py, |s| {
            s.closed = true;
            s.session = None;
        });
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Verification>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    Ok(())
}
