#!/usr/bin/env bash
# Builds the Python package `nacre` (python/: PyO3 + maturin) and installs it into the models
# virtualenv of scripts/inputs.sh (NACRE_PYTHON), where tests/python/nacre_package.py and
# tests/python/triton_client.py --policy import it. Prints the wheel's path on stdout (progress
# on stderr):
#
#   scripts/python-package.sh          # then: "$NACRE_PYTHON" -c 'import nacre'
#
# - maturin (pinned below, from PyPI) is pip-installed into that virtualenv;
# - the wheel is built with the dev profile (the tests' profile: the dependencies' artifacts are
#   shared with `cargo test`, at opt-level 2 as the workspace sets for dependencies) into the
#   shared target directory (CARGO_TARGET_DIR, else <repo>/target), stripped, for the stable
#   ABI (abi3, CPython 3.9 and later), tagged `linux` (this machine's virtualenv, not PyPI);
# - pip reinstalls it without touching dependencies.
# Run it before `cargo test`: the tests cannot build the wheel themselves while cargo test holds
# the target directory's lock. Re-running with nothing changed takes seconds.
# A release build for another environment: `pip install ./python` (docs/python.md).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MATURIN=1.16.0
log() { echo "python-package.sh: $*" >&2; }

eval "$("$repo/scripts/inputs.sh")"
venv_bin=$(dirname "$NACRE_PYTHON")
if [ "$("$venv_bin/maturin" --version 2>/dev/null)" != "maturin $MATURIN" ]; then
    log "installing maturin $MATURIN (pip)"
    "$venv_bin/pip" install -q --disable-pip-version-check "maturin==$MATURIN" >&2
fi

target=${CARGO_TARGET_DIR:-$repo/target}
out=$target/wheels
mkdir -p "$out"
rm -f "$out"/nacre-*.whl
"$venv_bin/maturin" build --quiet --profile dev --strip --compatibility linux \
    --manifest-path "$repo/python/Cargo.toml" --target-dir "$target" \
    --interpreter "$NACRE_PYTHON" --out "$out" >&2
wheels=("$out"/nacre-*.whl)
[ -f "${wheels[0]}" ] && [ ${#wheels[@]} -eq 1 ] || { log "error: expected one wheel in $out"; exit 1; }
"$venv_bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "${wheels[0]}" >&2
"$NACRE_PYTHON" -c 'import nacre' >&2
echo "${wheels[0]}"
