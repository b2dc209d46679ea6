#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! Crash safety of the attestation service: `kill -9` the real `nacre attestation serve`
//! process during a burst of concurrent releases and admin writes, restart it, and check that
//! the database is consistent, `nacre audit verify` passes, and every key a client received
//! has its audit record (the `audit_seq` its response named). Runs a few rounds with
//! different kill timings.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nacre_attestation_client::{Client, ClientError};
use nacre_protocol::messages::{AuditRecord, KeyInfo, ReleaseRequest};
use nacre_protocol::wrap::RecipientKey;
use nacre_sim::{SimCa, SimParams};
use nacre_wire::binding::KeyReleaseBinding;
use nacre_wire::{Evidence, Tee};
use sha2::{Digest, Sha256};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
/// Keys 0 and 1 are rotated, re-policied and rolled back by one admin task each; the last
/// one stays at version 1.
const KEYS: [&str; 3] = ["crash-a", "crash-b", "crash-c"];
const ADMINS: usize = 2;
const GUESTS: usize = 16;
/// (kill no earlier than, releases received first) per round.
const ROUNDS: [(Duration, usize); 3] =
    [(Duration::from_millis(250), 5), (Duration::from_millis(800), 20), (Duration::from_millis(1500), 40)];

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The data key registered for `version` of `KEYS[key]` in `round`: the test can always say
/// which key a version must hold, even for a rotation whose response the crash swallowed.
fn material(round: usize, key: usize, version: u32) -> [u8; 32] {
    Sha256::digest(format!("nacre crash test {} round {round} key {key} v{version}", std::process::id()))
        .into()
}

/// A release policy allowing versions 1..=`max` besides the current one; `tag` makes every
/// policy text distinct.
fn policy(max: u32, tag: &str) -> String {
    let versions: Vec<String> = (1..=max).map(|v| v.to_string()).collect();
    format!(
        "# {tag}\nallowed_versions = [{}]\ninsecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n",
        versions.join(", "),
        hex::encode(MEASUREMENT)
    )
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n.max(1))) as u32
    }
}

/// The `nacre attestation serve` child; killed (and reaped) when dropped, so a failing test
/// leaves no service behind.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(config: &Path, log: &Path) -> Server {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nacre"))
            .args(["attestation", "serve", "--config", s(config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Server { child, log: log.to_owned() }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls until the service answers; returns its result-signing key.
    async fn wait_ready(&mut self, url: &str, ca_pem: &[u8]) -> Vec<u8> {
        let client = Client::new(url, ca_pem).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nacre attestation serve exited ({status}) before it was ready:\n{}", self.log_tail());
            }
            match client.result_key().await {
                Ok(k) => return k,
                Err(e) if Instant::now() > deadline => {
                    panic!("the service did not answer within 30 s ({e}):\n{}", self.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// SIGKILL, and check that it was the signal that ended the process.
    fn kill_9(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the service had already exited ({status}) before the kill:\n{}", self.log_tail());
        }
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the service did not die of SIGKILL: {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key a client received, with what the service's response said about it.
#[derive(Clone, Debug)]
struct Received {
    audit_seq: i64,
    key: usize,
    version: u32,
    data_key: [u8; 32],
    nonce_hex: String,
    /// The release's log leaf as the response gave it: index and entry bytes.
    leaf: (u64, Vec<u8>),
}

/// An admin change the service acknowledged.
#[derive(Clone, Debug)]
enum Ack {
    Rotate { key: usize, version: u32 },
    Rollback { key: usize },
    Policy { key: usize },
}

/// What the burst's tasks share.
struct Burst {
    round: usize,
    url: String,
    ca_pem: Vec<u8>,
    admin_token: String,
    result_key: Vec<u8>,
    sim: Arc<SimCa>,
    /// Set just before the SIGKILL: from then on connection failures are expected.
    killed: AtomicBool,
    /// Per key, the highest version every guest may ask for (all of 1..=it are allowed).
    published: [AtomicU32; 3],
    received: Mutex<Vec<Received>>,
    acks: Mutex<Vec<Ack>>,
    errors: Mutex<Vec<String>>,
}

impl Burst {
    /// Records `e` unless it is what a killed server looks like to a client.
    fn failed(&self, who: &str, e: &ClientError) {
        let killed = self.killed.load(Ordering::SeqCst);
        let connection =
            matches!(e, ClientError::Connect { .. } | ClientError::Http(_) | ClientError::Timeout);
        if !(killed && connection) {
            let when =
                if killed { "after the kill, and not a connection failure" } else { "before the kill" };
            self.errors.lock().unwrap().push(format!("{who}: {e} ({when})"));
        }
    }
}

fn evidence(sim: &SimCa, report_data: [u8; 64]) -> Evidence {
    let mut report = sim.report_template();
    report.report_data = report_data;
    report.measurement = MEASUREMENT;
    let signed = sim.sign(&report).unwrap();
    let mut certs: Vec<_> = sim.chain_der().into_iter().map(Into::into).collect();
    certs.push(sim.crl_der().to_vec().into());
    Evidence { tee: Tee::Sim, report: signed.to_vec(), certs, event_log: None }
}

/// One release, by hand (challenge, sim evidence, release, unwrap), so the response's
/// `audit_seq` is kept. A response that arrived whole must be right: anything wrong with it
/// is reported as a protocol error, never as a connection failure.
async fn release(
    client: &Client,
    sim: &SimCa,
    result_key: &[u8],
    key: usize,
    version: u32,
) -> Result<Received, ClientError> {
    let key_id = KEYS[key];
    let challenge = client.challenge(key_id).await?;
    let recipient = RecipientKey::generate();
    let report_data =
        KeyReleaseBinding { nonce: &challenge.nonce, hpke_public_key: recipient.public_key(), key_id }
            .report_data()
            .unwrap();
    let request = ReleaseRequest {
        key_id: key_id.into(),
        key_version: version,
        nonce: challenge.nonce.clone(),
        hpke_public_key: recipient.public_key().to_vec().into(),
        evidence: evidence(sim, report_data),
    };
    let response = client.release(&request).await?;
    let bad = |what: String| ClientError::Protocol(what);
    if response.key_id != key_id || response.key_version != version {
        return Err(bad(format!(
            "asked for {key_id} v{version}, got {} v{}",
            response.key_id, response.key_version
        )));
    }
    let result = nacre_protocol::result::verify(&response.attestation_result, result_key)
        .map_err(|e| bad(e.to_string()))?;
    if result.eat_nonce.as_slice() != challenge.nonce.as_slice() {
        return Err(bad("the signed result names another nonce".into()));
    }
    let data_key = recipient
        .unwrap(&response.encapsulated_key, &response.wrapped_key, key_id, version, &challenge.nonce)
        .map_err(|e| ClientError::Unwrap(e.to_string()))?;
    Ok(Received {
        audit_seq: response.audit_seq,
        key,
        version,
        data_key: *data_key,
        nonce_hex: hex::encode(&challenge.nonce),
        leaf: response
            .log
            .as_ref()
            .map(|l| (l.index, l.entry.to_vec()))
            .ok_or_else(|| ClientError::Protocol("a release without its log leaf".into()))?,
    })
}

/// A guest: releases random allowed versions of random keys until its first failure.
async fn guest(b: Arc<Burst>, id: usize) {
    let client = Client::new(&b.url, &b.ca_pem).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((b.round * 1000 + id) as u64 + 1));
    loop {
        let key = rng.below(KEYS.len() as u32) as usize;
        let version = 1 + rng.below(b.published[key].load(Ordering::SeqCst));
        match release(&client, &b.sim, &b.result_key, key, version).await {
            Ok(r) => b.received.lock().unwrap().push(r),
            Err(e) => return b.failed(&format!("guest {id}: release {} v{version}", KEYS[key]), &e),
        }
    }
}

/// An admin: rotates its key (to the version it expects, with that version's material),
/// sets a policy allowing every version so far, rolls back to a random one; until its first
/// failure.
async fn admin(b: Arc<Burst>, key: usize) {
    let client = Client::new(&b.url, &b.ca_pem).unwrap().with_token(b.admin_token.clone());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((b.round * 10 + key) as u64 + 1));
    let key_id = KEYS[key];
    let ack = |a: Ack| b.acks.lock().unwrap().push(a);
    let mismatch = |what: String| b.errors.lock().unwrap().push(format!("admin {key_id}: {what}"));
    for next in 2u32.. {
        match client.rotate_key(key_id, &material(b.round, key, next), Some(next)).await {
            Ok(info) if info.current_version == next => ack(Ack::Rotate { key, version: next }),
            Ok(info) => return mismatch(format!("rotated to v{next}, current is v{}", info.current_version)),
            Err(e) => return b.failed(&format!("admin: rotate {key_id} to v{next}"), &e),
        }
        let text = policy(next, &format!("round {} op {next}", b.round));
        match client.set_policy(key_id, &text).await {
            Ok(info) if info.policy == text => {
                ack(Ack::Policy { key });
                b.published[key].store(next, Ordering::SeqCst);
            }
            Ok(_) => return mismatch("set a policy, another one is in force".into()),
            Err(e) => return b.failed(&format!("admin: set policy of {key_id}"), &e),
        }
        let back = 1 + rng.below(next);
        match client.rollback_key(key_id, back).await {
            Ok(info) if info.current_version == back => ack(Ack::Rollback { key }),
            Ok(info) => {
                return mismatch(format!("rolled back to v{back}, current is v{}", info.current_version));
            }
            Err(e) => return b.failed(&format!("admin: roll {key_id} back to v{back}"), &e),
        }
    }
}

/// `nacre audit verify --config`: must pass; returns how many records it verified.
fn audit_verify_config(config: &Path, when: &str) -> usize {
    let out = nacre(&["audit", "verify", "--config", s(config)]);
    assert_eq!(out.status.code(), Some(0), "nacre audit verify --config {when} failed:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .trim()
        .strip_prefix("audit log OK: ")
        .and_then(|r| r.split_once(" records"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output of nacre audit verify: {stdout}"))
}

/// Checks on the crashed SQLite file itself, with the service down.
async fn check_database(config: &Path, received: &[Received]) {
    let database = nacre_attestation_service::config::Config::load(config).unwrap().database;
    let pool = sqlx::SqlitePool::connect(&database).await.unwrap();
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&pool).await.unwrap();
    assert_eq!(integrity, ["ok"], "PRAGMA integrity_check after the crash");
    let fk = sqlx::query("PRAGMA foreign_key_check").fetch_all(&pool).await.unwrap();
    assert!(fk.is_empty(), "PRAGMA foreign_key_check after the crash: {} violations", fk.len());
    let dangling: Vec<String> = sqlx::query_scalar(
        "SELECT key_id FROM keys k WHERE NOT EXISTS \
         (SELECT 1 FROM key_versions v WHERE v.key_id = k.key_id AND v.version = k.current_version)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(dangling.is_empty(), "keys whose current version does not exist: {dangling:?}");
    let (head, count, max): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT seq FROM audit_head WHERE id = 1), (SELECT COUNT(*) FROM audit_log), \
         (SELECT MAX(seq) FROM audit_log)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((count, max.unwrap_or(0)), (head, head), "audit_log (count, max seq) vs audit_head seq");
    // A nonce that obtained a key must stay used, or its request could be replayed.
    let used: HashSet<String> = sqlx::query_scalar("SELECT nonce FROM used_nonces")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<_> = received.iter().filter(|r| !used.contains(&r.nonce_hex)).collect();
    assert!(
        lost.is_empty(),
        "{} released nonces are not recorded as used after the crash: {lost:?}",
        lost.len()
    );
    // Every key a client received has its leaf: at the index its response named, with the
    // bytes it was shown, logging its audit record (`audit verify` rebuilds the tree).
    for r in received {
        let row: Option<(i64, String)> = sqlx::query_as("SELECT seq, entry FROM log_entries WHERE idx = $1")
            .bind(r.leaf.0 as i64)
            .fetch_optional(&pool)
            .await
            .unwrap();
        let (seq, entry) = row.unwrap_or_else(|| {
            panic!("a received key's leaf {} is not in the log after the crash", r.leaf.0)
        });
        assert_eq!(
            (seq, entry.into_bytes()),
            (r.audit_seq, r.leaf.1.clone()),
            "leaf {} after the crash",
            r.leaf.0
        );
    }
    pool.close().await;
}

/// Every key a client received has its audit record, at the `audit_seq` its response named,
/// and is the key registered for that version.
fn check_received(records: &[AuditRecord], received: &[Received], round: usize, when: &str) {
    let mut seqs = HashSet::new();
    for r in received {
        let key_id = KEYS[r.key];
        let what =
            format!("{when}: a client received {key_id} v{} with audit_seq {}", r.version, r.audit_seq);
        assert!(seqs.insert(r.audit_seq), "{what}, which another release also got");
        let rec = usize::try_from(r.audit_seq - 1)
            .ok()
            .and_then(|i| records.get(i))
            .unwrap_or_else(|| panic!("{what}, but the audit log ends at seq {}", records.len()));
        assert_eq!(
            (rec.action.as_str(), rec.decision.as_str(), rec.actor.as_str()),
            ("release", "allow", "guest"),
            "{what}, but that record is {rec:?}"
        );
        assert_eq!(
            (rec.key_id.as_deref(), rec.key_version),
            (Some(key_id), Some(i64::from(r.version))),
            "{what}, but that record is {rec:?}"
        );
        assert!(
            r.data_key == material(round, r.key, r.version),
            "{what}, and its data key is not the one registered for that version"
        );
    }
    let allowed = records.iter().filter(|r| r.action == "release" && r.decision == "allow").count();
    assert!(
        allowed >= received.len(),
        "{when}: {allowed} release records for {} received keys",
        received.len()
    );
}

/// The database's key state is exactly what its audit log says happened, and nothing the
/// service acknowledged was lost.
fn check_state(records: &[AuditRecord], keys: &[KeyInfo], acks: &[Ack]) {
    assert_eq!(keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), KEYS, "the keys after the crash");
    for (i, info) in keys.iter().enumerate() {
        let key_id = info.key_id.as_str();
        let recs: Vec<&AuditRecord> =
            records.iter().filter(|r| r.key_id.as_deref() == Some(key_id) && r.decision == "allow").collect();
        let of = |action: &'static str| recs.iter().filter(move |r| r.action == action);
        let version_of = |r: &AuditRecord| u32::try_from(r.key_version.unwrap()).unwrap();

        assert_eq!(of("key_create").count(), 1, "{key_id}: key_create records");
        let db_versions: BTreeSet<u32> = info.versions.iter().map(|v| v.version).collect();
        let mut audited: BTreeSet<u32> = of("key_rotate").map(|r| version_of(r)).collect();
        audited.insert(1);
        assert_eq!(
            db_versions, audited,
            "{key_id}: versions in the database vs created/rotated in the audit log"
        );
        assert_eq!(db_versions, (1..=db_versions.len() as u32).collect(), "{key_id}: versions have a gap");
        assert!(!info.revoked && info.versions.iter().all(|v| !v.revoked), "{key_id}: revoked: {info:?}");

        let last_pointer = recs
            .iter()
            .rfind(|r| matches!(r.action.as_str(), "key_create" | "key_rotate" | "key_rollback"))
            .unwrap();
        assert_eq!(
            info.current_version,
            version_of(last_pointer),
            "{key_id}: current version vs the last create/rotate/rollback record {last_pointer:?}"
        );
        match of("policy_set").next_back() {
            Some(r) => assert_eq!(
                r.reason.as_deref(),
                Some(format!("policy sha256 {}", sha256_hex(&info.policy)).as_str()),
                "{key_id}: the policy in force is not the one the last policy_set record names"
            ),
            None => {
                assert_eq!(info.policy, policy(1, "created"), "{key_id}: policy changed without a record")
            }
        }

        let mine = acks.iter().filter(|a| matches!(a, Ack::Rotate { key, .. } | Ack::Rollback { key } | Ack::Policy { key } if *key == i));
        let (mut rollbacks, mut policies) = (0, 0);
        for a in mine {
            match a {
                Ack::Rotate { version, .. } => assert!(
                    db_versions.contains(version),
                    "{key_id}: the service acknowledged rotating to v{version}, which is gone after the crash"
                ),
                Ack::Rollback { .. } => rollbacks += 1,
                Ack::Policy { .. } => policies += 1,
            }
        }
        assert!(of("key_rollback").count() >= rollbacks, "{key_id}: acknowledged rollbacks without records");
        assert!(
            of("policy_set").count() >= policies,
            "{key_id}: acknowledged policy changes without records"
        );
    }
}

async fn round(round: usize, kill_after: Duration, min_released: usize) -> String {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}-{round}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("round {round}: service directory and log in {} (removed if the round passes)", dir.display());
    let sim = Arc::new(SimCa::generate(SimParams::new(time::OffsetDateTime::now_utc())).unwrap());
    let ark = dir.join("sim-ark.der");
    std::fs::write(&ark, sim.ark_der()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let svc = dir.join("svc");
    let listen = format!("127.0.0.1:{port}");
    let out = nacre(&["attestation", "init", s(&svc), "--listen", &listen, "--insecure-sim-root", s(&ark)]);
    assert!(out.status.success(), "nacre attestation init:\n{}", text(&out));
    let config = svc.join("config.toml");
    // Every guest comes from 127.0.0.1: an unexpected denial must not turn into rate limiting.
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("denial_burst = 10\n"));
    std::fs::write(&config, toml.replace("denial_burst = 10\n", "denial_burst = 1000000\n")).unwrap();
    let (ca_pem, ca) = (std::fs::read(svc.join("ca.pem")).unwrap(), svc.join("ca.pem"));
    let admin_token = std::fs::read_to_string(svc.join("admin.token")).unwrap().trim().to_owned();
    let url = format!("https://{listen}");
    let log = dir.join("serve.log");

    let mut server = Server::start(&config, &log);
    let result_key = server.wait_ready(&url, &ca_pem).await;
    let admin_client = Client::new(&url, &ca_pem).unwrap().with_token(admin_token.clone());
    for (i, key_id) in KEYS.iter().enumerate() {
        admin_client.create_key(key_id, &material(round, i, 1), &policy(1, "created")).await.unwrap();
    }

    // ---- the burst, and the kill ------------------------------------------------------------
    let burst = Arc::new(Burst {
        round,
        url: url.clone(),
        ca_pem: ca_pem.clone(),
        admin_token,
        result_key: result_key.clone(),
        sim: sim.clone(),
        killed: AtomicBool::new(false),
        published: [AtomicU32::new(1), AtomicU32::new(1), AtomicU32::new(1)],
        received: Mutex::default(),
        acks: Mutex::default(),
        errors: Mutex::default(),
    });
    let mut tasks: Vec<_> = (0..GUESTS).map(|g| tokio::spawn(guest(burst.clone(), g))).collect();
    tasks.extend((0..ADMINS).map(|k| tokio::spawn(admin(burst.clone(), k))));
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let released = burst.received.lock().unwrap().len();
        let acked = burst.acks.lock().unwrap().len();
        if start.elapsed() >= kill_after && released >= min_released && acked >= 3 {
            break;
        }
        if !burst.errors.lock().unwrap().is_empty() || start.elapsed() > Duration::from_secs(60) {
            break; // reported below
        }
    }
    burst.killed.store(true, Ordering::SeqCst);
    server.kill_9();
    let killed_at = start.elapsed();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a burst task did not notice the kill")
            .expect("a burst task panicked");
    }
    let errors = burst.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "round {round}: {} failures during the burst:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let received = burst.received.lock().unwrap().clone();
    let acks = burst.acks.lock().unwrap().clone();
    assert!(
        received.len() >= min_released,
        "round {round}: only {} releases before the kill",
        received.len()
    );

    // ---- the crashed database, service down ---------------------------------------------------
    let verified = audit_verify_config(&config, "after the kill");
    check_database(&config, &received).await;

    // ---- restart: state, audit, and that it works -------------------------------------------------
    let mut server = Server::start(&config, &log);
    assert_eq!(
        server.wait_ready(&url, &ca_pem).await,
        result_key,
        "the result key changed across the restart"
    );
    // A fresh connection: the old one died with the process.
    let admin_client = Client::new(&url, &ca_pem).unwrap().with_token(burst.admin_token.clone());
    let records = admin_client.audit_export().await.unwrap();
    assert_eq!(records.len(), verified, "records exported after the restart vs verified on the crashed file");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1, "audit export out of order");
    }
    check_received(&records, &received, round, "after the crash");
    let keys = admin_client.list_keys().await.unwrap();
    check_state(&records, &keys, &acks);

    // Every version of every key still holds the key registered for it.
    let guest_client = Client::new(&url, &ca_pem).unwrap();
    let mut after = Vec::new();
    for (i, info) in keys.iter().enumerate() {
        let max = info.versions.len() as u32;
        admin_client.set_policy(&info.key_id, &policy(max, "after the restart")).await.unwrap();
        for v in 1..=max {
            let r = release(&guest_client, &sim, &result_key, i, v)
                .await
                .unwrap_or_else(|e| panic!("after the restart, {} v{v} is not released: {e}", info.key_id));
            after.push(r);
        }
    }
    // Writes continue the chain.
    let max = keys[0].versions.len() as u32;
    let info = admin_client.rotate_key(KEYS[0], &material(round, 0, max + 1), Some(max + 1)).await.unwrap();
    assert_eq!(info.current_version, max + 1);
    after.push(release(&guest_client, &sim, &result_key, 0, max + 1).await.unwrap());
    assert!(
        after.iter().all(|r| r.audit_seq > verified as i64),
        "post-restart releases reuse old sequence numbers"
    );

    // ---- the whole log, through the CLI ------------------------------------------------------------
    let export = dir.join("audit.jsonl");
    let token = svc.join("admin.token");
    let out = nacre(&[
        "audit",
        "export",
        "--url",
        &url,
        "--ca",
        s(&ca),
        "--token-file",
        s(&token),
        "--out",
        s(&export),
    ]);
    assert!(out.status.success(), "nacre audit export:\n{}", text(&out));
    let log_key = String::from_utf8(guest_client.log_get("key").await.unwrap()).unwrap();
    let out = nacre(&[
        "audit",
        "verify",
        "--file",
        s(&export),
        "--url",
        &url,
        "--ca",
        s(&ca),
        "--log-key",
        log_key.trim(),
    ]);
    assert_eq!(out.status.code(), Some(0), "nacre audit verify --file after the restart:\n{}", text(&out));
    let records: Vec<AuditRecord> =
        std::fs::read_to_string(&export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    check_received(&records, &received, round, "in the final export");
    check_received(&records, &after, round, "after the restart");

    // ---- a monitor follows the log; its checkpoint anchors `audit verify` ------------------------
    let state = dir.join("monitor");
    let monitor = [
        "audit",
        "monitor",
        "--url",
        &url,
        "--ca",
        s(&ca),
        "--log-key",
        log_key.trim(),
        "--state",
        s(&state),
        "--once",
    ];
    let out = nacre(&monitor);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // These policies pin measurements without imported reference values: flagged, exit 1;
    // nothing else is (no release under a revoked key or a policy no admin entry set).
    assert_eq!(out.status.code(), Some(1), "nacre audit monitor:\n{}", text(&out));
    assert!(stdout.contains("which no imported reference values list"), "{stdout}");
    assert!(
        !stdout.contains("revoked")
            && !stdout.contains("no admin entry set")
            && !stdout.contains("MISBEHAVED"),
        "{stdout}"
    );
    // A second round resumes from its state: nothing new, nothing flagged.
    let out = nacre(&monitor);
    assert_eq!(out.status.code(), Some(0), "nacre audit monitor, second round:\n{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 new), 0 alerts"), "{}", text(&out));
    drop(server);
    let anchor = state.join("checkpoint");
    let out = nacre(&[
        "audit",
        "verify",
        "--config",
        s(&config),
        "--checkpoint",
        s(&anchor),
        "--log-key",
        log_key.trim(),
    ]);
    assert_eq!(out.status.code(), Some(0), "nacre audit verify --checkpoint:\n{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("consistent with the witnessed checkpoint"),
        "{}",
        text(&out)
    );
    let total = audit_verify_config(&config, "at the end");
    assert_eq!(total, records.len());

    let _ = std::fs::remove_dir_all(&dir);
    // Records beyond the acknowledged: writes committed whose response the kill cut off.
    let unanswered = verified as i64 - (received.len() + acks.len() + KEYS.len()) as i64;
    format!(
        "round {round}: killed at {killed_at:?} after {} releases and {} admin acks; {verified} audit records \
         at the crash ({unanswered} committed, unanswered), {} versions checked after the restart",
        received.len(),
        acks.len(),
        after.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_acknowledged() {
    let t = Instant::now();
    for (i, (kill_after, min_released)) in ROUNDS.into_iter().enumerate() {
        let summary = round(i, kill_after, min_released).await;
        eprintln!("{summary} ({:?} so far)", t.elapsed());
    }
}
