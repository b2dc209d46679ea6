#!/usr/bin/env bash
# The main command: Nacre end to end on one machine, with the simulated TEE.
#
#   model owner   builds a fraud-scoring MLP with `onnx`, seals it, registers its key with the
#                 attestation service (SQLite) under a release policy, builds the guest image
#                 for that sealed model and imports the image's signed reference values;
#   host          the host agent launches a sim CVM under QEMU with the sealed model as a disk;
#   guest         nacre-enclave attests, gets the key released, unseals, serves (attested TLS);
#   client        `nacre verify` checks the enclave, `nacre infer` sends one request with the
#                 bearer token the image requires (one without it, or with another, gets 401);
#   reference     onnxruntime runs the same model on the same input, printed side by side.
#
# Everything runs in a temporary directory and is stopped on exit, also after a failure or ^C.
# Installs what a fresh Debian 12 machine lacks (scripts/inputs.sh: QEMU, SeaBIOS, busybox-static,
# the pinned kernel, onnx/onnxruntime in a virtualenv; build-essential, pkg-config, libssl-dev).
#
# Environment: NACRE_DEMO_KEEP=1 keeps the work directory; NACRE_DEMO_TIMEOUT (seconds, default
# 240) bounds the wait for the enclave; NACRE_DEMO_BATCH (default 4) rows in the request.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
say() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    echo "demo.sh: error: $*" >&2
    exit 1
}

# --- timings: one row per stage, printed at the end -------------------------------------------
stage_names=()
stage_secs=()
stage_start=0
stage_name=""
now_ms() { date +%s%3N; }
stage() {
    stage_end
    stage_name=$1
    stage_start=$(now_ms)
    say "$1"
}
stage_end() {
    if [ -n "$stage_name" ]; then
        stage_names+=("$stage_name")
        stage_secs+=("$(awk -v ms=$(($(now_ms) - stage_start)) 'BEGIN { printf "%.1f", ms / 1000 }')")
        stage_name=""
    fi
}
timings() {
    stage_end
    [ ${#stage_names[@]} -gt 0 ] || return 0
    printf '\n%-58s %8s\n' "stage" "seconds"
    local i
    for i in "${!stage_names[@]}"; do
        printf '%-58s %8s\n' "${stage_names[$i]}" "${stage_secs[$i]}"
    done
}

# --- prerequisites ----------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is required (Rust 1.95: https://rustup.rs)"
stage "inputs: Debian packages, pinned kernel, Python venv (scripts/inputs.sh)"
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev) # the sev crate's measurement code
if [ ${#need[@]} -gt 0 ]; then
    note "installing ${need[*]}"
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2
    as_root apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
eval "$(scripts/inputs.sh)"
for v in NACRE_KERNEL NACRE_KERNEL_MODULES NACRE_SEABIOS NACRE_PYTHON; do
    [ -n "${!v:-}" ] || die "scripts/inputs.sh gave no $v"
done

# NACRE_DEMO_PROFILE=dev (the test suite) reuses the debug build `cargo test` made; dependencies
# are optimised in that profile too (Cargo.toml), so the flow is the same, only built faster.
profile=${NACRE_DEMO_PROFILE:-release}
stage "build: nacre ($profile) and the static nacre-enclave"
if [ -n "${NACRE_DEMO_NACRE:-}" ]; then
    # scripts/test.sh hands over the binary `cargo test` built: `cargo build -p nacre-cli` alone
    # resolves other build-script features (tract-linalg's templates) and would rebuild tract.
    [ -x "$NACRE_DEMO_NACRE" ] || die "NACRE_DEMO_NACRE=$NACRE_DEMO_NACRE is not an executable"
    NACRE=$NACRE_DEMO_NACRE
elif [ "$profile" = dev ]; then
    cargo build -q -p nacre-cli
    NACRE=$repo/target/debug/nacre
else
    cargo build -q --release -p nacre-cli
    NACRE=$repo/target/release/nacre
fi
ENCLAVE=$(scripts/build-enclave.sh)
note "nacre         $NACRE"
note "nacre-enclave $ENCLAVE"

# --- the work directory and everything started in it, stopped on exit --------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nacre-demo.XXXXXX")
# RTMR0 of a reference TD of the demo's TDX shape (see "image" below); a stated stand-in otherwise.
TDX_RTMR0=${NACRE_TDX_RTMR0:-$(printf '5a%.0s' $(seq 48))}
mkdir -p "$WORK/logs"
service_pid=""
agent_pid=""
witness_pid=""
VM=fraud
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        # The agent leaves VMs running when it stops (a restarted agent adopts them): stop ours
        # first, through the agent (QMP quit, SIGKILL after 10 s).
        "$NACRE" host stop --state "$WORK/host" "$VM" >/dev/null 2>&1
        kill -TERM "$agent_pid" 2>/dev/null
        wait "$agent_pid" 2>/dev/null
    fi
    # Whatever the agent could not stop: its QEMU, by the pid it recorded.
    local qpid
    qpid=$(cat "$WORK/host/vms/$VM/qemu.pid" 2>/dev/null || true)
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null && grep -q "nacre-$VM" "/proc/$qpid/cmdline" 2>/dev/null; then
        kill -KILL "$qpid" 2>/dev/null
    fi
    for pid in "$service_pid" "$witness_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    timings
    if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
        echo
        echo "demo.sh: interrupted; everything it started is stopped"
    elif [ "$rc" -ne 0 ]; then
        echo
        echo "demo.sh: FAILED (exit $rc). Logs:"
        for f in "$WORK"/logs/*.log "$WORK/host/vms/$VM/console.log"; do
            [ -s "$f" ] || continue
            echo "--- $f (last 25 lines)"
            tail -n 25 "$f"
        done
    fi
    if [ "${NACRE_DEMO_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports: the attestation service, the enclave's forwarded serving port, the witness.
read -r SVC_PORT SERVE_PORT WITNESS_PORT < <("$NACRE_PYTHON" -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
SVC_URL=https://127.0.0.1:$SVC_PORT
SERVE_URL=https://127.0.0.1:$SERVE_PORT

# --- model owner: the model and a request -----------------------------------------------------
stage "model: fraud-scoring MLP (30 features -> 64 -> 32 -> 1) with onnx"
"$NACRE_PYTHON" scripts/models.py make fraud-mlp "$WORK/fraud-mlp.onnx"
"$NACRE_PYTHON" scripts/models.py input fraud-mlp "$WORK/request.json" --batch "${NACRE_DEMO_BATCH:-4}"
# The model identity (docs/sealed-format.md), from the plaintext alone: sealing puts the same
# value in the header, the image measures it, and the client policy pins it.
MODEL_IDENTITY=$("$NACRE" model digest --hex "$WORK/fraud-mlp.onnx")
note "fraud-mlp.onnx $(stat -c %s "$WORK/fraud-mlp.onnx") bytes, model identity $MODEL_IDENTITY"

# --- model owner: the guard manifest (docs/guard-manifest.md) -----------------------------------
stage "guard: nacre guard fit on training rows, self-tests from onnxruntime"
# Reference statistics from 20,000 training rows, and four self-tests whose expected outputs
# come from onnxruntime (tract, which serves, is what they test). The manifest is sealed into
# the model's header; its SHA-256 is bound into every attested certificate.
"$NACRE_PYTHON" scripts/models.py train "$WORK/train.npy" --rows 20000
"$NACRE_PYTHON" scripts/models.py selftests "$WORK/fraud-mlp.onnx" "$WORK/selftests.json"
GUARD_DIGEST=$("$NACRE" guard fit "$WORK/fraud-mlp.onnx" --data "$WORK/train.npy" \
    --self-tests "$WORK/selftests.json" --extraction-history 500 --out "$WORK/guard.json" 2>"$WORK/logs/guard-fit.txt")
sed 's/^/    /' "$WORK/logs/guard-fit.txt"
# Guard part 2: the PRADA extraction detector (fit calibrated its delta on the training rows
# replayed as clients), and, written by hand, a query budget per token and KernelSHAP
# explanations against 16 training rows as the background. The digest is over the final bytes.
"$NACRE_PYTHON" - "$WORK/guard.json" "$WORK/train.npy" <<'PY'
import json, sys
import numpy as np
m = json.load(open(sys.argv[1]))
m["budgets"] = {"queries": 200000, "window_seconds": 3600}
# Sized for the sim CVM: QEMU's TCG emulates the guest's vector loops ~1,000x slower than
# hardware. At the default 2,048 coalitions an explanation takes ~25 ms natively but 20-30 s
# here, past the client's 30 s request timeout at times; 256 coalitions take an eighth of that.
m["explanation"] = {"max_coalitions": 256, "deadline_ms": 20000,
                    "background": np.load(sys.argv[2])[:16].astype(float).round(4).tolist()}
# Guard part 3: private drift monitoring. Windows of 500 rows at ε = 2 each, 48 a day: demo-sized
# (docs/monitoring.md: production wants ~10,000 rows at ε = 1).
m["monitoring"] = {"window": {"requests": 500}, "min_window": 250, "epsilon_per_window": 2.0,
                   "epsilon_per_day": 48.0, "mechanism": "discrete_laplace", "false_alarm_rate": 0.01}
json.dump(m, open(sys.argv[1], "w"))
PY
"$NACRE" guard check "$WORK/guard.json" --model "$WORK/fraud-mlp.onnx" >"$WORK/logs/guard-check.txt"
GUARD_DIGEST=$(sha256sum "$WORK/guard.json" | cut -d' ' -f1)
note "guard manifest $GUARD_DIGEST (budgets, extraction detector, explanations, private monitoring added)"

# --- attestation service ----------------------------------------------------------------------
stage "attestation service: sim CA, init (SQLite), image signer, serve"
# INSECURE by design: the simulated secure processor's key hierarchy, trusted explicitly by the
# service and the client; the host agent signs the sim guests' reports with it.
"$NACRE" sim ca init --out "$WORK/sim" >/dev/null
# The guest reaches the service at 10.0.2.100:8443, through QEMU's guestfwd and the host agent's
# `nacre host relay` to 127.0.0.1:SVC_PORT: the certificate must name that address too.
"$NACRE" attestation init "$WORK/svc" --listen "127.0.0.1:$SVC_PORT" --san 10.0.2.100 \
    --insecure-sim-root "$WORK/sim/ark.pem" >"$WORK/logs/init.txt"
SIGNER=$("$NACRE" image keygen --out "$WORK/image-signing.key")
# Trust the image signer: reference values it signs can be imported (root keys go first).
{
    echo "trusted_image_signers = [\"$SIGNER\"]"
    cat "$WORK/svc/config.toml"
} >"$WORK/svc/config.new" && mv "$WORK/svc/config.new" "$WORK/svc/config.toml"
# The key-release transparency log (docs/transparency-log.md): its key, and an independent
# witness (in production under another operator) that cosigns only checkpoints it can prove
# consistent with what it cosigned before; the service pushes to it in the background.
LOG_KEY=$(tail -n 1 "$WORK/logs/init.txt")
"$NACRE" witness init "$WORK/witness" --name witness.demo/w1 --listen "127.0.0.1:$WITNESS_PORT" \
    --log "$LOG_KEY" >"$WORK/logs/witness-init.txt"
WITNESS_KEY=$(tail -n 1 "$WORK/logs/witness-init.txt")
"$NACRE" witness serve --config "$WORK/witness/witness.toml" >"$WORK/logs/witness.log" 2>&1 &
witness_pid=$!
printf '\n[[witnesses]]\nurl = "https://127.0.0.1:%s"\nca = "../witness/ca.pem"\nvkey = "%s"\n' \
    "$WITNESS_PORT" "$WITNESS_KEY" >>"$WORK/svc/config.toml"
"$NACRE" attestation serve --config "$WORK/svc/config.toml" >"$WORK/logs/service.log" 2>&1 &
service_pid=$!
ADMIN=(--url "$SVC_URL" --ca "$WORK/svc/ca.pem" --token-file "$WORK/svc/admin.token")
for _ in $(seq 100); do
    "$NACRE" attestation keys list "${ADMIN[@]}" >/dev/null 2>&1 && break
    kill -0 "$service_pid" 2>/dev/null || die "the attestation service exited (logs/service.log)"
    sleep 0.1
done
note "service $SVC_URL (pid $service_pid), image signer $SIGNER"
note "log $LOG_KEY, witness $WITNESS_KEY (pid $witness_pid)"

# --- seal and register the key ----------------------------------------------------------------
stage "seal: fraud-mlp.sealed, key registered with the service (never on disk)"
# The image is built for the sealed model (its header's key id, name and digest are measured),
# and a policy can name reference values only once they are imported: so the key is registered
# first under a policy that releases to no guest, and opened to the image's signed measurements
# below. Every TEE is closed explicitly: the service treats an allow-list left unset as "any".
cat >"$WORK/locked.toml" <<EOF
# Locked: no launch measures all zeros, and [] allows nothing. Replaced once the image's
# reference values are imported. Sim evidence unlocks a key only by explicit opt-in.
insecure_sim = true
[appraisal.sim]
measurements = ["$(printf '0%.0s' $(seq 96))"]
[appraisal.snp]
measurements = []
[appraisal.tdx]
launches = []
EOF
"$NACRE" seal "$WORK/fraud-mlp.onnx" --out "$WORK/fraud-mlp.sealed" --name fraud-mlp --key-id fraud-mlp \
    --guard-manifest "$WORK/guard.json" \
    --register "$SVC_URL" --ca "$WORK/svc/ca.pem" --token-file "$WORK/svc/admin.token" \
    --policy "$WORK/locked.toml" 2>&1 | sed 's/^/    /'

# --- guest image and its reference values -----------------------------------------------------
stage "image: build (initrd + measured config for fraud-mlp), import reference values"
# The bearer token inference requires: random, mode 0600, never in the image (only its SHA-256,
# measured with the initrd). The image is readable by the host, so the token must be unguessable.
(umask 077 && head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' >"$WORK/inference.token")
# The monitoring token: a role of its own, which reads the private monitor's noised windows only.
(umask 077 && head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' >"$WORK/monitoring.token")
"$NACRE" image build --out "$WORK/image" --name fraud-guest \
    --inference-token-file "$WORK/inference.token" --monitoring-token-file "$WORK/monitoring.token" \
    --kernel "$NACRE_KERNEL" --modules "$NACRE_KERNEL_MODULES" --enclave "$ENCLAVE" \
    --service-url https://10.0.2.100:8443 --service-ca "$WORK/svc/ca.pem" \
    --sealed "$WORK/fraud-mlp.sealed" --tee sim \
    --sim-firmware "$NACRE_SEABIOS" --signing-key "$WORK/image-signing.key" \
    --tdx-firmware "$NACRE_TDVF" --tdx-launch "memory_mib=1024,vcpus=1,qemu=10.1.0,rtmr0=$TDX_RTMR0" \
    >"$WORK/logs/image.json" 2>"$WORK/logs/image.log"
sed 's/^/    /' "$WORK/logs/image.log"
# The same image's TDX entry (MRTD, RTMR1, RTMR2 computed from the bytes written) for the shape
# the agent launches, and image/tdx-policy.toml allowing exactly that launch. Its RTMR0 covers
# QEMU's ACPI tables, which only a reference TD of this shape reports: the demo states a stand-in
# unless NACRE_TDX_RTMR0 supplies the captured value, so its TDX entry matches no real TD.
"$NACRE_PYTHON" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
for m in doc["measurements"]:
    if m["tee"] == "tdx":
        print("    tdx (%s MiB, %s vCPU, QEMU %s): mrtd %s…, rtmr1 %s…, rtmr2 %s…" % (m["memory_mib"],
              m["vcpus"], m["qemu_version"], m["measurement"][:16], m["rtmr1"][:16], m["rtmr2"][:16]))' \
    "$WORK/image/reference-values.json"
MEASUREMENT=$("$NACRE_PYTHON" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
print(next(m["measurement"] for m in doc["measurements"] if m["tee"] == "sim"))' "$WORK/image/reference-values.json")
note "sim measurement $MEASUREMENT"
"$NACRE" attestation reference import "${ADMIN[@]}" \
    --doc "$WORK/image/reference-values.json" --sig "$WORK/image/reference-values.sig" >/dev/null
cat >"$WORK/release.toml" <<'EOF'
# Release the key only to a guest whose launch measurement is one of the signed reference
# values "fraud-guest" (resolved from the service's database at every release). The demo's
# guest is a sim CVM: its sim entry applies only because this key opts into sim (never do so
# for a production key).
reference_values = ["fraud-guest"]
insecure_sim = true
EOF
"$NACRE" attestation policy set fraud-mlp "${ADMIN[@]}" --policy "$WORK/release.toml" >/dev/null
note "release policy of fraud-mlp: reference_values = [\"fraud-guest\"], insecure_sim = true"

# --- host: agent and the sim CVM --------------------------------------------------------------
stage "host: agent (sim secure processor) and launch of the sim CVM"
"$NACRE" host serve --state "$WORK/host" --sim-ca "$WORK/sim" >"$WORK/logs/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do
    [ -S "$WORK/host/agent.sock" ] && break
    kill -0 "$agent_pid" 2>/dev/null || die "the host agent exited (logs/agent.log)"
    sleep 0.1
done
cat >"$WORK/vm.toml" <<EOF
name = "$VM"
backend = "sim"
kernel = "$WORK/image/vmlinuz"
initrd = "$WORK/image/initrd"
cmdline = "$(cat "$WORK/image/cmdline")"
firmware = "$NACRE_SEABIOS"
vcpus = 1
vcpu_type = "EPYC-Milan"
memory_mib = 1024
sealed_model = "$WORK/fraud-mlp.sealed"
serve_port = $SERVE_PORT
attestation_service = "127.0.0.1:$SVC_PORT"
EOF
"$NACRE" host launch --state "$WORK/host" "$WORK/vm.toml" >"$WORK/logs/launch.json"
LAUNCHED=$("$NACRE_PYTHON" -c '
import json, sys
print(json.load(open(sys.argv[1])).get("measurement", "?"))' "$WORK/logs/launch.json")
note "launched $VM: agent's measurement $LAUNCHED"
[ "$LAUNCHED" = "$MEASUREMENT" ] || die "the agent measured $LAUNCHED, the image's reference value is $MEASUREMENT"

# --- guest: boot, attestation, key release, unsealing -----------------------------------------
stage "guest: boot, attest, key release, unseal, serve"
CONSOLE=$WORK/host/vms/$VM/console.log
deadline=$((SECONDS + ${NACRE_DEMO_TIMEOUT:-240}))
ready=0
seen=0
failed=""
while [ "$SECONDS" -lt "$deadline" ]; do
    if [ -f "$CONSOLE" ]; then
        # The console's nacre lines, as they come.
        n=$(wc -l <"$CONSOLE")
        if [ "$n" -gt "$seen" ]; then
            sed -n "$((seen + 1)),${n}p" "$CONSOLE" | tr -d '\r' | grep -E '^(nacre|NACRE)' | sed 's/^/    console: /' || true
            seen=$n
        fi
        if grep -q '^NACRE-ENCLAVE-SERVING' "$CONSOLE"; then
            ready=1
            break
        fi
        # A failure is retried with backoff by the enclave; here the first one ends the demo.
        failed=$(tr -d '\r' <"$CONSOLE" | grep -m1 -E '^NACRE-ENCLAVE-FAILED|nacre-enclave exited' || true)
        [ -z "$failed" ] || break
    fi
    sleep 0.5
done
if [ "$ready" -ne 1 ]; then
    grep -iE 'denied|release' "$WORK/logs/service.log" | tail -n 5 | sed 's/^/    service: /' || true
    die "the enclave is not serving: ${failed:-no NACRE-ENCLAVE-SERVING within ${NACRE_DEMO_TIMEOUT:-240} s}"
fi

# --- client: verify, infer; onnxruntime beside it ---------------------------------------------
# The client's policy (client/src/policy.rs), and where each value comes from:
#   model_identity     the model identity of fraud-mlp.onnx (`nacre model digest`; `nacre seal` prints it)
#   reference values   image/reference-values.{json,sig} from `nacre image build`, trusted by the
#                      signer's public key that `nacre image keygen` printed: the sim measurement
#   insecure_sim_root  sim/ark.pem from `nacre sim ca init` (the host agent signs sim reports under it)
cat >"$WORK/client-policy.toml" <<EOF
# What the enclave at $SERVE_URL must prove before any input leaves.
model_identity = "$MODEL_IDENTITY"
# Exactly this guard manifest (\`nacre guard fit\` printed its SHA-256); the client fetches it
# from the enclave, checks it against the attested digest and shows its settings.
guard_digest = "$GUARD_DIGEST"
require_guard = true
# INSECURE, development only: simulated-TEE evidence under the demo's sim root.
insecure_sim_root = "sim/ark.pem"

[[reference_values]]
document = "image/reference-values.json"
signature = "image/reference-values.sig"
signer = "$SIGNER"

# The reference values name a sim measurement only: close the other TEEs explicitly (an unset
# allow-list accepts any measurement).
[appraisal.snp]
measurements = []
[appraisal.tdx]
launches = []

# The enclave's key release must be in the service's transparency log, under a checkpoint the
# demo's witness cosigned, naming the release key bound in the enclave's TLS evidence.
[log]
key = "$LOG_KEY"
witnesses = ["$WITNESS_KEY"]
min_witnesses = 1
EOF

stage "client: nacre verify, nacre infer"
# The enclave serves its release's log proof as soon as it starts; the witnessed checkpoint
# follows in the background (the service pushes, the enclave polls): wait for it.
for _ in $(seq 60); do
    "$NACRE" verify "$SERVE_URL" --policy "$WORK/client-policy.toml" >"$WORK/logs/verify.txt" 2>&1 && break
    sleep 1
done
"$NACRE" verify "$SERVE_URL" --policy "$WORK/client-policy.toml" | sed 's/^/    /'
"$NACRE" infer "$SERVE_URL" --model fraud-mlp --input "$WORK/request.json" \
    --policy "$WORK/client-policy.toml" --token-file "$WORK/inference.token" --json >"$WORK/nacre-response.json"

stage "guard: an out-of-distribution transaction is flagged"
# Every feature in its training range, but all of them 2.5 standard deviations out at once: the
# guard's squared Mahalanobis distance is far past the manifest's threshold, so the answer
# carries the flag (the manifest's action; \`reject\` would refuse it with 422).
"$NACRE_PYTHON" -c '
import json, sys
row = [1.0] + [2.0] * 28 + [1.0]
json.dump({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row}]}, open(sys.argv[1], "w"))' \
    "$WORK/ood-request.json"
"$NACRE" infer "$SERVE_URL" --model fraud-mlp --input "$WORK/ood-request.json" \
    --policy "$WORK/client-policy.toml" --token-file "$WORK/inference.token" >"$WORK/logs/infer-ood.txt"
sed 's/^/    /' "$WORK/logs/infer-ood.txt"
grep -q 'flagged by the model.s guard: out_of_distribution' "$WORK/logs/infer-ood.txt" ||
    die "the out-of-distribution request was not flagged: $(cat "$WORK/logs/infer-ood.txt")"

stage "guard: an explanation computed in the enclave (KernelSHAP)"
# One transaction's attributions, computed inside the guest against the manifest's background
# rows and charged to the token's budget at their model evaluations.
"$NACRE_PYTHON" scripts/models.py input fraud-mlp "$WORK/explain-request.json" --batch 1 --seed 3
"$NACRE" explain "$SERVE_URL" --model fraud-mlp --input "$WORK/explain-request.json" \
    --policy "$WORK/client-policy.toml" --token-file "$WORK/inference.token" >"$WORK/logs/explain.txt"
sed 's/^/    /' "$WORK/logs/explain.txt" | head -8
grep -q 'model evaluations' "$WORK/logs/explain.txt" ||
    die "no explanation: $(cat "$WORK/logs/explain.txt")"

stage "monitor: a drift burst moves the private monitor's noised windows"
# Two windows of traffic like the training data, then one whose amount (the last feature) is 2
# standard deviations higher. The enclave counts every row in its reference bins and releases
# each window only noised (discrete Laplace, ε = 2), to the monitoring token alone.
"$NACRE_PYTHON" scripts/models.py train "$WORK/traffic.npy" --rows 1500 --seed 23
AMOUNT=$("$NACRE_PYTHON" - "$WORK/traffic.npy" "$WORK/guard.json" "$WORK" <<'PY'
import json, sys
import numpy as np
x, m, out = np.load(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3]
sd = float(np.sqrt(m["reference"]["covariance"][-1][-1]))
x[1000:, -1] += 2.0 * sd
for i in range(3):  # one request per window (a window closes after the request that fills it)
    rows = x[i * 500:(i + 1) * 500]
    json.dump({"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                           "data": rows.ravel().astype(float).round(5).tolist()}]},
              open(f"{out}/traffic-{i:02}.json", "w"))
print(m["input"]["features"][-1]["name"])
PY
)
for f in "$WORK"/traffic-*.json; do
    "$NACRE" infer "$SERVE_URL" --model fraud-mlp --input "$f" --policy "$WORK/client-policy.toml" \
        --token-file "$WORK/inference.token" --json >/dev/null
done
# Windows are noised and released off the request path: wait for the third.
for _ in $(seq 60); do
    "$NACRE" monitor "$SERVE_URL" --policy "$WORK/client-policy.toml" --token-file "$WORK/monitoring.token" \
        --svg "$WORK/drift.svg" >"$WORK/logs/monitor.txt" 2>&1 || true
    grep -q '^windows: 3 released' "$WORK/logs/monitor.txt" && break
    sleep 1
done
sed 's/^/    /' "$WORK/logs/monitor.txt" | cut -c1-110
grep -q "^window #2 drifted: .*\b$AMOUNT\b" "$WORK/logs/monitor.txt" ||
    die "the drift burst in $AMOUNT did not show in window #2: $(cat "$WORK/logs/monitor.txt")"
# The inference token cannot read the monitor.
if "$NACRE" monitor "$SERVE_URL" --policy "$WORK/client-policy.toml" --token-file "$WORK/inference.token" \
    >"$WORK/logs/monitor-inference-token.txt" 2>&1; then
    die "an inference token read the private monitor"
fi
note "inference token -> $(grep -o 'the server answered 401.*' "$WORK/logs/monitor-inference-token.txt")"

stage "client: no token, or another token: refused (401)"
# The same verified session and request, without the token, then with a token that is not it:
# the enclave answers 401 (docs/serving.md) and no input reaches the model.
(umask 077 && head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' >"$WORK/other.token")
for who in none other; do
    token=()
    [ "$who" = none ] || token=(--token-file "$WORK/other.token")
    if "$NACRE" infer "$SERVE_URL" --model fraud-mlp --input "$WORK/request.json" \
        --policy "$WORK/client-policy.toml" "${token[@]}" >"$WORK/logs/infer-$who.txt" 2>&1; then
        die "the enclave served an inference with token: $who"
    fi
    grep -q 'answered 401' "$WORK/logs/infer-$who.txt" ||
        die "expected 401 with token: $who, got: $(cat "$WORK/logs/infer-$who.txt")"
    note "token: $who -> $(grep -o 'the server answered 401.*' "$WORK/logs/infer-$who.txt")"
done

stage "reference: onnxruntime on the same model and input"
"$NACRE_PYTHON" scripts/models.py ort "$WORK/fraud-mlp.onnx" "$WORK/request.json" --model-name fraud-mlp \
    >"$WORK/ort-response.json"
# Side by side: request rows, Nacre's output (attested enclave), onnxruntime's, |difference|.
"$NACRE_PYTHON" - "$WORK/request.json" "$WORK/ort-response.json" "$WORK/nacre-response.json" <<'EOF'
import json, sys
req, ort_path, nacre_path = sys.argv[1:]
ort = json.load(open(ort_path))["outputs"][0]
nacre = next(o for o in json.load(open(nacre_path))["outputs"] if o["name"] == ort["name"])
x = json.load(open(req))["inputs"][0]
rows, cols = x["shape"]
print(f"\n    {ort['name']} for {rows} transactions ({cols} standardized features each)")
print(f"    {'row':>3}  {'amount (std)':>12}  {'nacre (enclave)':>16}  {'onnxruntime':>12}  {'|diff|':>8}")
worst = 0.0
if nacre["shape"] != ort["shape"]:
    sys.exit(f"shapes differ: nacre {nacre['shape']}, onnxruntime {ort['shape']}")
for r in range(rows):
    o = ort["data"][r]
    n = nacre["data"][r]
    amount = x["data"][r * cols + cols - 1]
    worst = max(worst, abs(n - o))
    print(f"    {r:>3}  {amount:>12.4f}  {n:>16.6f}  {o:>12.6f}  {abs(n - o):>8.1e}")
ok = worst <= 1e-5
print(f"\n    max |nacre - onnxruntime| = {worst:.2e} ({'within' if ok else 'NOT within'} 1e-5)")
sys.exit(0 if ok else 1)
EOF

# --- the log, audited from outside ------------------------------------------------------------
stage "audit: nacre audit monitor follows the log; audit verify checks the database against it"
"$NACRE" audit monitor --url "$SVC_URL" --ca "$WORK/svc/ca.pem" --log-key "$LOG_KEY" \
    --witness "$WITNESS_KEY" --state "$WORK/monitor" --once | sed 's/^/    /'
[ "${PIPESTATUS[0]}" -eq 0 ] || die "nacre audit monitor flagged the log"

# --- stop everything --------------------------------------------------------------------------
stage "stop: VM, host agent, attestation service, witness"
"$NACRE" host stop --state "$WORK/host" "$VM" >/dev/null
for pid in "$agent_pid" "$service_pid" "$witness_pid"; do
    kill -TERM "$pid"
    wait "$pid" || true
done
agent_pid=""
service_pid=""
witness_pid=""
# With the service down, its database against the checkpoint the monitor kept (the witness
# cosigned it): every record and leaf, in one snapshot.
[ -f "$WORK/monitor/checkpoint" ] || die "the monitor holds no witnessed checkpoint"
"$NACRE" audit verify --config "$WORK/svc/config.toml" --checkpoint "$WORK/monitor/checkpoint" \
    --log-key "$LOG_KEY" --witness "$WITNESS_KEY" | sed 's/^/    /'
[ "${PIPESTATUS[0]}" -eq 0 ] || die "nacre audit verify found the database changed"
stage_end
echo
echo "demo: the enclave was verified before any input left, served the sealed model to the"
echo "      holder of its token only under the owner's guard (an out-of-distribution transaction"
echo "      flagged), and its outputs equal onnxruntime's"
