#!/usr/bin/env bash
# Fetches and pins the outside inputs that image building, measurement and QEMU tests use, into
# one cache directory, and prints `NAME=PATH` lines for them (stdout; progress on stderr):
#
#   eval "$(scripts/inputs.sh)"      # exports NACRE_KERNEL, NACRE_KERNEL_MODULES, NACRE_TDVF, …
#
# - The guest kernel (images/kernel.pin: Debian trixie's 6.12 cloud kernel) and the TDX firmware
#   (images/tdvf.pin: trixie's `ovmf` 2025.02, OVMF.fd with CC measurement), each a .deb fetched
#   with curl by its pool path from $NACRE_DEBIAN_MIRROR (default https://deb.debian.org/debian),
#   checked against its pinned SHA-256 before it is unpacked under the cache (nothing is
#   installed, no apt source is added), and the file used (vmlinuz, OVMF.fd) checked again.
#   Debian removes superseded versions (a trixie point release replaces the kernel; backports
#   drop the old one first): then the download fails with 404 and the pins need refreshing, as
#   docs/measurements.md ("Pinned inputs") describes, or NACRE_DEBIAN_MIRROR can name a
#   snapshot.debian.org archive that still has the pinned files (the digests are checked all
#   the same).
# - Debian packages: qemu-system-x86, ovmf (bookworm's, NACRE_OVMF: its TDVF metadata is the
#   golden MRTD test's input), seabios (the sim backend's firmware), busybox-static, cpio (tests
#   read initrds back), curl and ca-certificates (the downloads above) — apt-get install when
#   missing.
# - sev-snp-measure 0.0.13 from PyPI in a virtualenv under the cache (the reference the SNP
#   digests are compared with).
# - onnx, onnxruntime and numpy, pinned, from PyPI in a second virtualenv (NACRE_PYTHON): the
#   demo's models are built with onnx and its outputs compared with onnxruntime's
#   (scripts/models.py); and in the same virtualenv NVIDIA's tritonclient (HTTP and gRPC), the
#   standard Open Inference Protocol client that tests/python/triton_client.py checks the
#   enclave with.
# Cache: $NACRE_INPUTS (default: <repo>/target/inputs). Re-running is cheap: everything is checked,
# nothing is fetched twice.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${NACRE_INPUTS:-$repo/target/inputs}
mkdir -p "$cache"
# Test binaries run this at once: one fills the cache while the others wait, then find it full.
exec 9>"$cache/.lock"
flock 9
log() { echo "inputs.sh: $*" >&2; }
die() {
    echo "inputs.sh: error: $*" >&2
    exit 1
}

# The pinned kernel (KERNEL_PKG, KERNEL_VERSION, KERNEL_DEB_PATH, KERNEL_DEB_SHA256,
# VMLINUZ_SHA256), shared with `nacre image build`'s default, and the pinned TDVF (TDVF_*).
# shellcheck source=../images/kernel.pin
. "$repo/images/kernel.pin"
# shellcheck source=../images/tdvf.pin
. "$repo/images/tdvf.pin"
mirror=${NACRE_DEBIAN_MIRROR:-https://deb.debian.org/debian}
mirror=${mirror%/}
SEV_SNP_MEASURE=0.0.13
# Wheels for CPython 3.11 (Debian 12) on x86_64; onnxruntime 1.20 is the first line built
# against numpy 2. tritonclient 2.73.0 takes numpy 2; its grpc extra needs protobuf 6 (< 7),
# which onnx 1.17 writes the same model bytes with. The clients' transports are pinned too,
# since they decide what goes on the wire: grpcio (HTTP/2, ALPN) and geventhttpclient (HTTP/1.1).
MODEL_PIP_PINS=(onnx==1.17.0 onnxruntime==1.20.1 numpy==2.2.6
    'tritonclient[http,grpc]==2.73.0' grpcio==1.85.3 protobuf==6.33.6 geventhttpclient==2.6.1)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
for p in qemu-system-x86 ovmf seabios busybox-static cpio curl ca-certificates; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2
    as_root apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi

# A .deb by its pool path, verified before anything reads it; prints its path in the cache.
fetch_deb() {
    local path=$1 sum=$2 out tmp got
    out=$cache/$(basename "$path")
    if [ ! -f "$out" ] || ! echo "$sum  $out" | sha256sum -c --status; then
        rm -f "$out"
        log "downloading $mirror/$path"
        tmp=$(mktemp "$out.XXXXXX")
        if ! curl -fsSL --retry 3 --proto '=https,http' -o "$tmp" "$mirror/$path" >&2; then
            rm -f "$tmp"
            die "$mirror/$path: download failed (a removed version? see docs/measurements.md, \"Pinned inputs\")"
        fi
        got=$(sha256sum "$tmp" | cut -d' ' -f1)
        if [ "$got" != "$sum" ]; then
            rm -f "$tmp"
            die "$mirror/$path: sha256 $got, pinned $sum"
        fi
        mv "$tmp" "$out"
    fi
    echo "$out"
}
# Unpacks a verified .deb into a directory of its own, once.
unpack() {
    local deb=$1 dir=$2
    if [ ! -f "$dir/.done" ]; then
        rm -rf "$dir"
        dpkg-deb -x "$deb" "$dir"
        touch "$dir/.done"
    fi
}

deb=$(fetch_deb "$KERNEL_DEB_PATH" "$KERNEL_DEB_SHA256")
kdir=$cache/kernel-$KERNEL_VERSION
kver=${KERNEL_PKG#linux-image-}
unpack "$deb" "$kdir"
vmlinuz=$kdir/boot/vmlinuz-$kver
echo "$VMLINUZ_SHA256  $vmlinuz" | sha256sum -c --status || die "$vmlinuz does not have the pinned sha256"
# Trixie's kernel packages install modules under /usr (merged /usr), bookworm's under /lib.
kmods=$kdir/usr/lib/modules/$kver
[ -d "$kmods" ] || kmods=$kdir/lib/modules/$kver
[ -d "$kmods" ] || die "$deb has no modules for $kver"

tdvf_deb=$(fetch_deb "$TDVF_DEB_PATH" "$TDVF_DEB_SHA256")
tdvf_dir=$cache/$TDVF_PKG-$TDVF_VERSION
unpack "$tdvf_deb" "$tdvf_dir"
tdvf=$tdvf_dir/$TDVF_FILE
echo "$TDVF_SHA256  $tdvf" | sha256sum -c --status || die "$tdvf does not have the pinned sha256"

# sev-snp-measure in its own virtualenv.
venv=$cache/venv-sev-snp-measure-$SEV_SNP_MEASURE
if [ ! -x "$venv/bin/sev-snp-measure" ]; then
    log "installing sev-snp-measure $SEV_SNP_MEASURE (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "sev-snp-measure==$SEV_SNP_MEASURE" >&2
fi

# onnx / onnxruntime / numpy / tritonclient in their own virtualenv, named by the pins (a new
# pin, a new venv).
models_venv=$cache/venv-models-$(printf '%s\n' "${MODEL_PIP_PINS[@]}" | sha256sum | cut -c1-12)
if [ ! -f "$models_venv/.done" ]; then
    log "installing ${MODEL_PIP_PINS[*]} (pip)"
    rm -rf "$models_venv"
    python3 -m venv "$models_venv" >&2
    "$models_venv/bin/pip" install -q --disable-pip-version-check "${MODEL_PIP_PINS[@]}" >&2
    "$models_venv/bin/python" -c 'import onnx, onnxruntime, numpy, tritonclient.http, tritonclient.grpc' >&2
    touch "$models_venv/.done"
fi

echo "NACRE_INPUTS=$cache"
echo "NACRE_KERNEL=$vmlinuz"
echo "NACRE_KERNEL_MODULES=$kmods"
# Bookworm's OVMF (2022.11): TDVF metadata but no CC measurement; the golden MRTD test's input.
echo "NACRE_OVMF=/usr/share/ovmf/OVMF.fd"
# The TDX firmware guests boot with (trixie's OVMF 2025.02, with TdTcg2Dxe: RTMR0-2 measured).
echo "NACRE_TDVF=$tdvf"
echo "NACRE_SEABIOS=/usr/share/seabios/bios-256k.bin"
echo "NACRE_SEV_SNP_MEASURE=$venv/bin/sev-snp-measure"
echo "NACRE_PYTHON=$models_venv/bin/python"
