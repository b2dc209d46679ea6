#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Sealing and opening throughput and peak memory, for `scripts/bench-sealed.sh`, which runs
//! `openssl speed` in the same run and prints the table. One JSON line per measurement.
//!
//! ```text
//! sealed_bench memory MIB WORKERS REPS      # seal and open in memory (median of REPS)
//! sealed_bench seal-file DIR MIB WORKERS    # model file -> sealed file (page cache)
//! sealed_bench open-file DIR WORKERS        # sealed file -> memory, with VmHWM
//! ```
//!
//! Model bytes are pseudo-random (SplitMix64), so that AES and SHA-256 see realistic input.
//! What is timed for `open`: allocating the output buffer, faulting it in, reading or copying
//! each chunk into place, authenticating, decrypting, hashing, checking the identity, and
//! wiping and unmapping it on drop: the guest pays all of it once per model. `open_memory_ready`
//! is the same runs timed until the plaintext is ready, without the wipe.

use std::error::Error;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nacre_sealed::{AwsLcGcm, DataKey, FileRange, Output, SealParams, open, seal};

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn model(mib: usize) -> Vec<u8> {
    (0..(mib << 20) / 8).flat_map(|i| splitmix64(i as u64).to_le_bytes()).collect()
}

fn key() -> DataKey {
    DataKey::from_bytes([7; 32]) // a benchmark, not a secret
}

fn params() -> SealParams {
    SealParams::new("bench", 1, "bench", "1")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A field of /proc/self/status, in KiB.
fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).unwrap();
    line.trim().trim_end_matches(" kB").trim().parse().unwrap()
}

fn memory(mib: usize, workers: usize, reps: usize) {
    let plain = model(mib);
    let cipher = AwsLcGcm::new(&key()).unwrap();
    let mut sealed = Vec::new();
    let mut seal_s = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        seal(&plain[..], Output::Memory(&mut sealed), &cipher, &params(), workers, &|_| {}).unwrap();
        seal_s.push(t.elapsed().as_secs_f64());
    }
    let (mut open_s, mut ready_s) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let opened = open(&sealed[..], &cipher, u64::MAX, workers).unwrap();
        ready_s.push(t.elapsed().as_secs_f64());
        drop(opened);
        open_s.push(t.elapsed().as_secs_f64());
    }
    let bytes = plain.len();
    for (op, s) in [("seal_memory", seal_s), ("open_memory", open_s), ("open_memory_ready", ready_s)] {
        println!(r#"{{"op":"{op}","workers":{workers},"bytes":{bytes},"seconds":{:.6}}}"#, median(s));
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("model.bin"), dir.join("model.sealed"))
}

fn seal_file(dir: &Path, mib: usize, workers: usize) {
    let (model_path, sealed_path) = paths(dir);
    if !model_path.exists() {
        std::fs::write(&model_path, model(mib)).unwrap();
    }
    let _ = std::fs::remove_file(&sealed_path);
    let input = File::open(&model_path).unwrap();
    let out = File::create_new(&sealed_path).unwrap();
    let cipher = AwsLcGcm::new(&key()).unwrap();
    let before = vm_kib("VmHWM");
    let t = Instant::now();
    let h =
        seal(&FileRange::whole(&input).unwrap(), Output::File(&out), &cipher, &params(), workers, &|_| {})
            .unwrap();
    let seconds = t.elapsed().as_secs_f64();
    println!(
        r#"{{"op":"seal_file","workers":{workers},"bytes":{},"seconds":{seconds:.6},"vmhwm_before_kib":{before},"vmhwm_kib":{}}}"#,
        h.plaintext_len,
        vm_kib("VmHWM")
    );
}

fn open_file(dir: &Path, workers: usize) {
    let (_, sealed_path) = paths(dir);
    let cipher = AwsLcGcm::new(&key()).unwrap();
    let file = File::open(&sealed_path).unwrap();
    let before = vm_kib("VmHWM");
    let t = Instant::now();
    let opened = open(&FileRange::whole(&file).unwrap(), &cipher, u64::MAX, workers).unwrap();
    let bytes = opened.plaintext.len();
    drop(opened);
    let seconds = t.elapsed().as_secs_f64();
    println!(
        r#"{{"op":"open_file","workers":{workers},"bytes":{bytes},"seconds":{seconds:.6},"vmhwm_before_kib":{before},"vmhwm_kib":{}}}"#,
        vm_kib("VmHWM")
    );
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| -> usize { args[i].parse().unwrap() };
    match args.first().map(String::as_str) {
        Some("memory") => memory(n(1), n(2), n(3)),
        Some("seal-file") => seal_file(Path::new(&args[1]), n(2), n(3)),
        Some("open-file") => open_file(Path::new(&args[1]), n(2)),
        _ => return Err(
            "usage: sealed_bench memory MIB WORKERS REPS | seal-file DIR MIB WORKERS | open-file DIR WORKERS"
                .into(),
        ),
    }
    Ok(())
}
