#!/usr/bin/env bash
# Sealed-model throughput and memory (format v2: a worker per shard), against OpenSSL on the same
# machine in the same run.
#
#   scripts/bench-sealed.sh [MIB]          # everything for a MIB model (default 1024), then the table
#   scripts/bench-sealed.sh --table-only   # only print the table from the last run
#
# 1. `openssl speed -evp aes-256-gcm` and `-evp sha256` at 16 KiB blocks, one thread (A and S),
#    before and after; the bound is P = cores × 1 / (1/A + 1/S) with the faster run of each (so
#    that a momentarily slow peer cannot make a target pass). Also `openssl speed -multi cores`.
# 2. `examples/sealed_bench` (release): seal and open in memory with 1 … cores workers (median
#    of 3), then seal a model file to a sealed file and open it, both in the page cache, each in a
#    fresh process that reports its peak RSS (VmHWM).
#
# Targets (issue 16): seal and open ≥ 0.9 × P at all cores; peak RSS of opening ≤ model + 64 MiB.
# Exit status 1 if a target fails. The machine may be shared: the load average is printed.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
mib=${1:-1024}
peers="$logs/sealed.jsonl"
cores=$(nproc)

# One `openssl speed -mr` figure in bytes/s at 16 KiB blocks (extra arguments: e.g. -multi N).
openssl_rate() {
    local evp=$1 alg=$2
    shift 2
    openssl speed -mr "$@" -evp "$evp" -bytes 16384 -seconds 3 2>/dev/null |
        awk -F: -v alg="$alg" 'toupper($3) == alg { print $4 }' | tail -1
}
peer() { printf '{"op":"%s","bytes_per_s":%s}\n' "$1" "$2" >>"$peers"; }

if ((run)); then
    command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 2; }
    cargo build --release -p nacre-sealed --example sealed_bench
    bin="$target/release/examples/sealed_bench"
    : >"$peers"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$logs/sealed-load.txt"
    for when in before after; do
        if [[ $when == after ]]; then
            for ((w = 1; w <= cores; w++)); do "$bin" memory "$mib" "$w" 3 | tee -a "$peers"; done
            mkdir -p "$target/tmp"
            tmp=$(mktemp -d "$target/tmp/bench-sealed.XXXXXX")
            trap 'rm -rf "$tmp"' EXIT
            for ((w = 1; w <= cores; w++)); do
                "$bin" seal-file "$tmp" "$mib" "$w" | tee -a "$peers"
                "$bin" open-file "$tmp" "$w" | tee -a "$peers"
            done
            rm -rf "$tmp"
            trap - EXIT
        fi
        echo "openssl speed ($when) ..."
        peer "aes_$when" "$(openssl_rate aes-256-gcm AES-256-GCM)"
        peer "sha_$when" "$(openssl_rate sha256 SHA256)"
    done
    peer aes_multi "$(openssl_rate aes-256-gcm AES-256-GCM -multi "$cores")"
    peer sha_multi "$(openssl_rate sha256 SHA256 -multi "$cores")"
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$logs/sealed-load.txt"
fi

python3 - "$peers" "$cores" "$logs/sealed-load.txt" <<'PY'
import json, sys
from collections import defaultdict

path, cores, load = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MB = 1e6
rows, peers = defaultdict(dict), {}
for line in open(path):
    p = json.loads(line)
    if "workers" in p:
        rows[p["op"]][p["workers"]] = p
    else:
        peers[p["op"]] = p["bytes_per_s"] / MB
A = max(peers.get("aes_before", 0), peers.get("aes_after", 0))
S = max(peers.get("sha_before", 0), peers.get("sha_after", 0))
per_core = 1 / (1 / A + 1 / S)
P = cores * per_core
failed = False
print()
print(f"A = openssl AES-256-GCM {A:,.0f} MB/s, S = openssl SHA-256 {S:,.0f} MB/s (16 KiB, one thread, best of before/after)")
print(f"P = {cores} × 1/(1/A + 1/S) = {P:,.0f} MB/s ({per_core:,.0f} per core)")
print(f"openssl speed -multi {cores}: AES-256-GCM {peers.get('aes_multi', 0):,.0f} MB/s, SHA-256 {peers.get('sha_multi', 0):,.0f} MB/s")
print()
print("| operation | workers | size | MB/s | × P(workers) | × P(all cores) | target | result |")
print("|---|---|---|---|---|---|---|---|")
labels = {"seal_memory": "seal, memory → memory", "open_memory": "open, memory → memory",
          "open_memory_ready": "open, memory → memory, until ready (wipe on drop not timed)",
          "seal_file": "seal, file → file (page cache)", "open_file": "open, file (page cache) → memory"}
for op in ("seal_memory", "open_memory", "open_memory_ready", "seal_file", "open_file"):
    for w, r in sorted(rows[op].items()):
        rate = r["bytes"] / r["seconds"] / MB
        full = rate / P
        target, result = "–", "–"
        if w == cores and op.endswith("memory"):
            target = "≥ 0.9 × P"
            ok = full >= 0.9
            failed |= not ok
            result = "**pass**" if ok else "**FAIL**"
        print(f"| {labels[op]} | {w} | {r['bytes'] >> 20} MiB | {rate:,.0f} | {rate / (w * per_core):.2f} | {full:.2f} | {target} | {result} |")
print()
print("| memory | workers | size | peak RSS (VmHWM) | process before | target | result |")
print("|---|---|---|---|---|---|---|")
for op in ("seal_file", "open_file"):
    for w, r in sorted(rows[op].items()):
        limit = (r["bytes"] >> 10) + 64 * 1024
        target, result = "–", "–"
        if op == "open_file":
            target = f"≤ {limit / 1024:,.0f} MiB"
            ok = r["vmhwm_kib"] <= limit
            failed |= not ok
            result = "**pass**" if ok else "**FAIL**"
        print(f"| {labels[op]} | {w} | {r['bytes'] >> 20} MiB | {r['vmhwm_kib'] / 1024:,.1f} MiB | {r['vmhwm_before_kib'] / 1024:,.1f} MiB | {target} | {result} |")
print()
print(open(load).read().strip())
sys.exit(1 if failed else 0)
PY
