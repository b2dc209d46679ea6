#!/usr/bin/env bash
# Builds the static `nacre-enclave` for the guest image (glibc, +crt-static, release) in its own
# target directory, so the host build's cache is untouched, and prints the path of a copy without
# DWARF debug information or symbols (the release profile's line tables are three quarters of the
# binary; the guest has no use for them, and every byte of the initrd is loaded and measured at
# each launch). Panic messages keep their file and line: those are in the code, not the symbols.
# `strip` is deterministic: the same build gives the same bytes, so the same measurement.
#
# Paths of this machine stay out of the binary (panic locations, debug strings): the checkout,
# the target directory and CARGO_HOME are remapped to fixed names, so that the bytes do not
# depend on where the build ran, and the build fails if any of them still appears. The lock
# file is used as it is (--locked).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The pinned compiler (images/toolchain.pin): another one builds other bytes, so a measurement no
# published reference value has. NACRE_ALLOW_OTHER_TOOLCHAIN=1 builds anyway, for development.
# shellcheck source=../images/toolchain.pin
. "$repo/images/toolchain.pin"
commit=$("${RUSTC:-rustc}" -vV | sed -n 's/^commit-hash: //p')
if [ "$commit" != "$RUSTC_COMMIT" ]; then
    version=$("${RUSTC:-rustc}" -V 2>/dev/null || echo "${RUSTC:-rustc} (no version)")
    msg="$version is not the pinned $RUSTC_VERSION ($RUSTC_COMMIT, images/toolchain.pin): the enclave's bytes, and so its measurement, would differ from a pinned build"
    if [ "${NACRE_ALLOW_OTHER_TOOLCHAIN:-}" != 1 ]; then
        echo "build-enclave.sh: error: $msg (NACRE_ALLOW_OTHER_TOOLCHAIN=1 builds anyway)" >&2
        exit 1
    fi
    echo "build-enclave.sh: warning: $msg" >&2
fi
target=${NACRE_ENCLAVE_TARGET_DIR:-$repo/target/enclave}
mkdir -p "$target"
target=$(cd "$target" && pwd)
cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)
# The last matching prefix wins: the target directory may lie inside the checkout.
remap="--remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$repo=/nacre --remap-path-prefix=$target=/target"
RUSTFLAGS="-C target-feature=+crt-static $remap" cargo build -q --locked --manifest-path "$repo/Cargo.toml" \
    -p nacre-enclave --release --target x86_64-unknown-linux-gnu --target-dir "$target" >&2
bin=$target/x86_64-unknown-linux-gnu/release/nacre-enclave
if readelf -l "$bin" | grep -q INTERP; then
    echo "build-enclave.sh: $bin is not static" >&2
    exit 1
fi
guest=$bin-guest
tmp=$(mktemp "$guest.XXXXXX") # tests may run this script concurrently: each renames its own copy
# Symbols go too: LLVM names promoted local symbols with a hash (`….llvm.<n>`) that differs
# between build directories although the code is the same, and the linker's build ID hashes them.
# `.dep-v0` (the dependency list enclave/runtime/build.rs embeds, for `cargo audit bin` and the
# image's SBOM) is kept, and must be there.
strip --strip-all --remove-section=.note.gnu.build-id --keep-section=.dep-v0 -o "$tmp" "$bin"
if ! readelf -S "$tmp" | grep -qF ' .dep-v0 '; then
    rm -f "$tmp"
    echo "build-enclave.sh: the guest binary has no .dep-v0 dependency list" >&2
    exit 1
fi
# What the guest gets must not depend on where it was built. (The unstripped binary still has
# them in the DWARF of C and assembly objects, which cc compiles without the remapping.)
for path in "$repo" "$target" "$cargo_home"; do
    if grep -qaF "$path/" "$tmp"; then
        rm -f "$tmp"
        echo "build-enclave.sh: the guest binary contains the build path $path: it would not rebuild bit for bit elsewhere" >&2
        exit 1
    fi
done
chmod 755 "$tmp"
mv "$tmp" "$guest"
echo "$guest"
