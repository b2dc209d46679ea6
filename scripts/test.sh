#!/usr/bin/env bash
# The project's test command: formatting, clippy (warnings are errors), the Python package's wheel,
# every test of the workspace, the Kubernetes manifests' check,
# the end-to-end demo, then the supply-chain checks (scripts/audit.sh). Needs ../shared/vectors beside the checkout.
# Runs every step even after a failure, prints a summary, and exits non-zero if any step failed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ ! -d "$repo/../shared/vectors" ]; then
    echo "error: $repo/../shared/vectors is missing: the test vectors must sit beside the checkout (../shared)" >&2
    exit 1
fi

summary=()
failed=0
step() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "==> $name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        summary+=("ok    $name ($((SECONDS - start)) s)")
    else
        summary+=("FAIL  $name ($((SECONDS - start)) s, exit $rc)")
        failed=1
    fi
}

# cargo test's output stays on screen (CI reads its "test result:" lines); a copy is kept for the totals.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
# nacre-python is a PyO3 extension module: it is tested from Python (below), not as a test binary.
run_tests() { cargo test --workspace --exclude nacre-python --no-fail-fast 2>&1 | tee "$test_log"; }

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
# The test binaries first, then the Python package (python/) into the models virtualenv, for
# enclave/runtime/tests/serve/python.rs: built between the two because cargo test holds the target
# directory's lock while its tests run, and after the tests' build so that the wheel reuses its
# dependencies (only those whose features differ are built again).
step "cargo test --no-run" cargo test --workspace --exclude nacre-python --no-run
step "python package (scripts/python-package.sh)" scripts/python-package.sh
step "cargo test" run_tests
# The Kubernetes manifests (deploy/): rendered, validated strictly, references and privileges
# checked, and every Nacre container run as its pod would run it, its probes answered
# (docs/kubernetes.md). Uses the nacre binary of the test build.
step "kubernetes manifests (scripts/deploy-check.sh)" env NACRE="$repo/target/debug/nacre" scripts/deploy-check.sh
# The README's main command as an integration test: the whole flow in a sim CVM, outputs equal
# to onnxruntime's within 1e-5 (the script fails otherwise).
# It runs the nacre binary the test build made (cli/tests use it), so tract is not built twice.
step "end to end (scripts/demo.sh)" env NACRE_DEMO_PROFILE=dev NACRE_DEMO_NACRE="$repo/target/debug/nacre" scripts/demo.sh
# The demo built the enclave: audit.sh's `cargo audit bin` on it must run, not skip.
step "supply chain (scripts/audit.sh)" env NACRE_AUDIT_ENCLAVE_REQUIRED=1 scripts/audit.sh

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
# Totals over every "test result:" line (ignored tests counted as skipped).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$test_log"
exit "$failed"
