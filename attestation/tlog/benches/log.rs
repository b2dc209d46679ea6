#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Transparency-log sizes and costs at 1,000,000 leaves (issue 20): checkpoint and proof sizes,
//! the client's whole log check (checkpoint signature, K = 2 cosignatures, inclusion proof,
//! entry decode, release-key match), proof and tile generation, and appends.
//! Run: `cargo bench -p nacre-tlog --bench log` (or scripts/bench-log.sh). Prints a table.

use std::time::Instant;

use nacre_tlog::checkpoint::{open_checkpoint, sign_checkpoint};
use nacre_tlog::cosign::cosign;
use nacre_tlog::tree::{HashTile, prove_consistency, prove_inclusion, root};
use nacre_tlog::{Action, Entry, KeyKind, LogRequirement, MemoryTree, NoteKey, NoteSigner, ReleaseProof};

const LEAVES: u64 = 1_000_000;

fn entry(i: u64) -> Entry {
    Entry {
        v: 1,
        time_ms: 1_764_000_000_000 + i as i64,
        action: Action::Release,
        actor: "guest".into(),
        key_id: Some("fraud-mlp".into()),
        key_version: Some(1),
        decision: "allow".into(),
        reason: None,
        tee: Some("snp".into()),
        measurement: Some(format!("{:096x}", i)),
        chip_id_hmac: Some(format!("{:064x}", i * 7)),
        policy_sha256: Some("11".repeat(32)),
        reference_values_sha256: Some("22".repeat(32)),
        release_key_sha256: Some(format!("{:064x}", i)),
        legacy_chain_head: None,
        reference_measurements: None,
    }
}

/// p50 and p99 of `n` timed calls, in µs.
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut t: Vec<f64> = (0..n)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[n / 2], t[n * 99 / 100])
}

fn main() {
    let log = NoteSigner::from_seed("nacre.bench/release-log", KeyKind::Checkpoint, &[1; 32]).unwrap();
    let witnesses: Vec<NoteSigner> = (0..2u8)
        .map(|i| {
            NoteSigner::from_seed(&format!("witness.bench/w{i}"), KeyKind::Cosignature, &[10 + i; 32])
                .unwrap()
        })
        .collect();
    let named: Vec<NoteKey> = witnesses.iter().map(|w| w.public().clone()).collect();

    let start = Instant::now();
    let mut tree = MemoryTree::new();
    let mut entry_bytes = 0usize;
    let probe = LEAVES / 2 + 12_345;
    let mut probe_bytes = Vec::new();
    for i in 0..LEAVES {
        let bytes = entry(i).encode().unwrap();
        entry_bytes += bytes.len();
        if i == probe {
            probe_bytes = bytes.clone();
        }
        tree.append(&bytes).unwrap();
    }
    let append_s = start.elapsed().as_secs_f64();
    let r = tree.root().unwrap();

    let note = sign_checkpoint(&log, LEAVES, r).unwrap();
    let mut cp = open_checkpoint(&note, log.public(), &[]).unwrap();
    for w in &witnesses {
        cp.add_cosignatures(&cosign(w, cp.text(), 1_764_000_000).unwrap(), &named).unwrap();
    }
    let cosigned = cp.to_bytes();
    let inclusion = prove_inclusion(&tree, LEAVES, probe).unwrap();
    let proof = ReleaseProof::new(&probe_bytes, probe, &inclusion, &cosigned);
    let proof_json = serde_json::to_vec(&proof).unwrap();
    let consistency = prove_consistency(&tree, LEAVES / 2, LEAVES).unwrap();
    let req = LogRequirement {
        log: log.public().clone(),
        witnesses: named,
        min_cosigners: 2,
        max_clock_skew_s: 300,
    };
    let mut release_key = [0u8; 32];
    release_key[24..].copy_from_slice(&probe.to_be_bytes());

    let (check50, check99) = percentiles(5_000, |_| {
        proof.verify(&req, &release_key, 1_764_000_100).unwrap();
    });
    let (incl50, incl99) = percentiles(20_000, |i| {
        prove_inclusion(&tree, LEAVES, (i as u64 * 7919) % LEAVES).unwrap();
    });
    let (cons50, cons99) = percentiles(20_000, |i| {
        prove_consistency(&tree, 1 + (i as u64 * 7919) % (LEAVES - 1), LEAVES).unwrap();
    });
    let tile = HashTile::parse("tile/0/x001/234").unwrap();
    let (tile50, tile99) = percentiles(20_000, |_| {
        tile.read(&tree, LEAVES).unwrap();
    });
    let (root50, root99) = percentiles(20_000, |i| {
        root(&tree, LEAVES - (i as u64 % 1000)).unwrap();
    });

    println!("transparency log at {LEAVES} leaves (nacre-tlog, release build, one core)\n");
    println!("| size | bytes |");
    println!("|---|---:|");
    println!("| mean entry (a release leaf, JSON) | {} |", entry_bytes as u64 / LEAVES);
    println!("| checkpoint, log signature only | {} |", note.len());
    println!("| checkpoint with 2 witness cosignatures | {} |", cosigned.len());
    println!("| inclusion proof ({} hashes) | {} |", inclusion.len(), inclusion.len() * 32);
    println!(
        "| consistency proof 500,000 → 1,000,000 ({} hashes) | {} |",
        consistency.len(),
        consistency.len() * 32
    );
    println!(
        "| the enclave's release proof (entry, index, proof, cosigned checkpoint; JSON) | {} |",
        proof_json.len()
    );
    println!(
        "| stored hashes (the tree's state, 32 B each) | {} |",
        nacre_tlog::tree::stored_hash_count(LEAVES) * 32
    );
    println!();
    println!("| operation | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| client's whole log check (log signature, K = 2 cosignatures, inclusion, entry, release key) | {check50:.1} µs | {check99:.1} µs |"
    );
    println!("| inclusion proof generation (20 stored hashes read) | {incl50:.2} µs | {incl99:.2} µs |");
    println!("| consistency proof generation | {cons50:.2} µs | {cons99:.2} µs |");
    println!("| full hash tile (256 hashes, 8 KiB) | {tile50:.2} µs | {tile99:.2} µs |");
    println!("| root of a tree size | {root50:.2} µs | {root99:.2} µs |");
    println!(
        "| append (encode entry, leaf hash, stored hashes), mean | {:.2} µs | – |",
        append_s * 1e6 / LEAVES as f64
    );
}
