#!/usr/bin/env bash
# The private monitor's cost per request (issue 19: ≤ 0.5 µs for 30 features), with a peer
# measured in the same run.
#
#   scripts/bench-monitoring.sh                 # run, then print the table
#   scripts/bench-monitoring.sh --table-only    # only print the table from the last run
#
# 1. `examples/monitor_bench` (release): 1,000,000 single-row requests of 30 features counted on
#    10-bin reference histograms plus the output's 20 bins, each call timed on its own; then one
#    window's calibration and release.
# 2. The peer: the same per-request binning in numpy (`np.searchsorted` per feature into
#    per-feature count arrays), as a Python monitoring agent would do it per request.
# Exit status 1 if the p99 target fails.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
out="$logs/monitoring.jsonl"

if ((run)); then
    eval "$(scripts/inputs.sh)"
    cargo build -q --release -p nacre-guard --example monitor_bench
    : >"$out"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$logs/monitoring-load.txt"
    "$target/release/examples/monitor_bench" 1000000 | tee -a "$out"
    "$NACRE_PYTHON" - >>"$out" <<'PY'
import json, time
import numpy as np
rng = np.random.default_rng(1)
d = 30
edges = np.array([-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816])
counts = np.zeros((d, 10), dtype=np.int64)
rows = rng.standard_normal((4096, d)).astype(np.float32)
idx = np.arange(d)
ns = []
for i in range(100000):
    r = rows[i % 4096]
    t = time.perf_counter_ns()
    counts[idx, np.searchsorted(edges, r, side="right")] += 1
    ns.append(time.perf_counter_ns() - t)
ns.sort()
print(json.dumps({"op": "numpy_bins", "features": d, "calls": len(ns), "p50_ns": ns[len(ns) // 2],
                  "p99_ns": ns[int((len(ns) - 1) * 0.99)], "mean_ns": sum(ns) / len(ns)}))
PY
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$logs/monitoring-load.txt"
fi

python3 - "$out" "$logs/monitoring-load.txt" <<'PY'
import json, sys
rows = {r["op"]: r for r in map(json.loads, open(sys.argv[1]))}
g, w, p = rows["monitor_observe"], rows["monitor_window"], rows.get("numpy_bins")
print()
print("| per request, 30 features | p50 | p99 | mean | target | result |")
print("|---|---|---|---|---|---|")
ok = g["p99_ns"] <= 500
print(f"| nacre private monitor (30 + output histograms), {g['calls']:,} calls, {g['windows']} windows closed | {g['p50_ns'] / 1000:.3f} µs | {g['p99_ns'] / 1000:.3f} µs | {g['mean_ns'] / 1000:.3f} µs | p99 ≤ 0.5 µs | **{'pass' if ok else 'FAIL'}** |")
if p:
    print(f"| peer: numpy `searchsorted` + count, one row, {p['calls']:,} calls | {p['p50_ns'] / 1000:.2f} µs | {p['p99_ns'] / 1000:.2f} µs | {p['mean_ns'] / 1000:.2f} µs | – | – |")
print(f"\nclock cost per timed call {g['clock_ns']} ns (in the figures above); mean without per-call timing {g['untimed_mean_ns'] / 1000:.3f} µs")
print(f"once per window (off the request path): calibration for a new window size {w['calibrate_ms']:.0f} ms, "
      f"release (exact discrete Laplace on 322 counts, distances) {w['release_ms']:.2f} ms")
print(open(sys.argv[2]).read().strip())
sys.exit(0 if ok else 1)
PY
