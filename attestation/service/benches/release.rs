#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Key release over loopback HTTPS with keep-alive, sim evidence and SQLite (WAL,
//! `synchronous = FULL`, on disk under the cargo target dir): latency p50/p90/p99/max and
//! releases per second at concurrency 1 and 32, and where the time goes.
//! `scripts/bench-release.sh` runs it and prints the load average around it.
//!
//! What is timed: `POST /v1/release` only, each worker on its own kept-alive connection (one
//! `Client` per worker), from a pool of complete release requests made before the timed phase
//! (challenge → HPKE key → REPORT_DATA binding → sim report signed with P-384: the guest's
//! cost, not the service's). Each request binds its own fresh nonce, so none is reused; every
//! response is unwrapped afterwards (untimed) to check that the right key came out. The
//! challenge TTL is raised to 600 s so that no pre-made nonce expires before it is used.
//!
//! The service and the load generator run in one process on the same cores, in two
//! multi-threaded tokio runtimes (as many workers each as there are CPUs), so that their CPU
//! time can be told apart by thread name.
//!
//! Where the time goes:
//! - the service's own `release_stage_duration_seconds` (verify / wrap / storage) and
//!   `request_duration_seconds{route="release"}` histograms, read before and after each run;
//!   stage times are wall times and include queueing (the appraisal queue for verify, the SQLite
//!   write lock for storage);
//! - the same clients and concurrency against `GET /v1/result-key` (no work behind it): the
//!   floor of TLS + HTTP + scheduling;
//! - CPU time per release by thread group (`/proc/self/task/*/stat`);
//! - in process, no HTTP: one evidence appraisal, one sim report signature, one key read and
//!   one release commit (the section the SQLite write lock serialises) at a time; 32 tasks
//!   committing at once (storage alone); the disk's fsync latency;
//! - CPU used by other processes during each run (the machine is shared: check it is ~0).
//!
//! Runs: concurrency 1 and 32 closed loop (each worker sends its next release when the last
//! one is answered; the targets apply to the 32 row), then 32 connections paced to a fixed
//! offered rate (open loop, default the 1,000/s target), which shows the latency at that
//! rate rather than at saturation.
//!
//! Sizes: `NACRE_BENCH_REQUESTS_C1` (default 1000) and `NACRE_BENCH_REQUESTS_C32` (default
//! 4000, also the paced run) timed releases, after a warm-up of 10 per worker;
//! `NACRE_BENCH_PACED_RATE` (default 1000) releases per second offered in the paced run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Harness, MEASUREMENT, policy_for};
use nacre_attestation_client::Client;
use nacre_attestation_service::policy::ReleasePolicy;
use nacre_attestation_service::store::{AuditEntry, ReleaseCommit, Store};
use nacre_protocol::messages::{ReleaseRequest, ReleaseResponse};
use nacre_protocol::wrap::RecipientKey;
use nacre_verifier::{EvidenceVerifier, ExpectedReportData, SnpRoots};
use nacre_wire::binding::KeyReleaseBinding;
use serde_bytes::ByteBuf;

const KEY_ID: &str = "bench-model";
const DATA_KEY: [u8; 32] = [0x42; 32];
const WARMUP_PER_WORKER: usize = 10;
const TARGET_RATE: f64 = 1000.0;
const TARGET_P99_MS: f64 = 20.0;
const TARGET_CONCURRENCY: usize = 32;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---- latency statistics -----------------------------------------------------------------

struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Latencies(v)
    }

    /// Nearest-rank percentile, in ms.
    fn pct(&self, p: f64) -> f64 {
        let n = self.0.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        ms(self.0[rank.clamp(1, n) - 1])
    }

    fn max(&self) -> f64 {
        ms(*self.0.last().unwrap())
    }

    fn mean(&self) -> f64 {
        ms(self.0.iter().sum::<Duration>()) / self.0.len() as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---- the service's metrics ----------------------------------------------------------------

/// Prometheus text → sample value by `name{labels}` (an `le` label moved to the end).
#[derive(Clone, Default)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn take(h: &Harness) -> Self {
        let mut out = BTreeMap::new();
        for line in h.service.metrics.encode().lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else { continue };
            if let Ok(v) = value.parse::<f64>() {
                out.insert(key.to_owned(), v);
            }
        }
        Scrape(out)
    }

    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// (sum in s, count) of a histogram series between two scrapes.
    fn hist_delta(before: &Scrape, after: &Scrape, name: &str, labels: &str) -> (f64, f64) {
        let sum = format!("{name}_sum{{{labels}}}");
        let count = format!("{name}_count{{{labels}}}");
        (after.get(&sum) - before.get(&sum), after.get(&count) - before.get(&count))
    }

    /// Upper bound (ms) of the bucket holding the `p`th percentile between two scrapes
    /// (buckets are cumulative; the `le` label may come in any position).
    fn hist_pct_bound(before: &Scrape, after: &Scrape, name: &str, labels: &str, p: f64) -> Option<f64> {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = after
            .0
            .iter()
            .filter_map(|(k, v)| {
                let inner = k.strip_prefix(&prefix)?.strip_suffix('}')?;
                let (mut le, mut rest) = (None, Vec::new());
                for label in inner.split(',') {
                    match label.strip_prefix("le=\"").and_then(|l| l.strip_suffix('"')) {
                        Some(l) => le = Some(l),
                        None => rest.push(label),
                    }
                }
                if rest.join(",") != labels {
                    return None;
                }
                let le = le?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, v - before.get(k)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        buckets.iter().find(|(_, c)| *c >= total * p / 100.0).map(|(b, _)| b * 1e3)
    }
}

const STAGES: &str = "nacre_attestation_release_stage_duration_seconds";
const ROUTES: &str = "nacre_attestation_request_duration_seconds";

// ---- CPU time by thread group -----------------------------------------------------------------

const GROUPS: [(&str, &str); 7] = [
    ("srv-worker", "service async workers: TLS, HTTP, CBOR, nonce, HPKE wrap, result signature, sqlx glue"),
    ("appraise", "service appraisal threads: evidence appraisal (P-384 verify, policy)"),
    ("srv-blocking", "service blocking pool (unused by releases)"),
    ("sqlx-sqlite", "service SQLite threads: SQL execution, WAL writes, fsync syscalls"),
    ("release-writer", "service release writer: group commit (batch SQL, audit hashing)"),
    ("load-gen", "load generator: client TLS, CBOR encode/decode"),
    ("", "other threads (main: awaiting the workers)"),
];

fn group_of(comm: &str) -> &'static str {
    GROUPS.iter().find(|(prefix, _)| comm.starts_with(prefix)).map_or("", |(p, _)| p)
}

/// utime + stime in seconds from a `/proc/.../stat` line (USER_HZ = 100).
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((comm, ticks / 100.0))
}

/// Busy seconds of the whole machine (all CPUs) from `/proc/stat`.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else { return 0.0 };
    let f: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    if f.len() < 8 {
        return 0.0;
    }
    (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100.0
}

#[derive(Clone, Default)]
struct Cpu {
    /// The whole machine, busy seconds.
    machine: f64,
    /// The whole process, including threads that have exited.
    process: f64,
    /// By thread id: (comm, seconds).
    threads: BTreeMap<String, (String, f64)>,
}

impl Cpu {
    fn take() -> Self {
        let process =
            std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_cpu(&s)).map_or(0.0, |c| c.1);
        let mut threads = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for e in dir.flatten() {
                let tid = e.file_name().to_string_lossy().into_owned();
                if let Some(c) =
                    std::fs::read_to_string(e.path().join("stat")).ok().and_then(|s| stat_cpu(&s))
                {
                    threads.insert(tid, c);
                }
            }
        }
        Cpu { machine: machine_busy(), process, threads }
    }

    /// CPU seconds between two snapshots.
    fn delta(before: &Cpu, after: &Cpu) -> CpuUse {
        let mut groups = BTreeMap::new();
        for (tid, (comm, t)) in &after.threads {
            let t0 = before.threads.get(tid).map_or(0.0, |c| c.1);
            *groups.entry(group_of(comm)).or_insert(0.0) += t - t0;
        }
        let process = after.process - before.process;
        CpuUse { groups, process, others: (after.machine - before.machine - process).max(0.0) }
    }
}

struct CpuUse {
    /// This process, by thread group.
    groups: BTreeMap<&'static str, f64>,
    process: f64,
    /// Everything else on the machine (other processes, kernel threads).
    others: f64,
}

// ---- the runs ---------------------------------------------------------------------------------

struct Prepared {
    req: ReleaseRequest,
    recipient: RecipientKey,
}

/// A complete release request, as a guest makes it: fresh challenge, fresh HPKE key, sim
/// evidence binding both.
async fn prepare(h: &Harness, c: &Client) -> Prepared {
    let challenge = c.challenge(KEY_ID).await.unwrap();
    let recipient = RecipientKey::generate();
    let rd = KeyReleaseBinding {
        nonce: &challenge.nonce,
        hpke_public_key: recipient.public_key(),
        key_id: KEY_ID,
    }
    .report_data()
    .unwrap();
    let req = ReleaseRequest {
        key_id: KEY_ID.into(),
        key_version: 1,
        nonce: challenge.nonce,
        hpke_public_key: ByteBuf::from(recipient.public_key().to_vec()),
        evidence: h.evidence(rd, MEASUREMENT),
    };
    Prepared { req, recipient }
}

struct Run {
    concurrency: usize,
    lat: Latencies,
    wall: Duration,
    before: Scrape,
    after: Scrape,
    cpu: CpuUse,
    /// Offered rate of a paced (open-loop) run.
    paced: Option<f64>,
    /// The same clients against `GET /v1/result-key`: (latencies, wall).
    cheap: (Latencies, Duration),
}

impl Run {
    fn label(&self) -> String {
        match self.paced {
            Some(rate) => format!("{} (paced: {rate:.0}/s offered)", self.concurrency),
            None => self.concurrency.to_string(),
        }
    }

    fn count(&self) -> usize {
        self.lat.0.len()
    }

    fn rate(&self) -> f64 {
        self.count() as f64 / self.wall.as_secs_f64()
    }

    fn stage_mean_ms(&self, stage: &str) -> f64 {
        let (sum, n) = Scrape::hist_delta(&self.before, &self.after, STAGES, &format!("stage=\"{stage}\""));
        if n > 0.0 { sum / n * 1e3 } else { f64::NAN }
    }

    fn stage_p99_ms(&self, stage: &str) -> Option<f64> {
        Scrape::hist_pct_bound(&self.before, &self.after, STAGES, &format!("stage=\"{stage}\""), 99.0)
    }

    fn handler_mean_ms(&self) -> f64 {
        let (sum, n) = Scrape::hist_delta(&self.before, &self.after, ROUTES, "route=\"release\"");
        if n > 0.0 { sum / n * 1e3 } else { f64::NAN }
    }

    fn pass(&self) -> Option<(bool, String)> {
        if self.concurrency != TARGET_CONCURRENCY || self.paced.is_some() {
            return None;
        }
        let mut failed = Vec::new();
        if self.rate() < TARGET_RATE {
            failed.push("releases/s");
        }
        if self.lat.pct(99.0) > TARGET_P99_MS {
            failed.push("p99");
        }
        Some((failed.is_empty(), failed.join(", ")))
    }
}

/// `concurrency` workers, each on its own connection, send `total` releases between them:
/// back to back (closed loop), or with `paced`, on a fixed schedule adding up to that many
/// per second (open loop; a release that starts late because its worker is still busy with
/// the previous one is timed from its scheduled start).
async fn release_run(h: &Arc<Harness>, concurrency: usize, total: usize, paced: Option<f64>) -> Run {
    let per_worker = total.div_ceil(concurrency);
    let clients: Vec<Arc<Client>> = (0..concurrency).map(|_| Arc::new(h.guest())).collect();

    // Requests, made by each worker on its own connection (which also opens it), then a
    // warm-up of WARMUP_PER_WORKER releases per worker.
    let t = Instant::now();
    let mut prep = tokio::task::JoinSet::new();
    for c in &clients {
        let (h, c) = (h.clone(), c.clone());
        prep.spawn(async move {
            let mut pool = Vec::with_capacity(WARMUP_PER_WORKER + per_worker);
            for _ in 0..WARMUP_PER_WORKER + per_worker {
                pool.push(prepare(&h, &c).await);
            }
            for p in pool.drain(..WARMUP_PER_WORKER) {
                c.release(&p.req).await.unwrap();
            }
            (c, pool)
        });
    }
    let pools: Vec<(Arc<Client>, Vec<Prepared>)> = prep.join_all().await;
    eprintln!(
        "c={concurrency}: {} requests made and {} warm-up releases in {:.1} s",
        pools.iter().map(|p| p.1.len()).sum::<usize>(),
        concurrency * WARMUP_PER_WORKER,
        t.elapsed().as_secs_f64()
    );

    let (before, cpu_before) = (Scrape::take(h), Cpu::take());
    let start = Instant::now();
    let mut timed = tokio::task::JoinSet::new();
    for (w, (c, pool)) in pools.into_iter().enumerate() {
        let period = paced.map(|rate| Duration::from_secs_f64(concurrency as f64 / rate));
        timed.spawn(async move {
            let mut out = Vec::with_capacity(pool.len());
            let mut free_at = start;
            for (k, p) in pool.into_iter().enumerate() {
                let t = match period {
                    None => Instant::now(),
                    Some(period) => {
                        let due = start + period * k as u32 + period * w as u32 / concurrency as u32;
                        tokio::time::sleep_until(due.into()).await;
                        // Behind schedule: the wait for this worker counts; on time: timer
                        // slack does not.
                        if free_at > due { due } else { Instant::now() }
                    }
                };
                let resp = c.release(&p.req).await.unwrap();
                free_at = Instant::now();
                out.push((free_at - t, p, resp));
            }
            out
        });
    }
    let results: Vec<(Duration, Prepared, ReleaseResponse)> =
        timed.join_all().await.into_iter().flatten().collect();
    let wall = start.elapsed();
    let (after, cpu_after) = (Scrape::take(h), Cpu::take());
    if let (Some(a), Some(b)) = (monotonic(start), monotonic(start + wall)) {
        eprintln!(
            "c={concurrency}: timed window CLOCK_MONOTONIC {a:.6}–{b:.6} s (perf record -k mono; perf report --time {a:.6},{b:.6})"
        );
    }

    // Every response carries the data key, wrapped to that request's HPKE key.
    for (_, p, resp) in &results {
        let key = p
            .recipient
            .unwrap(&resp.encapsulated_key, &resp.wrapped_key, KEY_ID, 1, &p.req.nonce)
            .expect("released key unwraps");
        assert_eq!(*key, DATA_KEY);
    }
    let released =
        after.get("nacre_attestation_releases_total") - before.get("nacre_attestation_releases_total");
    assert_eq!(released as usize, results.len(), "the service counted every release");

    // The same connections, the same concurrency, a route with no work behind it.
    let start_cheap = Instant::now();
    let mut cheap = tokio::task::JoinSet::new();
    for c in &clients {
        let c = c.clone();
        cheap.spawn(async move {
            let mut out = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                c.result_key().await.unwrap();
                out.push(t.elapsed());
            }
            out
        });
    }
    let cheap_lat: Vec<Duration> = cheap.join_all().await.into_iter().flatten().collect();
    let cheap_wall = start_cheap.elapsed();

    Run {
        concurrency,
        lat: Latencies::new(results.iter().map(|r| r.0).collect()),
        wall,
        before,
        after,
        cpu: Cpu::delta(&cpu_before, &cpu_after),
        paced,
        cheap: (Latencies::new(cheap_lat), cheap_wall),
    }
}

/// Proof serving under release load (issue 20): while `release_run` runs at concurrency 32,
/// `readers` clients each loop over what enclaves, monitors and auditors ask the log for — an
/// inclusion proof read from the database as `/v1/log/witnessed/<i>` computes it, and over
/// HTTPS the latest checkpoint and a full hash tile, on their own connections. Returns the release run and the
/// proof reads' latencies and wall time.
async fn proof_run(h: &Arc<Harness>, total: usize, readers: usize) -> (Run, Latencies, Duration) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reads = tokio::task::JoinSet::new();
    let start = Instant::now();
    for r in 0..readers {
        let (c, stop, store) = (h.guest(), stop.clone(), h.service.store().clone());
        let size = h.service.store().log_size().await.unwrap();
        reads.spawn(async move {
            let mut out = Vec::new();
            let mut k = r as u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match k % 3 {
                    // What `/v1/log/witnessed` computes (the bench's service has no witness, so
                    // the route answers 404): the inclusion proof under the latest tree.
                    0 => drop(store.log_inclusion(size, (k * 7919) % size).await.unwrap()),
                    1 => drop(c.log_get("checkpoint").await.unwrap()),
                    _ => drop(c.log_get("tile/0/000").await.unwrap()),
                }
                out.push(t.elapsed());
                k += 1;
            }
            out
        });
    }
    let run = release_run(h, TARGET_CONCURRENCY, total, None).await;
    stop.store(true, Ordering::Relaxed);
    let lat: Vec<Duration> = reads.join_all().await.into_iter().flatten().collect();
    (run, Latencies::new(lat), start.elapsed())
}

/// The whole guest flow, one at a time: challenge, sim evidence (P-384 sign), release,
/// result signature check, HPKE unwrap.
async fn guest_flow(h: &Harness, n: usize) -> (Latencies, Duration) {
    let c = h.guest();
    let result_key = c.result_key().await.unwrap();
    let fetch = || async {
        let k = c
            .fetch_key(KEY_ID, 1, &result_key, |rd| {
                let e = h.evidence(rd, MEASUREMENT);
                async move { Ok(e) }
            })
            .await
            .unwrap();
        assert_eq!(*k.data_key, DATA_KEY);
    };
    for _ in 0..WARMUP_PER_WORKER {
        fetch().await;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        fetch().await;
        lat.push(t.elapsed());
    }
    (Latencies::new(lat), start.elapsed())
}

/// CLOCK_MONOTONIC seconds of `t` (from its Linux `Debug` form), to cut a profile to a window.
fn monotonic(t: Instant) -> Option<f64> {
    let d = format!("{t:?}");
    let num = |field: &str| -> Option<f64> {
        let rest = &d[d.find(field)? + field.len()..];
        rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
    };
    Some(num("tv_sec: ")? + num("tv_nsec: ")? / 1e9)
}

/// Mean ms of `f` over `n` calls after a few unmeasured ones.
fn mean_ms(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..5 {
        f(usize::MAX - i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    ms(t.elapsed()) / n as f64
}

async fn mean_ms_async<F: Future<Output = ()>>(n: usize, mut f: impl FnMut(usize) -> F) -> f64 {
    for i in 0..5 {
        f(usize::MAX - i).await;
    }
    let t = Instant::now();
    for i in 0..n {
        f(i).await;
    }
    ms(t.elapsed()) / n as f64
}

struct InProcess {
    appraise: f64,
    sim_sign: f64,
    key_read: f64,
    commit: f64,
    /// 32 tasks committing at once: commits per second.
    commit_c32_rate: f64,
    /// fsync of a 4 KiB overwrite in the database's directory: (mean, p99) ms.
    fsync: (f64, f64),
}

/// One release commit as `Service::release` makes it, for a made-up nonce `tag`.
async fn commit(store: &Store, tag: &str, now: i64) {
    store
        .commit_release(ReleaseCommit {
            nonce_hex: &format!("bench-commit-{tag}"),
            nonce_expires_at: now + 600,
            key_id: KEY_ID,
            version: 1,
            audit: AuditEntry {
                time_ms: now * 1000,
                action: "release",
                release_key_sha256: Some("ab".repeat(32)),
                actor: "guest".into(),
                key_id: Some(KEY_ID.into()),
                key_version: Some(1),
                allow: true,
                tee: Some("sim".into()),
                measurement: Some(hex::encode(MEASUREMENT)),
                chip_id: Some(hex::encode([0x11; 64])),
                source: Some("127.0.0.1".into()),
                ..AuditEntry::default()
            },
        })
        .await
        .unwrap();
}

fn fsync_probe(dir: &std::path::Path) -> (f64, f64) {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut lat = Vec::with_capacity(300);
    for i in 0..300u64 {
        f.seek(SeekFrom::Start((i % 16) * 4096)).unwrap();
        f.write_all(&[i as u8; 4096]).unwrap();
        let t = Instant::now();
        f.sync_all().unwrap();
        lat.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    let lat = Latencies::new(lat);
    (lat.mean(), lat.pct(99.0))
}

fn in_process(h: &Harness, server: &tokio::runtime::Runtime) -> InProcess {
    let verifier = EvidenceVerifier::new(None).with_sim(SnpRoots::insecure_sim(h.ca.ark_der()).unwrap());
    let policy = ReleasePolicy::parse(&policy_for(&MEASUREMENT)).unwrap();
    let rd = [7u8; 64];
    let evidence = h.evidence(rd, MEASUREMENT);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let appraise = mean_ms(300, |_| {
        let v = verifier.appraise(&policy.appraiser, &evidence, ExpectedReportData::Exact(rd), now);
        std::hint::black_box(v.unwrap());
    });
    let sim_sign = mean_ms(300, |_| {
        std::hint::black_box(h.evidence(rd, MEASUREMENT));
    });
    let fsync = fsync_probe(&h.dir);
    let store = h.service.store().clone();
    let (key_read, commit_ms, commit_c32_rate) = server.block_on(async {
        let key_read = mean_ms_async(500, |_| {
            let store = store.clone();
            async move {
                std::hint::black_box(store.key(KEY_ID).await.unwrap().unwrap());
            }
        })
        .await;
        let commit_ms = mean_ms_async(500, |i| {
            let store = store.clone();
            async move { commit(&store, &format!("seq-{i}"), now).await }
        })
        .await;
        let (tasks, each) = (TARGET_CONCURRENCY, 100);
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for w in 0..tasks {
            let store = store.clone();
            set.spawn(async move {
                for i in 0..each {
                    commit(&store, &format!("par-{w}-{i}"), now).await;
                }
            });
        }
        set.join_all().await;
        (key_read, commit_ms, (tasks * each) as f64 / t.elapsed().as_secs_f64())
    });
    InProcess { appraise, sim_sign, key_read, commit: commit_ms, commit_c32_rate, fsync }
}

// ---- main ---------------------------------------------------------------------------------------

fn runtime(name: &'static str, workers: usize) -> tokio::runtime::Runtime {
    // The first `workers` threads a runtime starts are its workers; later ones are its
    // blocking pool (tokio starts the workers when the runtime is built).
    let n = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            if name == "srv" {
                if i < workers { format!("srv-worker-{i}") } else { "srv-blocking".into() }
            } else {
                format!("{name}-{i}")
            }
        })
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n_c1 = env_usize("NACRE_BENCH_REQUESTS_C1", 1000);
    let n_c32 = env_usize("NACRE_BENCH_REQUESTS_C32", 4000);
    let server = runtime("srv", cpus);
    let load = runtime("load-gen", cpus);

    let h = Arc::new(server.block_on(Harness::start(None, |t| {
        assert!(t.contains("challenge_ttl_secs = 60\n"));
        t.replace("challenge_ttl_secs = 60\n", "challenge_ttl_secs = 600\n")
    })));
    let dir = h.dir.clone();
    load.block_on(h.admin().create_key(KEY_ID, &DATA_KEY, &policy_for(&MEASUREMENT))).unwrap();

    let paced_rate = env_usize("NACRE_BENCH_PACED_RATE", TARGET_RATE as usize) as f64;
    let runs: Vec<Run> =
        [(1, n_c1, None), (TARGET_CONCURRENCY, n_c32, None), (TARGET_CONCURRENCY, n_c32, Some(paced_rate))]
            .map(|(c, n, paced)| load.block_on(release_run(&h, c, n, paced)))
            .into();
    let (flow, flow_wall) = load.block_on(guest_flow(&h, 300));
    let (proof_releases, proof_lat, proof_wall) = load.block_on(proof_run(&h, n_c32, 4));
    let inproc = in_process(&h, &server);

    let l = &h.config.limits;
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!();
    println!("## Key release: loopback HTTPS (TLS 1.3, keep-alive), sim evidence, SQLite");
    println!();
    println!(
        "Machine: {cpus} CPUs ({cpu_model}). The service and the load generator share these cores, in one \
         process (two tokio runtimes of {cpus} workers each); figures for the service alone would be higher."
    );
    println!(
        "Service: SQLite WAL, synchronous = FULL, on disk ({}); db_connections = {}; challenge_ttl_secs raised \
         to {} for pre-made requests; denial limiter untouched (it charges denials only; none occur).",
        h.config.database, l.db_connections, l.challenge_ttl_secs
    );
    println!(
        "Timed: POST /v1/release only, one kept-alive connection per worker, requests (challenge + HPKE key + \
         P-384-signed sim report) made beforehand; {WARMUP_PER_WORKER} warm-up releases per worker first."
    );
    println!();
    println!("| concurrency | requests | releases/s | p50 | p90 | p99 | max | target | result |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for r in &runs {
        let (target, result) = match r.pass() {
            Some((ok, why)) => {
                failed |= !ok;
                (
                    format!("≥ {TARGET_RATE:.0}/s, p99 ≤ {TARGET_P99_MS:.0} ms"),
                    if ok { "**pass**".to_owned() } else { format!("**FAIL** ({why})") },
                )
            }
            None => match r.paced {
                Some(rate) if r.rate() < 0.95 * rate => {
                    ("–".to_owned(), format!("saturated: {:.0} of {rate:.0}/s served", r.rate()))
                }
                _ => ("–".to_owned(), "–".to_owned()),
            },
        };
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {target} | {result} |",
            r.label(),
            r.count(),
            r.rate(),
            r.lat.pct(50.0),
            r.lat.pct(90.0),
            r.lat.pct(99.0),
            r.lat.max()
        );
    }

    println!();
    println!(
        "Closed loop (c workers back to back): mean latency = c / throughput (Little's law), so p99 ≤ \
         {TARGET_P99_MS:.0} ms with {TARGET_CONCURRENCY} in flight needs more than {:.0} releases/s. Paced: \
         {TARGET_CONCURRENCY} connections at a fixed offered rate, latency from each release's scheduled start.",
        TARGET_CONCURRENCY as f64 / TARGET_P99_MS * 1e3
    );
    println!();
    println!("### Proof serving under release load (transparency log)");
    println!();
    println!(
        "4 readers loop over an inclusion proof read from the store (as `/v1/log/witnessed/<i>` computes it), \
         `GET /v1/log/checkpoint` and `GET /v1/log/tile/0/000` while {} releases run at concurrency {TARGET_CONCURRENCY}.",
        n_c32
    );
    println!();
    println!("| reads | reads/s | p50 | p99 | max | releases/s meanwhile | release p99 |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms |",
        proof_lat.0.len(),
        proof_lat.0.len() as f64 / proof_wall.as_secs_f64(),
        proof_lat.pct(50.0),
        proof_lat.pct(99.0),
        proof_lat.max(),
        proof_releases.lat.0.len() as f64 / proof_releases.wall.as_secs_f64(),
        proof_releases.lat.pct(99.0),
    );

    println!();
    println!("### Where the time goes (mean ms per release, wall time, from the service's histograms)");
    println!();
    println!(
        "| concurrency | client latency | server handler | verify | wrap | storage | rest of handler | outside handler | \
         GET /v1/result-key (p50 / p99, req/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let (v, w, s, handler) = (
            r.stage_mean_ms("verify"),
            r.stage_mean_ms("wrap"),
            r.stage_mean_ms("storage"),
            r.handler_mean_ms(),
        );
        let p99 = |stage: &str| r.stage_p99_ms(stage).map_or(String::new(), |b| format!(" (p99 ≤ {b:.2})"));
        println!(
            "| {} | {:.2} | {:.2} | {v:.2}{} | {w:.2}{} | {s:.2}{} | {:.2} | {:.2} | {:.2} / {:.2} ms, {:.0}/s |",
            r.label(),
            r.lat.mean(),
            handler,
            p99("verify"),
            p99("wrap"),
            p99("storage"),
            handler - v - w - s,
            r.lat.mean() - handler,
            r.cheap.0.pct(50.0),
            r.cheap.0.pct(99.0),
            r.cheap.0.0.len() as f64 / r.cheap.1.as_secs_f64(),
        );
    }
    println!();
    println!(
        "verify = evidence appraisal on the appraisal threads, including the wait in their queue and for a core; \
         wrap = data-key unseal, HPKE wrap, Ed25519 result signature; storage = the release commit, including \
         the wait for its group commit (the batch before it, then its own: one transaction, one fsync); \
         rest of handler = body read, CBOR decode, nonce MAC, key and policy from the row cache, response encoding; outside handler = TLS, HTTP, task scheduling and the client's own work \
         (p99 bounds are histogram bucket bounds)."
    );

    println!();
    println!("### CPU time per release (ms; both runtimes on {cpus} CPUs)");
    println!();
    let mut header = String::from("| thread group |");
    let mut rule = String::from("|---|");
    for r in &runs {
        header.push_str(&format!(" c = {} |", r.label()));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (prefix, what) in GROUPS {
        let mut row = format!("| {what} |");
        for r in &runs {
            row.push_str(&format!(
                " {:.3} |",
                r.cpu.groups.get(prefix).copied().unwrap_or(0.0) * 1e3 / r.count() as f64
            ));
        }
        println!("{row}");
    }
    let mut total = String::from("| **process total** (incl. exited threads) |");
    let mut ceiling = String::from(&*format!("| ceiling: {cpus} CPUs / total |"));
    let mut busy = String::from("| this process: CPU busy during the run |");
    let mut others = String::from("| **other processes** on the machine during the run (should be ~0) |");
    for r in &runs {
        let per = r.cpu.process / r.count() as f64;
        let share = |sec: f64| sec / r.wall.as_secs_f64() / cpus as f64 * 100.0;
        total.push_str(&format!(" **{:.3}** |", per * 1e3));
        ceiling.push_str(&format!(" {:.0} releases/s |", cpus as f64 / per));
        busy.push_str(&format!(" {:.0}% of {cpus} CPUs |", share(r.cpu.process)));
        others.push_str(&format!(" {:.0}% of {cpus} CPUs |", share(r.cpu.others)));
    }
    println!("{total}\n{ceiling}\n{busy}\n{others}");

    println!();
    println!("### In process, one thread, no HTTP (mean of 300–500 calls)");
    println!();
    println!("| operation | mean |");
    println!("|---|---|");
    println!(
        "| evidence appraisal (sim chain cached, P-384 report signature, policy) | {:.3} ms |",
        inproc.appraise
    );
    println!("| guest: sim report signature (P-384 sign) + evidence assembly | {:.3} ms |", inproc.sim_sign);
    println!(
        "| key + versions read (`Store::key`, 2 SELECTs; releases now take it from the row cache) | {:.3} ms |",
        inproc.key_read
    );
    println!(
        "| release commit (`Store::commit_release`: write lock, pool connection, BEGIN, 5 statements, COMMIT \
         with fsync), one at a time: the section the write lock serialises | {:.3} ms (≤ {:.0} commits/s) |",
        inproc.commit,
        1e3 / inproc.commit
    );
    println!(
        "| release commits, {TARGET_CONCURRENCY} tasks at once (storage alone: no HTTP, no verification) | \
         {:.0} commits/s |",
        inproc.commit_c32_rate
    );
    println!(
        "| disk: fsync after a 4 KiB overwrite, in the database's directory (mean / p99) | {:.3} / {:.3} ms |",
        inproc.fsync.0, inproc.fsync.1
    );

    println!();
    println!(
        "### Full guest flow, concurrency 1 (challenge + sim evidence + release + result check + unwrap)"
    );
    println!();
    println!("Not the service metric: includes the guest's P-384 signing and a second round trip.");
    println!();
    println!("| concurrency | flows | flows/s | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| 1 | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        flow.0.len(),
        flow.0.len() as f64 / flow_wall.as_secs_f64(),
        flow.pct(50.0),
        flow.pct(90.0),
        flow.pct(99.0),
        flow.max()
    );
    println!();
    println!("RESULT: {}", if failed { "FAIL" } else { "pass" });

    let h = Arc::into_inner(h).expect("no other handle to the harness");
    server.block_on(h.stop());
    drop(load);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
