//! The whole serving stack on this machine, without a VM: a real attestation service (SQLite,
//! HTTPS on loopback), the host's simulated secure processor on a Unix socket, a sealed model,
//! and the `nacre-enclave` binary as a host process (`sim_socket`). Used by the serving tests
//! and the serving benchmark, so that they measure the enclave's stack and not TCG emulation.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nacre_attestation_client::Client;
use nacre_attestation_service::config::Config;
use nacre_attestation_service::service::Service;
use nacre_client::ClientPolicy;
use nacre_host::sp::{SecureProcessor, SimIdentity};
use nacre_sealed::{AwsLcGcm, DataKey, Output, SealParams};
use nacre_sim::{SimCa, SimParams};

/// The measurement the simulated secure processor reports for the host-process enclave.
pub const MEASUREMENT: [u8; 48] = [0x4e; 48];
pub const KEY_ID: &str = "serve-test";

pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// What to run.
pub struct Options {
    pub model: Vec<u8>,
    pub model_name: String,
    /// Measurements the key's release policy allows.
    pub release_measurement: [u8; 48],
    /// Applied to the sealed file before the enclave reads it.
    pub tamper: Option<fn(&mut Vec<u8>)>,
    /// Extra lines for the enclave's configuration.
    pub extra_config: String,
    /// The owner's guard manifest, sealed with the model.
    pub guard_manifest: Option<Vec<u8>>,
    /// Run a witness the service pushes its checkpoints to (its verifier key in
    /// [`Stack::witness_vkey`]).
    pub witness: bool,
}

impl Options {
    pub fn new(model: Vec<u8>, name: &str) -> Self {
        Options {
            model,
            model_name: name.into(),
            release_measurement: MEASUREMENT,
            tamper: None,
            extra_config: String::new(),
            guard_manifest: None,
            witness: false,
        }
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub service_url: String,
    pub service_ca: Vec<u8>,
    pub admin_token: String,
    pub service: Arc<Service>,
    pub sim_ark: PathBuf,
    pub model_identity: [u8; 32],
    enclave: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// `https://127.0.0.1:PORT` of the enclave.
    pub url: String,
    /// The witness's verifier key, when [`Options::witness`].
    pub witness_vkey: Option<String>,
}

impl Stack {
    pub fn start(options: Options) -> Stack {
        let dir = scratch("stack");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        // Sim chip shared by the secure processor and the service's (insecure) trust root.
        let ca = SimCa::generate(SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
        let sim_dir = dir.join("sim");
        ca.write_to(&sim_dir).unwrap();
        let sim_ark = sim_dir.join("ark.pem");
        // Attestation service.
        let init = nacre_attestation_service::setup::init(
            &dir.join("service"),
            "127.0.0.1:0".parse().unwrap(),
            &[],
            None,
            Some(&sim_ark),
        )
        .unwrap();
        let witness_vkey = options.witness.then(|| {
            let w = nacre_witness::setup::init(
                &dir.join("witness"),
                "witness.test/w1",
                "127.0.0.1:0".parse().unwrap(),
                &[],
                std::slice::from_ref(&init.log_vkey),
            )
            .unwrap();
            let config = nacre_witness::Config::load(&w.config).unwrap();
            let witness = Arc::new(nacre_witness::server::open(&config).unwrap());
            let listener = rt.block_on(tokio::net::TcpListener::bind(config.listen)).unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            rt.spawn(async move {
                nacre_witness::server::serve(witness, &config, listener, std::future::pending())
                    .await
                    .unwrap();
            });
            let mut text = std::fs::read_to_string(&init.config).unwrap();
            text += &format!(
                "\n[[witnesses]]\nurl = {url:?}\nca = {:?}\nvkey = {:?}\n",
                w.ca_cert.display().to_string(),
                w.vkey
            );
            std::fs::write(&init.config, text).unwrap();
            w.vkey
        });
        let config = Config::load(&init.config).unwrap();
        let service_ca = std::fs::read(&init.ca_cert).unwrap();
        let admin_token = std::fs::read_to_string(&init.admin_token).unwrap().trim().to_owned();
        let (service, service_url) = rt.block_on(async {
            let service = Arc::new(Service::start(&config).await.unwrap());
            let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let tls = nacre_attestation_service::http::tls_config(&config.tls_cert, &config.tls_key).unwrap();
            let svc = service.clone();
            tokio::spawn(async move {
                nacre_attestation_service::http::serve(svc, listener, tls, std::future::pending())
                    .await
                    .unwrap();
            });
            (service, url)
        });
        // Secure processor.
        let identity = Arc::new(SimIdentity::load(&sim_dir).unwrap());
        let sp = Arc::new(SecureProcessor::new(identity, MEASUREMENT, [0u8; 32]));
        let sp_socket = dir.join("sp.sock");
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(&sp_socket).unwrap() });
        rt.spawn(sp.serve(listener, "host-process".into()));
        // Seal and register the model.
        let key = DataKey::generate().unwrap();
        let params = SealParams {
            chunk_size: 64 << 10,
            guard_manifest: options.guard_manifest.clone(),
            ..SealParams::new(KEY_ID, 1, &options.model_name, "1")
        };
        let mut sealed = Vec::new();
        let cipher = AwsLcGcm::new(&key).unwrap();
        let header =
            nacre_sealed::seal(&options.model[..], Output::Memory(&mut sealed), &cipher, &params, 2, &|_| {})
                .unwrap();
        if let Some(tamper) = options.tamper {
            tamper(&mut sealed);
        }
        let sealed_path = dir.join("model.sealed");
        std::fs::write(&sealed_path, &sealed).unwrap();
        let policy = format!(
            "insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n",
            hex::encode(options.release_measurement)
        );
        let admin = Client::new(&service_url, &service_ca).unwrap().with_token(admin_token.clone());
        rt.block_on(admin.create_key(KEY_ID, key.expose(), &policy)).unwrap();
        // The enclave.
        std::fs::write(dir.join("service-ca.pem"), &service_ca).unwrap();
        let enclave_config = format!(
            "service_url = \"{service_url}\"\nservice_ca = \"{}\"\ntee = \"sim\"\nkey_id = \"{KEY_ID}\"\n\
             model_name = \"{}\"\nmodel_identity = \"{}\"\nlisten = \"127.0.0.1:0\"\nsealed_device = \"{}\"\n\
             sim_socket = \"{}\"\n{}",
            dir.join("service-ca.pem").display(),
            options.model_name,
            hex::encode(header.model_identity),
            sealed_path.display(),
            sp_socket.display(),
            options.extra_config,
        );
        std::fs::write(dir.join("enclave.toml"), enclave_config).unwrap();
        let mut enclave = Command::new(env!("CARGO_BIN_EXE_nacre-enclave"))
            .arg("--config")
            .arg(dir.join("enclave.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = enclave.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stack = Stack {
            dir,
            rt,
            service_url,
            service_ca,
            admin_token,
            service,
            sim_ark,
            model_identity: header.model_identity,
            enclave,
            lines,
            url: String::new(),
            witness_vkey,
        };
        let listening = stack.wait_for("NACRE-ENCLAVE-LISTENING ", Duration::from_secs(30));
        stack.url = format!("https://{listening}");
        stack
    }

    /// The enclave process's id (its memory figures are in `/proc/<pid>/status`).
    pub fn enclave_pid(&self) -> u32 {
        self.enclave.id()
    }

    /// Waits for a console line starting with `prefix` and returns the rest of it.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.starts_with(prefix)) {
                return l[prefix.len()..].to_owned();
            }
            assert!(Instant::now() < deadline, "no {prefix:?} line in {:?}", self.lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client policy allowing `measurement` and expecting `model_identity`.
    pub fn client_policy(&self, measurement: [u8; 48], model_identity: [u8; 32]) -> ClientPolicy {
        self.client_policy_with(measurement, model_identity, "")
    }

    /// [`Self::client_policy`] with `extra` top-level keys (e.g. the guard's).
    pub fn client_policy_with(
        &self,
        measurement: [u8; 48],
        model_identity: [u8; 32],
        extra: &str,
    ) -> ClientPolicy {
        let text = format!(
            "model_identity = \"{}\"\n{extra}\ninsecure_sim_root = \"{}\"\n[appraisal.sim]\nmeasurements = [\"{}\"]\n",
            hex::encode(model_identity),
            self.sim_ark.display(),
            hex::encode(measurement)
        );
        ClientPolicy::parse(&text, Path::new("/")).unwrap()
    }

    pub fn policy(&self) -> ClientPolicy {
        self.client_policy(MEASUREMENT, self.model_identity)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.enclave.kill();
        let _ = self.enclave.wait();
    }
}
