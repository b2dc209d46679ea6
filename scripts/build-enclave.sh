#!/usr/bin/env bash
# Builds the static `nacre-enclave` for the guest image (glibc, +crt-static, release) in its own
# target directory, so the host build's cache is untouched, and prints the binary's path.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${NACRE_ENCLAVE_TARGET_DIR:-$repo/target/enclave}
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --manifest-path "$repo/Cargo.toml" \
    -p nacre-enclave --release --target x86_64-unknown-linux-gnu --target-dir "$target" >&2
bin=$target/x86_64-unknown-linux-gnu/release/nacre-enclave
if readelf -l "$bin" | grep -q INTERP; then
    echo "build-enclave.sh: $bin is not static" >&2
    exit 1
fi
echo "$bin"
