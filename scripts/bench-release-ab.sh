#!/usr/bin/env bash
# Interleaved A/B of the key-release benchmark (attestation/service/benches/release.rs): the
# committed HEAD (B) against a base revision (A), releases/s at concurrency 32 (closed loop).
#
#   scripts/bench-release-ab.sh [--build-only] [--clean] [BASE_REV]
#
# BASE_REV defaults to the parent of the oldest commit whose message names "(issue 14)" (the
# tree before issue 14's bounded serving); NACRE_AB_ISSUE changes the issue. Both sides are
# built from clean `git worktree`s under /tmp/nacre-ab (so uncommitted edits in this working
# tree are not measured) into one shared CARGO_TARGET_DIR (default /tmp/nacre-ab-target:
# dependencies are built once for both), and their bench executables are copied aside. Then
# A B A B … runs NACRE_AB_ROUNDS (default 5) rounds, one process per run, so that drift in the
# machine's load hits both sides alike. Prints each run's figure and a table of the medians and
# their ratio; exit status 1 if B's median is below 90 % of A's.
#
# Each run is the whole benchmark; its sizes are the benchmark's variables, with a smaller
# default here for the concurrency-1 run that the comparison does not use:
# NACRE_BENCH_REQUESTS_C1 (default here 200), NACRE_BENCH_REQUESTS_C32 (4000),
# NACRE_BENCH_PACED_RATE (1000). Run it on an otherwise idle machine (e.g. under `nice`: the
# build is the long part); the load average before and after is printed.
# --build-only builds both sides and stops; --clean removes the worktrees (not the target dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

build_only=0
clean=0
base=
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=1 ;;
        --clean) clean=1 ;;
        -*) echo "usage: $0 [--build-only] [--clean] [BASE_REV]" >&2; exit 2 ;;
        *) base=$arg ;;
    esac
done

work=/tmp/nacre-ab
if ((clean)); then
    for side in base head; do
        [[ -d "$work/$side" ]] && git worktree remove --force "$work/$side"
    done
    git worktree prune
    exit 0
fi

issue=${NACRE_AB_ISSUE:-14}
if [[ -z "$base" ]]; then
    first=$(git log --reverse --format=%H --fixed-strings --grep="(issue $issue)" | head -n1)
    [[ -n "$first" ]] || { echo "no commit names (issue $issue); give BASE_REV" >&2; exit 2; }
    base="$first^"
fi
base_commit=$(git rev-parse --verify "$base^{commit}")
head_commit=$(git rev-parse --verify HEAD)
rounds=${NACRE_AB_ROUNDS:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/nacre-ab-target}
export NACRE_BENCH_REQUESTS_C1=${NACRE_BENCH_REQUESTS_C1:-200}
mkdir -p "$work/bin" "$work/logs"

# A worktree at exactly `commit` (reused, so that an unchanged tree is not rebuilt).
worktree() {
    local dir=$1 commit=$2
    if [[ -d "$dir" ]]; then
        git -C "$dir" checkout --quiet --detach --force "$commit"
        git -C "$dir" clean --quiet -fdx
    else
        git worktree add --quiet --detach "$dir" "$commit"
    fi
}

# Builds the release bench in the worktree for `side` and copies its executable to bin/.
build() {
    local side=$1 commit=$2 exe
    worktree "$work/$side" "$commit"
    echo "building $side ($(git log -1 --format='%h %s' "$commit" | cut -c1-80))" >&2
    exe=$(cd "$work/$side" && cargo bench -p nacre-attestation-service --bench release --no-run \
        --message-format=json-render-diagnostics |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "release" and (.target.kind | index("bench")) and .executable != null) | .executable' |
        tail -n1)
    [[ -x "$exe" ]] || { echo "$side: no bench executable" >&2; exit 1; }
    cp "$exe" "$work/bin/$side"
}

build base "$base_commit"
build head "$head_commit"
((build_only)) && exit 0

# One run of `side`: prints its releases/s and p99 (ms) at concurrency 32, closed loop, and the
# CPU other processes used meanwhile (the benchmark's own measure; ~0 on an idle machine).
run() {
    local side=$1 round=$2 log
    log="$work/logs/$side-$round.md"
    # The bench finds its test harness data relative to its package, as under `cargo bench`.
    (cd "$work/$side/attestation/service" && "$work/bin/$side" --bench >"$log" 2>"$log.err")
    # | 32 | requests | releases/s | p50 | p90 | p99 | max | target | result |
    awk -F'|' '$2 ~ /^ *32 *$/ && !row { gsub(/ |ms/, "", $4); gsub(/ |ms/, "", $7); row = $4 " " $7 }
        /other processes/ && !others { split($4, f, " "); others = f[1] }
        END { if (row != "") print row, (others != "" ? others : "?") }' "$log"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -a a_rates b_rates
printf '| round | side | releases/s (c=32) | p99 ms | other processes (c=32 run) |\n|---|---|---:|---:|---:|\n'
for ((i = 1; i <= rounds; i++)); do
    for side in base head; do
        read -r rate p99 others < <(run "$side" "$i")
        [[ -n "${rate:-}" ]] || { echo "$side round $i: no c=32 row (see $work/logs)" >&2; exit 1; }
        printf '| %d | %s | %s | %s | %s of %d CPUs |\n' "$i" "$([[ $side == base ]] && echo A || echo B)" \
            "$rate" "$p99" "$others" "$(nproc)"
        if [[ $side == base ]]; then a_rates+=("$rate"); else b_rates+=("$rate"); fi
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(median "${a_rates[@]}")
mb=$(median "${b_rates[@]}")
ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%.3f", b / a }')
echo
echo "| side | commit | median releases/s (c=32, $rounds runs) |"
echo "|---|---|---:|"
echo "| A (base) | $(git log -1 --format='%h %s' "$base_commit" | cut -c1-70) | $ma |"
echo "| B (HEAD) | $(git log -1 --format='%h %s' "$head_commit" | cut -c1-70) | $mb |"
echo "| B / A | | $ratio |"
echo
echo "load average (1/5/15 min) before: $load_before, after: $load_after ($(nproc) CPUs); logs in $work/logs"
awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }'
