#!/usr/bin/env bash
# Builds the static `nacre-enclave` for the guest image (glibc, +crt-static, release) in its own
# target directory, so the host build's cache is untouched, and prints the path of a copy without
# DWARF debug information (the release profile's line tables are three quarters of the binary; the guest
# has no use for them, and every byte of the initrd is loaded and measured at each launch).
# `strip` is deterministic: the same build gives the same bytes, so the same measurement.
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
guest=$bin-guest
tmp=$(mktemp "$guest.XXXXXX") # tests may run this script concurrently: each renames its own copy
strip --strip-debug -o "$tmp" "$bin"
chmod 755 "$tmp"
mv "$tmp" "$guest"
echo "$guest"
