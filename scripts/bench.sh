#!/usr/bin/env bash
# Runs the verification benchmarks (tests/benches/verify.rs) and prints a markdown table of
# each benchmark against its baseline and target, from criterion's estimates.json files.
#
#   scripts/bench.sh                  # everything
#   scripts/bench.sh --table-only     # only print the table from the last run
#   scripts/bench.sh -- <criterion args>   # e.g. `-- snp/` to run a subset (other rows are marked stale)
#
# Ratios and pass/fail use criterion's medians (robust to the odd preempted sample); the mean
# ratio is shown as well. Criterion measures a benchmark and its baseline a minute apart, so
# on a shared machine load drift can move the ratio by several percent: the bench therefore
# also times each target pair interleaved call by call (`PAIRED` lines), shown in the last
# column. The load average before and after the run is printed; trust ratios only when it
# stayed low.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
# Where criterion writes: $CRITERION_HOME, else <cargo target dir>/criterion.
crit=${CRITERION_HOME:-$target/criterion}
log="$target/bench-logs/verify.log"
start=$(date +%s)
if ((run)); then
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    cargo bench -p nacre-tests --bench verify -- "$@" 2>&1 | tee "$log"
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    echo
    echo "load average (1/5/15 min) before: $load_before, after: $load_after ($(nproc) CPUs)"
    if command -v openssl >/dev/null; then
        echo "peer in the same run, openssl speed (Debian OpenSSL; per operation, then ops/s):"
        openssl speed -seconds 3 ecdsap384 rsa4096 2>/dev/null | grep -E 'ecdsa \(nistp384\)|^rsa 4096' || true
    fi
else
    start=0
fi

python3 - "$crit" "$start" "$log" <<'EOF'
import json, os, sys

crit, start, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]

paired = {}
if os.path.exists(log):
    with open(log) as f:
        for line in f:
            if line.startswith("PAIRED "):
                p = json.loads(line[len("PAIRED "):])
                paired[p["bench"]] = p

# (benchmark, baseline, target ratio or None)
ROWS = [
    ("snp/cached_chain", "baseline/p384_verify", 1.2),
    ("snp/full_chain", "baseline/p384_verify", None),
    ("baseline/p384_verify", None, None),
    ("baseline/p384_verify_unparsed", "baseline/p384_verify", None),
    ("tdx/verify", "baseline/dcap_qvl_verify", 1.1),
    ("baseline/dcap_qvl_verify", None, None),
    ("breakdown/snp_authenticate", "baseline/p384_verify", None),
    ("breakdown/snp_cache_key_sha256", None, None),
    ("breakdown/snp_report_parse", None, None),
    ("breakdown/snp_mutex_map_hit", None, None),
    ("breakdown/snp_claims_clone_drop", None, None),
    ("breakdown/snp_parse_certs_crl", None, None),
    ("breakdown/snp_rsa4096_pss_verify", None, None),
]


def load(name):
    path = os.path.join(crit, name, "new", "estimates.json")
    try:
        with open(path) as f:
            est = json.load(f)
    except FileNotFoundError:
        return None
    return {
        "median": est["median"]["point_estimate"],
        "mean": est["mean"]["point_estimate"],
        "median_ci": (est["median"]["confidence_interval"]["lower_bound"],
                      est["median"]["confidence_interval"]["upper_bound"]),
        "stale": os.path.getmtime(path) < start,
    }


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}" if ns / scale < 100 else f"{ns / scale:.0f} {unit}"
    return f"{ns:.3g} ns"


print()
print("| benchmark | median | mean | median 95% CI | vs baseline (median / mean) | target | result | interleaved A/B ratio |")
print("|---|---|---|---|---|---|---|---|")
failed = False
for name, base, target in ROWS:
    e = load(name)
    if e is None:
        print(f"| `{name}` | – | – | – | – | – | not run | – |")
        if target is not None:
            failed = True
        continue
    label = f"`{name}`" + (" (stale)" if e["stale"] else "")
    lo, hi = e["median_ci"]
    ratio, tgt, result = "–", "–", "–"
    b = load(base) if base else None
    if b is not None:
        r_med, r_mean = e["median"] / b["median"], e["mean"] / b["mean"]
        ratio = f"{r_med:.3f}× / {r_mean:.3f}× `{base}`"
        if target is not None:
            tgt = f"≤ {target}×"
            ok = r_med <= target
            result = "**pass**" if ok else "**FAIL**"
            failed |= not ok
    elif target is not None:
        tgt, result = f"≤ {target}×", "no baseline"
        failed = True
    pr = "–"
    p = paired.get(name)
    if p is not None:
        mark = ""
        if target is not None:
            mark = " pass" if p["median_pair_ratio"] <= target else " FAIL"
        pr = f"{p['median_pair_ratio']:.3f}×{mark} ({p['pairs']} pairs)"
    print(f"| {label} | {fmt(e['median'])} | {fmt(e['mean'])} | {fmt(lo)} – {fmt(hi)} | {ratio} | {tgt} | {result} | {pr} |")
print()
print(f"estimates: {crit}/<group>/<name>/new/estimates.json; result = criterion median ratio vs target;")
print("interleaved = median of per-pair ratios, benchmark and baseline timed alternately in the same window")
sys.exit(1 if failed else 0)
EOF
