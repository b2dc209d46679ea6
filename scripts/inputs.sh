#!/usr/bin/env bash
# Fetches and pins the outside inputs that image building, measurement and QEMU tests use, into
# one cache directory, and prints `NAME=PATH` lines for them (stdout; progress on stderr):
#
#   eval "$(scripts/inputs.sh)"      # exports NACRE_KERNEL, NACRE_KERNEL_MODULES, NACRE_OVMF, …
#
# - Debian's cloud kernel, by exact package version and SHA-256 of the .deb and of vmlinuz
#   (apt-get download; nothing is installed on the host), unpacked under the cache.
# - Debian packages: qemu-system-x86, ovmf (TDVF metadata for the MRTD test), seabios
#   (the sim backend's firmware), busybox-static, cpio (tests read initrds back) — apt-get install
#   when missing.
# - sev-snp-measure 0.0.13 from PyPI in a virtualenv under the cache (the reference the SNP
#   digests are compared with).
# - onnx, onnxruntime and numpy, pinned, from PyPI in a second virtualenv (NACRE_PYTHON): the
#   demo's models are built with onnx and its outputs compared with onnxruntime's
#   (scripts/models.py).
# Cache: $NACRE_INPUTS (default: <repo>/target/inputs). Re-running is cheap: everything is checked,
# nothing is fetched twice.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${NACRE_INPUTS:-$repo/target/inputs}
mkdir -p "$cache"
log() { echo "inputs.sh: $*" >&2; }
die() {
    echo "inputs.sh: error: $*" >&2
    exit 1
}

# The pinned kernel (KERNEL_PKG, KERNEL_VERSION, KERNEL_DEB_SHA256, VMLINUZ_SHA256), shared with
# `nacre image build`'s default.
# shellcheck source=../images/kernel.pin
. "$repo/images/kernel.pin"
SEV_SNP_MEASURE=0.0.13
# Wheels for CPython 3.11 (Debian 12) on x86_64; onnxruntime 1.20 is the first line built
# against numpy 2.
MODEL_PIP_PINS=(onnx==1.17.0 onnxruntime==1.20.1 numpy==2.2.6)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_pkgs=()
for p in qemu-system-x86 ovmf seabios busybox-static cpio; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2 && apt_updated=1
    as_root apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi

# Kernel .deb, verified before it is unpacked.
deb=$cache/${KERNEL_PKG}_${KERNEL_VERSION}_amd64.deb
if [ ! -f "$deb" ] || ! echo "$KERNEL_DEB_SHA256  $deb" | sha256sum -c --status; then
    rm -f "$deb"
    log "downloading $KERNEL_PKG=$KERNEL_VERSION"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    chmod 755 "$tmp" # apt's _apt user downloads into it
    if ! (cd "$tmp" && apt-get download -q "$KERNEL_PKG=$KERNEL_VERSION" >&2); then
        [ "$apt_updated" -eq 1 ] || { as_root apt-get update -q >&2 && apt_updated=1; }
        (cd "$tmp" && apt-get download -q "$KERNEL_PKG=$KERNEL_VERSION" >&2)
    fi
    got=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
    [ "$got" = "$KERNEL_DEB_SHA256" ] || die "$KERNEL_PKG $KERNEL_VERSION: sha256 $got, expected $KERNEL_DEB_SHA256"
    mv "$tmp"/*.deb "$deb"
    rm -rf "$tmp"
fi
kdir=$cache/kernel-$KERNEL_VERSION
kver=${KERNEL_PKG#linux-image-}
if [ ! -f "$kdir/.done" ]; then
    rm -rf "$kdir"
    dpkg-deb -x "$deb" "$kdir"
    touch "$kdir/.done"
fi
vmlinuz=$kdir/boot/vmlinuz-$kver
echo "$VMLINUZ_SHA256  $vmlinuz" | sha256sum -c --status || die "$vmlinuz does not have the pinned sha256"

# sev-snp-measure in its own virtualenv.
venv=$cache/venv-sev-snp-measure-$SEV_SNP_MEASURE
if [ ! -x "$venv/bin/sev-snp-measure" ]; then
    log "installing sev-snp-measure $SEV_SNP_MEASURE (pip)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "sev-snp-measure==$SEV_SNP_MEASURE" >&2
fi

# onnx / onnxruntime / numpy in their own virtualenv, named by the pins (a new pin, a new venv).
models_venv=$cache/venv-models-$(printf '%s\n' "${MODEL_PIP_PINS[@]}" | sha256sum | cut -c1-12)
if [ ! -f "$models_venv/.done" ]; then
    log "installing ${MODEL_PIP_PINS[*]} (pip)"
    rm -rf "$models_venv"
    python3 -m venv "$models_venv" >&2
    "$models_venv/bin/pip" install -q --disable-pip-version-check "${MODEL_PIP_PINS[@]}" >&2
    "$models_venv/bin/python" -c 'import onnx, onnxruntime, numpy' >&2
    touch "$models_venv/.done"
fi

echo "NACRE_INPUTS=$cache"
echo "NACRE_KERNEL=$vmlinuz"
echo "NACRE_KERNEL_MODULES=$kdir/lib/modules/$kver"
echo "NACRE_OVMF=/usr/share/ovmf/OVMF.fd"
echo "NACRE_SEABIOS=/usr/share/seabios/bios-256k.bin"
echo "NACRE_SEV_SNP_MEASURE=$venv/bin/sev-snp-measure"
echo "NACRE_PYTHON=$models_venv/bin/python"
