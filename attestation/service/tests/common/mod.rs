//! A running service on loopback with a simulated TEE, for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use nacre_attestation_client::Client;
use nacre_attestation_service::config::Config;
use nacre_attestation_service::service::Service;
use nacre_sim::{SimCa, SimParams};
use nacre_wire::{Evidence, Tee};
use serde_bytes::ByteBuf;

pub const MEASUREMENT: [u8; 48] = [0x5a; 48];

pub fn policy_for(measurement: &[u8; 48]) -> String {
    format!("insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n", hex::encode(measurement))
}

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

pub struct Harness {
    pub dir: PathBuf,
    pub ca: Arc<SimCa>,
    pub url: String,
    pub ca_pem: Vec<u8>,
    pub admin_token: String,
    pub auditor_token: String,
    pub service: Arc<Service>,
    pub config: Config,
    pub config_path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Starts a service; `database` None = SQLite in the scratch dir; `edit` tweaks the
    /// generated config text.
    pub async fn start(database: Option<&str>, edit: impl FnOnce(String) -> String) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = scratch("svc");
        let ca = Arc::new(SimCa::generate(SimParams::new(time::OffsetDateTime::now_utc())).unwrap());
        std::fs::write(dir.join("sim-ark.der"), ca.ark_der()).unwrap();
        let init = nacre_attestation_service::setup::init(
            &dir,
            "127.0.0.1:0".parse().unwrap(),
            &[],
            database,
            Some(&dir.join("sim-ark.der")),
        )
        .unwrap();
        let text = edit(std::fs::read_to_string(&init.config).unwrap());
        std::fs::write(&init.config, text).unwrap();
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap().trim().to_owned();
        let (admin_token, auditor_token) = (read(&init.admin_token), read(&init.auditor_token));
        Self::serve(dir, ca, init.config, std::fs::read(&init.ca_cert).unwrap(), admin_token, auditor_token)
            .await
    }

    async fn serve(
        dir: PathBuf,
        ca: Arc<SimCa>,
        config_path: PathBuf,
        ca_pem: Vec<u8>,
        admin_token: String,
        auditor_token: String,
    ) -> Harness {
        let config = Config::load(&config_path).unwrap();
        let service = Arc::new(Service::start(&config).await.unwrap());
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let tls = nacre_attestation_service::http::tls_config(&config.tls_cert, &config.tls_key).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = service.clone();
        let task = tokio::spawn(async move {
            nacre_attestation_service::http::serve(svc, listener, tls, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Harness {
            ca_pem,
            admin_token,
            auditor_token,
            dir,
            ca,
            url,
            service,
            config,
            config_path,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the service, applies `edit` to its config file and starts it again on the same
    /// database, keys and tokens (a new port).
    pub async fn restart(mut self, edit: impl FnOnce(String) -> String) -> Harness {
        self.shutdown().await;
        let text = edit(std::fs::read_to_string(&self.config_path).unwrap());
        std::fs::write(&self.config_path, text).unwrap();
        let (dir, ca, path) = (self.dir.clone(), self.ca.clone(), self.config_path.clone());
        let (pem, admin, auditor) =
            (self.ca_pem.clone(), self.admin_token.clone(), self.auditor_token.clone());
        Self::serve(dir, ca, path, pem, admin, auditor).await
    }

    pub fn guest(&self) -> Client {
        Client::new(&self.url, &self.ca_pem).unwrap()
    }

    pub fn admin(&self) -> Client {
        self.guest().with_token(self.admin_token.clone())
    }

    pub fn auditor(&self) -> Client {
        self.guest().with_token(self.auditor_token.clone())
    }

    /// Sim evidence for `report_data` with `measurement`, signed by the harness's sim VCEK.
    pub fn evidence(&self, report_data: [u8; 64], measurement: [u8; 48]) -> Evidence {
        let mut report = self.ca.report_template();
        report.report_data = report_data;
        report.measurement = measurement;
        let signed = self.ca.sign(&report).unwrap();
        let mut certs: Vec<ByteBuf> = self.ca.chain_der().into_iter().map(ByteBuf::from).collect();
        certs.push(ByteBuf::from(self.ca.crl_der().to_vec()));
        Evidence { tee: Tee::Sim, report: signed.to_vec(), certs, event_log: None }
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.service.store().close().await;
    }
}
