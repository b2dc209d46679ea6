#!/usr/bin/env bash
# The serving benchmarks in one command, printed as markdown tables:
#   1. inference at batch 1 through the enclave (the serving stack as a host process, sim
#      attester on the secure processor's socket: no TCG in the figure), on the fraud MLP and
#      the small CNN: JSON, binary and gRPC from kept-alive Rust clients and tritonclient
#      (direct and through `nacre proxy`) at 1, 4 and 16 connections, the HTTPS floor (a
#      health check), beside tract (generic and batch-1 plans) and onnxruntime in-process (one
#      thread); where the time goes (tract's and onnxruntime's operators, the server's
#      statistics); dynamic batching on and off at 16 connections;
#   2. the attested TLS handshake and attested session vs a plain TLS 1.3 handshake;
#   3. cold start of the sim CVM under QEMU TCG, stage by stage (one run of scripts/demo.sh).
# Figures depend on load: the load average is printed before and after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/inputs.sh)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"

models=()
for m in fraud-mlp small-cnn; do
    "$NACRE_PYTHON" scripts/models.py make "$m" "$work/$m.onnx"
    "$NACRE_PYTHON" scripts/models.py input "$m" "$work/$m.json" --batch 1
    models+=("$m=$work/$m.onnx")
done
NACRE_PYTHON=$NACRE_PYTHON NACRE_BENCH_MODELS=$(IFS=,; echo "${models[*]}") cargo bench -q -p nacre-enclave --bench serving 2>/dev/null \
    | tee "$work/serving.md"

echo
echo "| onnxruntime in-process, 1 thread (batch 1) | p50 µs | p99 µs | runs/s |"
echo "|---|---:|---:|---:|"
for m in fraud-mlp small-cnn; do
    "$NACRE_PYTHON" scripts/models.py time "$work/$m.onnx" "$work/$m.json" --iters 2000 \
        | "$NACRE_PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print("| %s: onnxruntime | %.1f | %.1f | %.0f |" % (sys.argv[1], d["p50_us"], d["p99_us"], d["per_sec"]))' "$m"
done

echo
echo "| onnxruntime, µs per run by operator type (its profiler, 1 thread) | by operator |"
echo "|---|---|"
for m in fraud-mlp small-cnn; do
    "$NACRE_PYTHON" scripts/models.py profile "$work/$m.onnx" "$work/$m.json" --iters 1000 \
        | "$NACRE_PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print("| %s | %s |" % (sys.argv[1], ", ".join("%s %.1f" % kv for kv in d.items())))' "$m"
done

echo
echo "cold start (scripts/demo.sh, sim CVM under QEMU 7.2 TCG):"
NACRE_DEMO_PROFILE=${NACRE_DEMO_PROFILE:-dev} scripts/demo.sh >"$work/demo.log" 2>&1 || { tail -40 "$work/demo.log"; exit 1; }
"$NACRE_PYTHON" - "$work/demo.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def find(pat):
    m = re.search(pat, text)
    return float(m.group(1)) if m else None
init = find(r"nacre-init: start at ([0-9.]+)s")
enclave = find(r"starting nacre-enclave at ([0-9.]+)s")
stages = dict((k, float(v)) for k, v in re.findall(r"NACRE-ENCLAVE-STAGE (\S+) ([0-9.]+)", text))
guest = find(r"guest: boot, attest, key release, unseal, serve\s+([0-9.]+)\s*$")
client = find(r"client: nacre verify, nacre infer\s+([0-9.]+)\s*$")
print("| stage | at (s, guest uptime) | step (s) |")
print("|---|---:|---:|")
rows = [("QEMU start + firmware + kernel → /init", init, init)]
if enclave is not None and init is not None:
    rows.append(("init (modules, network) → nacre-enclave", enclave, enclave - init))
prev = 0.0
for name, label in [("attested", "attester answers (evidence)"), ("key-released", "key released (challenge, evidence, release)"),
                    ("unsealed", "unsealed"), ("model-ready", "model ready (tract load + optimize)"),
                    ("certificate", "attested certificate → serving")]:
    if name in stages and enclave is not None:
        rows.append((label, enclave + stages[name], stages[name] - prev))
        prev = stages[name]
for label, at, step in rows:
    print(f"| {label} | {at:.2f} | {step:.2f} |")
if guest is not None:
    print(f"| host: launch → serving (as the demo waits for it) | | {guest:.2f} |")
if client is not None:
    print(f"| client: verify + first inference (two attested sessions) | | {client:.2f} |")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
