#!/usr/bin/env bash
# Regenerates golden.json: TDX MRTD/RTMR values for the shapes below, computed by
# Fraunhofer-AISEC/measured-boot-tools `calculate-tdx-mrs` (an independent C implementation)
# and, for the one event that tool does not model (the initrd in RTMR2), by the OpenSSL CLI.
# CI cannot rebuild the C tool; this script records how the committed values were produced.
#
#   images/tests/data/tdx/generate.sh TOOL_DIR KERNEL OVMF > golden.json
#
# TOOL_DIR: a work tree of github.com/Fraunhofer-AISEC/measured-boot-tools at
#           084313fb9d2243da7065b51e7e0a487bf1678b22, built with `make -C calculate-tdx-mrs`.
# KERNEL:   vmlinuz-6.12.117+deb13-cloud-amd64 (sha256 ed8f0dbd…87b0, images/kernel.pin).
# OVMF:     Debian trixie ovmf 2025.02-8+deb13u1 /usr/share/ovmf/OVMF.fd (sha256 14954040…76db).
set -euo pipefail
tool=$1/calculate-tdx-mrs/calculate-tdx-mrs
kernel=$2
ovmf=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The synthetic initrd: byte i = ((i * 7) ^ (i >> 9)) & 0xff, 0x100000 + 1234 bytes (not a page
# multiple, so QEMU's rounding of the initrd address down to 4 KiB is exercised).
python3 -c '
import sys
n = 0x100000 + 1234
sys.stdout.buffer.write(bytes(((i * 7) ^ (i >> 9)) & 0xFF for i in range(n)))' >"$work/initrd"
# Placeholder ACPI blobs: this machine cannot produce QEMU's; the test feeds our code their
# SHA-384 as the ACPI event digests.
printf 'nacre tdx golden: etc/table-loader placeholder' >"$work/table-loader"
printf 'nacre tdx golden: etc/acpi/rsdp placeholder' >"$work/rsdp"
printf 'nacre tdx golden: etc/acpi/tables placeholder' >"$work/tables"

cmdline_a='console=ttyS0 panic=-1 quiet'
cmdline_b='console=ttyS0 panic=-1 quiet nacre.tee=tdx nacre.debug=0'

# name memory_bytes initrd(0/1) cmdline
shapes=(
    "1g-initrd-a 0x40000000 1 $cmdline_a"
    "1g-noinitrd-a 0x40000000 0 $cmdline_a"
    "2g-initrd-b 0x80000000 1 $cmdline_b"
    "2.5g-initrd-a 0xa0000000 1 $cmdline_a"
    "4g-initrd-a 0x100000000 1 $cmdline_a"
    "4g-noinitrd-b 0x100000000 0 $cmdline_b"
    "8g-initrd-b 0x200000000 1 $cmdline_b"
)

initrd_size=$(stat -c %s "$work/initrd")
{
    echo '['
    first=1
    for shape in "${shapes[@]}"; do
        read -r name mem with_initrd cmdline <<<"$shape"
        # QEMU's initrd placement (hw/i386/x86-common.c x86_load_linux, q35 memory split in
        # pc_q35.c): below_4g = mem if mem < 0xb0000000 else 0x80000000, capped at mem;
        # initrd_max = below_4g - acpi_data_size (0x28000) - 1 (the kernel sets
        # XLF_CAN_BE_LOADED_ABOVE_4G, so its own limit is 4 GiB); addr = (max - size) & ~0xfff.
        if ((mem >= 0xb0000000)); then low=0x80000000; else low=$((mem)); fi
        if [ "$with_initrd" = 1 ]; then
            image=$(((low - 0x28000 - 1 - initrd_size) & ~0xfff))
            size=$initrd_size
            printf '%s initrd=initrd' "$cmdline" >"$work/cmdline"
        else
            image=0
            size=0
            printf '%s' "$cmdline" >"$work/cmdline"
        fi
        sed -e "s/^PeCoffRamdiskImage = .*/PeCoffRamdiskImage = $(printf '0x%x' "$image")/" \
            -e "s/^PeCoffRamdiskSize = .*/PeCoffRamdiskSize = $(printf '0x%x' "$size")/" \
            "$1/calculate-tdx-mrs/configs/default.cfg" >"$work/kernel.cfg"
        "$tool" --mrs 0,1,2,3 --ovmf "$ovmf" --kernel "$kernel" --config "$work/kernel.cfg" \
            --cmdline "$work/cmdline" --acpirsdp "$work/rsdp" --acpitables "$work/tables" \
            --tableloader "$work/table-loader" --qemuversion 9.2.0 --eventlog --summary \
            --format json --dumpkernel "$work/patched" >"$work/out.json"
        initrd_digest=
        if [ "$with_initrd" = 1 ]; then
            initrd_digest=$(openssl dgst -sha384 -r "$work/initrd" | cut -d' ' -f1)
        fi
        [ $first = 1 ] || echo ','
        first=0
        python3 "$here/golden_shape.py" "$name" "$mem" "$with_initrd" "$cmdline" \
            "$(printf '0x%x' "$image")" "$initrd_digest" "$work/out.json" "$work/patched"
    done
    echo ']'
} 
