#!/usr/bin/env bash
# Key-release benchmark of the attestation service (attestation/service/benches/release.rs):
# loopback HTTPS with keep-alive, sim evidence, SQLite on disk. Prints markdown tables:
# latency p50/p90/p99/max and releases/s at concurrency 1 and 32 (closed loop) and 32 paced
# at 1,000/s; where the time goes (verify / wrap / storage from the service's histograms,
# TLS + HTTP from a no-op route on the same connections, CPU per release by thread group);
# in-process costs (appraisal, commit, fsync); the full guest flow at concurrency 1.
#
#   scripts/bench-release.sh                 # build, run (≈ 1 min), print the tables
#   scripts/bench-release.sh --table-only    # only print the tables of the last run
#
# Targets (the issue): ≥ 1,000 releases/s and p99 ≤ 20 ms at concurrency 32. Exit status 1
# if a target fails. The service and the load generator share this machine's cores; the
# machine may be shared with other work too: the load average before and after, and the CPU
# other processes used during each run, are printed. Trust the figures only when both stayed
# low. Sizes: NACRE_BENCH_REQUESTS_C1, NACRE_BENCH_REQUESTS_C32, NACRE_BENCH_PACED_RATE.
set -euo pipefail

# shellcheck source=bench-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"
log="$logs/release.log"

if ((run)); then
    # Build first, so that compiling does not overlap the measurement.
    cargo bench -p nacre-attestation-service --bench release --no-run
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    # Progress on stderr, the tables (stdout) into the log.
    cargo bench -p nacre-attestation-service --bench release >"$log.tmp"
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    {
        cat "$log.tmp"
        echo
        echo "load average (1/5/15 min) before: $load_before, after: $load_after ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    } >"$log"
    rm -f "$log.tmp"
fi

[[ -f "$log" ]] || { echo "no previous run ($log)" >&2; exit 2; }
# The tables (from the first heading on) and the load average line.
sed -n '/^## Key release/,$p' "$log" | grep -v '^RESULT: '
grep -q '^RESULT: pass' "$log"
