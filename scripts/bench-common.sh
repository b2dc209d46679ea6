# Sourced by the bench scripts (no arguments, so that `shift` acts on the caller's): runs from the
# repository root, takes `--table-only` (print the last run's table) and a `--` separator, and sets
# $run, $target (cargo's target directory) and $logs ($target/bench-logs, created).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run=1
if [[ "${1:-}" == "--table-only" ]]; then
    run=0
    shift
fi
if [[ "${1:-}" == "--" ]]; then shift; fi
target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
logs="$target/bench-logs"
mkdir -p "$logs"
