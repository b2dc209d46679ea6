#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! The extraction detector's cost per request, for `scripts/bench-extraction.sh`: one client
//! whose PRADA history is full (`HISTORY` queries of 30 features, the fraud MLP's shape), then
//! `Detector::observe` on single-row queries of two classes, each call timed on its own, and
//! the same with `CLIENTS` clients taking turns (the table's memory bound). One JSON line per
//! case: p50, p99, mean in ns.
//!
//! ```text
//! prada_bench HISTORY CALLS CLIENTS   # e.g. 500 100000 1000
//! ```

use std::time::Instant;

use nacre_guard::manifest::{Extraction, ExtractionAction};
use nacre_guard::prada::Detector;

const D: usize = 30;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn row(i: u64) -> [f32; D] {
    let mut r = [0f32; D];
    for (j, v) in r.iter_mut().enumerate() {
        *v = ((splitmix(i * 64 + j as u64) >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32;
    }
    r
}

fn report(op: &str, history: u32, clients: usize, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    println!(
        "{}",
        serde_json::json!({"op": op, "history": history, "clients": clients, "features": D, "calls": ns.len(),
            "p50_ns": ns[ns.len() / 2], "p99_ns": ns[(ns.len() - 1) * 99 / 100], "mean_ns": mean})
    );
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (history, calls, clients) = (args[0] as u32, args[1], args[2] as usize);
    let settings = Extraction {
        delta: 0.9,
        history,
        min_queries: 50,
        action: ExtractionAction::Throttle,
        throttle_seconds: 10,
    };
    // One client at its cap.
    let mut d = Detector::new(&settings, clients);
    let id = [7u8; 32];
    for i in 0..u64::from(history) * 2 {
        d.observe(&id, &row(i), (i % 2) as i64);
    }
    let mut ns = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let r = row(1_000_000 + i);
        let t = Instant::now();
        std::hint::black_box(d.observe(&id, &r, (i % 2) as i64));
        ns.push(t.elapsed().as_nanos() as u64);
    }
    report("prada_observe", history, 1, ns);
    // `clients` clients at their caps, taking turns, plus new tokens evicting the oldest.
    let mut d = Detector::new(&settings, clients);
    let ids: Vec<[u8; 32]> =
        (0..clients).map(|c| splitmix(c as u64).to_le_bytes().repeat(4).try_into().unwrap()).collect();
    for i in 0..u64::from(history) * clients as u64 {
        d.observe(&ids[i as usize % clients], &row(i), (i % 2) as i64);
    }
    let mut ns = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let r = row(2_000_000 + i);
        let id = if i % 100 == 99 {
            splitmix(i).to_le_bytes().repeat(4).try_into().unwrap()
        } else {
            ids[i as usize % clients]
        };
        let t = Instant::now();
        std::hint::black_box(d.observe(&id, &r, (i % 2) as i64));
        ns.push(t.elapsed().as_nanos() as u64);
    }
    assert_eq!(d.clients(), clients);
    report("prada_observe_many", history, clients, ns);
}
