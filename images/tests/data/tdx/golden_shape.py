"""One shape of golden.json from calculate-tdx-mrs's JSON output (see generate.sh)."""

import hashlib
import json
import sys

name, mem, with_initrd, cmdline, ramdisk_image, initrd_digest, out_path, patched_path = sys.argv[1:]
text = open(out_path).read()
decoder = json.JSONDecoder()
events, end = decoder.raw_decode(text)
summary, _ = decoder.raw_decode(text[end:].lstrip())
registers = {0: "mrtd", 1: "rtmr0", 2: "rtmr1", 3: "rtmr2"}
by_register = {n: [] for n in ("rtmr0", "rtmr1", "rtmr2")}
for e in events:
    reg = registers[e["index"]]
    if reg in by_register:
        by_register[reg].append({"description": e["description"], "digest": e["sha384"]})
values = {registers[s["index"]]: s["sha384"] for s in summary}
rtmr2 = values["rtmr2"]
if initrd_digest:
    # The tool stops at the load options; the EFI stub then measures the initrd (EV_EVENT_TAG,
    # SHA-384 of the file). Extend with OpenSSL's digest (computed by the caller with
    # `openssl dgst -sha384`).
    by_register["rtmr2"].append({"description": "RTMR2: initrd (openssl dgst -sha384)", "digest": initrd_digest})
    rtmr2 = hashlib.sha384(bytes.fromhex(rtmr2) + bytes.fromhex(initrd_digest)).hexdigest()
shape = {
    "name": name,
    "memory_bytes": int(mem, 0),
    "initrd": with_initrd == "1",
    "cmdline": cmdline,
    "ramdisk_image": int(ramdisk_image, 0),
    "patched_kernel_sha256": hashlib.sha256(open(patched_path, "rb").read()).hexdigest(),
    "mrtd": values["mrtd"],
    "rtmr0_with_placeholder_acpi": values["rtmr0"],
    "rtmr1": values["rtmr1"],
    "rtmr2": rtmr2,
    # calculate-tdx-mrs hard-codes its TD HOB for 4 GiB of RAM (td_hob.c); for any other size its
    # TD HOB event (and so its RTMR0) does not describe this shape and is not a reference.
    "tool_td_hob_applies": int(mem, 0) == 0x100000000,
    "events": by_register,
}
print(json.dumps(shape, indent=2), end="")
