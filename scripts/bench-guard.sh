#!/usr/bin/env bash
# The model guard's cost per request (issue 17: ≤ 2 µs p99 for the fraud MLP's 30 features),
# with a peer measured in the same run.
#
#   scripts/bench-guard.sh                 # run, then print the table
#   scripts/bench-guard.sh --table-only    # only print the table from the last run
#
# 1. `examples/guard_bench` (release): a manifest fitted to 20,000 rows of 30 correlated
#    features, then 200,000 single-row checks (schema, then the squared Mahalanobis distance),
#    each timed on its own: p50, p99, mean.
# 2. The peer: the same distance for one row in numpy (`(x − μ)ᵀ Σ⁻¹ (x − μ)` with the inverse
#    precomputed), as a Python model-security tool computes it per request, timed the same way.
# Exit status 1 if the p99 target fails.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
out="$logs/guard.jsonl"

if ((run)); then
    eval "$(scripts/inputs.sh)"
    cargo build -q --release -p nacre-guard --example guard_bench
    : >"$out"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$logs/guard-load.txt"
    "$target/release/examples/guard_bench" 20000 200000 | tee -a "$out"
    "$NACRE_PYTHON" - >>"$out" <<'PY'
import json, time
import numpy as np
rng = np.random.default_rng(1)
d = 30
x = rng.uniform(-0.5, 0.5, (20000, d))
mu, prec = x.mean(0), np.linalg.inv(np.cov(x, rowvar=False))
rows = rng.uniform(-0.5, 0.5, (1024, d)).astype(np.float32)
ns = []
for i in range(50000):
    r = rows[i % 1024]
    t = time.perf_counter_ns()
    z = r - mu
    s = float(z @ prec @ z)
    ns.append(time.perf_counter_ns() - t)
ns.sort()
print(json.dumps({"op": "numpy_mahalanobis", "features": d, "calls": len(ns), "p50_ns": ns[len(ns) // 2],
                  "p99_ns": ns[int((len(ns) - 1) * 0.99)], "mean_ns": sum(ns) / len(ns)}))
PY
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$logs/guard-load.txt"
fi

python3 - "$out" "$logs/guard-load.txt" <<'PY'
import json, sys
rows = {r["op"]: r for r in map(json.loads, open(sys.argv[1]))}
g, p = rows["guard_check"], rows.get("numpy_mahalanobis")
print()
print("| per request, 30 features | p50 | p99 | mean | target | result |")
print("|---|---|---|---|---|---|")
ok = g["p99_ns"] <= 2000
print(f"| nacre input guard (schema + Mahalanobis), {g['calls']:,} calls | {g['p50_ns'] / 1000:.2f} µs | {g['p99_ns'] / 1000:.2f} µs | {g['mean_ns'] / 1000:.2f} µs | p99 ≤ 2 µs | **{'pass' if ok else 'FAIL'}** |")
if p:
    print(f"| peer: numpy `(x−μ)ᵀ Σ⁻¹ (x−μ)`, one row, {p['calls']:,} calls | {p['p50_ns'] / 1000:.2f} µs | {p['p99_ns'] / 1000:.2f} µs | {p['mean_ns'] / 1000:.2f} µs | – | – |")
print()
print(open(sys.argv[2]).read().strip())
sys.exit(0 if ok else 1)
PY
