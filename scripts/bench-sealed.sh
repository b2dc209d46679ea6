#!/usr/bin/env bash
# Sealed-model throughput and memory, against OpenSSL on the same machine in the same run.
#
#   scripts/bench-sealed.sh                 # everything (≈ 3 min), then the table
#   scripts/bench-sealed.sh --table-only    # only print the table from the last run
#   scripts/bench-sealed.sh -- <criterion args>   # e.g. `-- sealed_64MiB/open` (other rows stale)
#
# 1. `openssl speed -evp aes-256-gcm` and `-evp sha256` at 16 KiB blocks, before and after the
#    benchmarks; the reference for the ratio is the faster of the two AES-GCM runs (so that a
#    momentarily slow peer cannot make a target pass).
# 2. `cargo bench -p nacre-sealed --bench throughput`: open and seal of 64 MiB in memory with
#    both AES-GCM implementations, and SHA-256 and AES-GCM alone (the bound).
# 3. Peak RSS of opening a 1 GiB model: `examples/unseal_rss` seals 1 GiB of pseudo-random
#    bytes to a file under the cargo target dir, then opens it three times, each in a fresh
#    process, reporting VmHWM (and /usr/bin/time's maximum RSS when installed). The files are
#    removed on exit.
#
# Targets (the issue): open and seal ≥ 0.8× OpenSSL AES-256-GCM; peak RSS ≤ 1 GiB + 64 MiB.
# Exit status 1 if a target fails. Throughput is the criterion median; the machine is shared,
# so the load average before and after is printed: trust ratios only when it stayed low.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
crit=${CRITERION_HOME:-$target/criterion}
peers="$logs/sealed-peers.jsonl"

# One `openssl speed -mr` figure in bytes/s at 16 KiB blocks.
openssl_rate() {
    openssl speed -mr -evp "$1" -bytes 16384 -seconds 3 2>/dev/null |
        awk -F: -v alg="$2" 'toupper($3) == alg { print $4 }' | tail -1
}

peer() { # name, bytes/s
    printf '{"op":"%s","bytes_per_s":%s}\n' "$1" "$2" >>"$peers"
}

start=0
if ((run)); then
    command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 2; }
    # Build first, so that compiling does not overlap any measurement.
    cargo bench -p nacre-sealed --bench throughput --no-run
    cargo build --release -p nacre-sealed --example unseal_rss
    bin="$target/release/examples/unseal_rss"

    start=$(date +%s)
    : >"$peers"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "openssl speed (before) ..."
    peer openssl_aes256gcm_before "$(openssl_rate aes-256-gcm AES-256-GCM)"
    peer openssl_sha256_before "$(openssl_rate sha256 SHA256)"

    cargo bench -p nacre-sealed --bench throughput -- "$@" 2>&1 | tee "$logs/sealed.log"

    echo "peak RSS of opening 1 GiB ..."
    mkdir -p "$target/tmp"
    tmp=$(mktemp -d "$target/tmp/bench-sealed.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    "$bin" seal "$tmp" 1024 | tee -a "$peers"
    for _ in 1 2 3; do
        if [[ -x /usr/bin/time ]]; then
            line=$(/usr/bin/time -f '%M' -o "$tmp/time" "$bin" open "$tmp")
            echo "${line%\}},\"time_maxrss_kib\":$(tail -1 "$tmp/time")}" | tee -a "$peers"
        else
            "$bin" open "$tmp" | tee -a "$peers"
        fi
    done
    rm -rf "$tmp"
    trap - EXIT

    echo "openssl speed (after) ..."
    peer openssl_aes256gcm_after "$(openssl_rate aes-256-gcm AES-256-GCM)"
    peer openssl_sha256_after "$(openssl_rate sha256 SHA256)"
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    echo
    echo "load average (1/5/15 min) before: $load_before, after: $load_after ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
fi

python3 - "$crit" "$start" "$peers" <<'EOF'
import json, os, statistics, sys

crit, start, peers_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MIB = 1 << 20
TARGET = 0.8
RSS_LIMIT_KIB = (1024 + 64) * 1024

peers, opens = {}, []
if os.path.exists(peers_path):
    with open(peers_path) as f:
        for line in f:
            p = json.loads(line)
            if p["op"] == "open":
                opens.append(p)
            else:
                peers[p["op"]] = p

def crit_rate(name):
    """MiB/s from criterion's median, and whether the estimate predates this run."""
    d = os.path.join(crit, name, "new")
    try:
        with open(os.path.join(d, "estimates.json")) as f:
            median_ns = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(d, "benchmark.json")) as f:
            size = json.load(f)["throughput"]["Bytes"]
    except FileNotFoundError:
        return None, False
    stale = os.path.getmtime(os.path.join(d, "estimates.json")) < start
    return size / (median_ns / 1e9) / MIB, stale

def peer_rate(op):
    p = peers.get(op)
    return p["bytes_per_s"] / MIB if p and p.get("bytes_per_s") else None

aes_runs = [r for r in (peer_rate("openssl_aes256gcm_before"), peer_rate("openssl_aes256gcm_after")) if r]
sha_runs = [r for r in (peer_rate("openssl_sha256_before"), peer_rate("openssl_sha256_after")) if r]
ref = max(aes_runs) if aes_runs else None
failed = False

def fmt(x):
    return f"{x:,.0f}" if x is not None else "–"

def ratio(x):
    return f"{x / ref:.2f}×" if x is not None and ref else "–"

print()
print("| operation | size | MiB/s | ratio to openssl AES-256-GCM (16 KiB) | target | result |")
print("|---|---|---|---|---|---|")

def row(label, size, rate, stale=False, target=False):
    global failed
    tgt, res = "–", "–"
    if target:
        tgt = f"≥ {TARGET}×"
        if rate is None or ref is None:
            res = "**not run**"
            failed = True
        else:
            ok = rate / ref >= TARGET
            res = "**pass**" if ok else "**FAIL**"
            failed |= not ok
    print(f"| {label}{' (stale)' if stale else ''} | {size} | {fmt(rate)} | {ratio(rate)} | {tgt} | {res} |")

for op, what in (("open", "open (read, authenticate, decrypt, SHA-256 check, wipe on drop)"),
                 ("seal", "seal (hash pass, then encrypt pass with re-hash)")):
    for impl, tgt in (("aws-lc-rs", True), ("aes-gcm", False)):
        r, s = crit_rate(f"sealed_64MiB/{op}_{impl}")
        label = f"{what}, {impl}" + ("" if tgt else " (reference)")
        row(label, "64 MiB, memory", r, s, tgt)

if opens:
    rates = [o["bytes"] / o["seconds"] / MIB for o in opens]
    row(f"open from file, fresh process, median of {len(opens)} (first: {fmt(rates[0])})",
        f"{opens[0]['bytes'] >> 20} MiB", statistics.median(rates))
s = peers.get("seal")
if s:
    row("seal to file (page cache)", f"{s['bytes'] >> 20} MiB", s["bytes"] / s["seconds"] / MIB)

sha, _ = crit_rate("primitive_64MiB/sha256_aws-lc-rs")
aes, _ = crit_rate("primitive_64MiB/aes256gcm_1MiB_chunks_aws-lc-rs")
for name, label in (("sha256_aws-lc-rs", "SHA-256 alone, aws-lc-rs (SHA-NI)"),
                    ("sha256_sha2", "SHA-256 alone, `sha2` 0.10"),
                    ("aes256gcm_1MiB_chunks_aws-lc-rs", "AES-256-GCM alone, aws-lc-rs, 1 MiB chunks"),
                    ("aes256gcm_1MiB_chunks_aes-gcm", "AES-256-GCM alone, `aes-gcm`, 1 MiB chunks")):
    r, st = crit_rate(f"primitive_64MiB/{name}")
    row(label, "64 MiB, memory", r, st)
if sha and aes:
    row("bound, open: SHA-256 (hashing overlaps everything else on a 2nd core)", "–", sha)
    row("bound, open, one core: 1 / (1/SHA + 1/AES)", "–", 1 / (1 / sha + 1 / aes))
    row("bound, seal: SHA/2 (two full hashes in sequence; encryption overlaps the 2nd)", "–", sha / 2)
    row("bound, seal, one core: 1 / (2/SHA + 1/AES)", "–", 1 / (2 / sha + 1 / aes))
for label, runs in (("peer: `openssl speed -evp aes-256-gcm` (before / after)", aes_runs),
                    ("peer: `openssl speed -evp sha256` (before / after)", sha_runs)):
    if runs:
        print(f"| {label} | 16 KiB blocks | {' / '.join(fmt(r) for r in runs)} | "
              f"{' / '.join(ratio(r) for r in runs)} | – | – |")

print()
print("| memory | size | peak RSS | target | result |")
print("|---|---|---|---|---|")
if opens:
    peak = max(o["vmhwm_kib"] for o in opens)
    extra = ""
    if all("time_maxrss_kib" in o for o in opens):
        extra = f"; `/usr/bin/time`: {max(o['time_maxrss_kib'] for o in opens) / 1024:,.1f} MiB"
    ok = peak <= RSS_LIMIT_KIB and all(o.get("time_maxrss_kib", 0) <= RSS_LIMIT_KIB for o in opens)
    failed |= not ok
    base = max(o["vmhwm_before_kib"] for o in opens)
    print(f"| open into memory, fresh process ({len(opens)} runs, max) | {opens[0]['bytes'] >> 20} MiB | "
          f"VmHWM {peak / 1024:,.1f} MiB (process before opening: {base / 1024:.1f} MiB){extra} | "
          f"≤ {RSS_LIMIT_KIB // 1024:,} MiB | {'**pass**' if ok else '**FAIL**'} |")
else:
    print("| open into memory, fresh process | 1024 MiB | – | ≤ 1,088 MiB | **not run** |")
    failed = True
print()
print(f"criterion: {crit}/sealed_64MiB, primitive_64MiB (median); peers and RSS: {peers_path}")
sys.exit(1 if failed else 0)
EOF
