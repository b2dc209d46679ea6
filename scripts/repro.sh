#!/usr/bin/env bash
# Rebuilds the enclave twice from this commit, in two different directories with two different
# CARGO_HOMEs (each its own target directory, nothing shared but the crate sources' bytes), and
# compares the guest binaries byte for byte: the check that anyone can rebuild the measured
# enclave. Too slow for CI (two cold release builds, ~10 min each here); CI instead checks that
# no build path is left in the binary (scripts/build-enclave.sh).
#
#   scripts/repro.sh            # prints both SHA-256s; exit 0 only if they are equal
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/nacre-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo_home=${CARGO_HOME:-$HOME/.cargo}
commit=$(git -C "$repo" rev-parse HEAD)
declare -A sums
for side in a b; do
    dir=$work/$side/checkout-$side # different depths and names on purpose
    git clone -q "$repo" "$dir"
    git -C "$dir" checkout -q "$commit"
    # Another CARGO_HOME holding the same crate sources (hard links: no download, no copy).
    home=$work/$side/cargo-home-$side
    mkdir -p "$home"
    cp -al "$cargo_home/registry" "$home/registry"
    [ -d "$cargo_home/git" ] && cp -al "$cargo_home/git" "$home/git"
    echo "repro.sh: building in $dir (CARGO_HOME=$home)" >&2
    guest=$(CARGO_HOME=$home NACRE_ENCLAVE_TARGET_DIR=$dir/target/enclave "$dir/scripts/build-enclave.sh")
    sums[$side]=$(sha256sum "$guest" | cut -d' ' -f1)
    echo "$side: ${sums[$side]}  $guest"
done
if [ "${sums[a]}" = "${sums[b]}" ]; then
    echo "repro.sh: the enclave rebuilt bit for bit (${sums[a]})"
else
    echo "repro.sh: the two builds differ" >&2
    exit 1
fi
