#!/usr/bin/env bash
# Rebuilds the enclave twice from this commit, in two different directories with two different
# CARGO_HOMEs (each its own target directory, nothing shared but the crate sources' bytes), then
# builds the same guest image around each binary, and compares byte for byte: the enclave, the
# initrd, the SBOM and the signed reference values (every measurement: sim, SNP, TDX MRTD and
# RTMRs). The check that anyone can rebuild the measured enclave and get the published values.
# Too slow for CI (two cold release builds, ~10 min each here); CI instead checks that no build
# path is left in the binary (scripts/build-enclave.sh).
#
# The image's other inputs (kernel, modules, firmware, sealed model, service CA, signing key) are
# made once and shared: they are inputs, not build outputs. Ed25519 signatures are deterministic,
# so equal reference values give an equal signature.
#
#   scripts/repro.sh            # prints every file's SHA-256 on both sides; exit 0 only if equal
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
work=$(mktemp -d /tmp/nacre-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo_home=${CARGO_HOME:-$HOME/.cargo}
commit=$(git rev-parse HEAD)

# --- the image's shared inputs ----------------------------------------------------------------
eval "$(scripts/inputs.sh)"
# The host tool's own bytes do not matter here (it is not measured): any build of this
# commit will do ($NACRE, or a debug build here).
if [ -z "${NACRE:-}" ]; then
    cargo build -q -p nacre-cli
    NACRE=$repo/target/debug/nacre
fi
nacre=$NACRE
in=$work/inputs
mkdir -p "$in"
"$NACRE_PYTHON" scripts/models.py make fraud-mlp "$in/fraud-mlp.onnx"
"$nacre" seal "$in/fraud-mlp.onnx" --out "$in/fraud-mlp.sealed" --key-out "$in/fraud-mlp.key" >/dev/null
"$nacre" image keygen --out "$in/image-signing.key" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$in/ca.key" \
    -out "$in/ca.pem" -subj /CN=repro-ca -days 1 2>/dev/null
(umask 077 && head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' >"$in/inference.token")
rtmr0=$(printf '5a%.0s' $(seq 48))

declare -A sums
files=(nacre-enclave initrd vmlinuz cmdline sbom.cdx.json reference-values.json reference-values.sig)
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
    image=$work/$side/image
    "$nacre" image build --out "$image" --name repro-guest \
        --inference-token-file "$in/inference.token" \
        --kernel "$NACRE_KERNEL" --modules "$NACRE_KERNEL_MODULES" --enclave "$guest" \
        --service-url https://10.0.2.100:8443 --service-ca "$in/ca.pem" \
        --sealed "$in/fraud-mlp.sealed" --tee sim \
        --sim-firmware "$NACRE_SEABIOS" --signing-key "$in/image-signing.key" \
        --tdx-firmware "$NACRE_TDVF" --tdx-launch "memory_mib=1024,vcpus=1,qemu=10.1.0,rtmr0=$rtmr0" \
        >/dev/null 2>"$work/$side/image.log" || { cat "$work/$side/image.log" >&2; exit 1; }
    cp "$guest" "$image/nacre-enclave"
    for f in "${files[@]}"; do
        [ -f "$image/$f" ] || { echo "repro.sh: the image has no $f" >&2; exit 1; }
        sums[$side/$f]=$(sha256sum "$image/$f" | cut -d' ' -f1)
    done
done

status=0
printf '%-24s %-64s %s\n' file "sha256 (a)" "b"
for f in "${files[@]}"; do
    same=same
    [ "${sums[a/$f]}" = "${sums[b/$f]}" ] || { same="DIFFERS: ${sums[b/$f]}"; status=1; }
    printf '%-24s %s %s\n' "$f" "${sums[a/$f]}" "$same"
done
"$NACRE_PYTHON" -c '
import json, sys
for m in json.load(open(sys.argv[1]))["measurements"]:
    print("measurement %-4s %s" % (m["tee"], m["measurement"]))' "$work/a/image/reference-values.json"
if ((status)); then
    echo "repro.sh: the two builds differ" >&2
    exit 1
fi
echo "repro.sh: the enclave and its image rebuilt bit for bit"
