#!/usr/bin/env bash
# The attestation core on real evidence: verifies every vector in ../shared/vectors with
# `nacre evidence verify` (default policy, then the explicit policy a vector needs), runs the
# simulated TEE's report signer, prints a verdict table, then seals a model and checks that
# tampering is caught.
# Exits non-zero if any outcome differs from the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."
VEC="${NACRE_VECTORS:-../shared/vectors}"
[ -d "$VEC" ] || { echo "error: $VEC not found (shared/ must sit beside the checkout)" >&2; exit 2; }
command -v cargo >/dev/null || { echo "error: cargo is required (Rust 1.95)" >&2; exit 2; }

cargo build --quiet -p nacre-cli
NACRE=target/debug/nacre
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '[snp]\nallow_debug = true\n' > "$WORK/snp-debug.toml"
printf '[tdx]\nallow_debug = true\n' > "$WORK/tdx-debug.toml"

failures=0
row() { printf '| %-28s | %-3s | %-20s | %-6s | %-60s | %-32s |\n' "$@"; }
# verdict CHECK-OR-DASH from one JSON line
field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d.get(sys.argv[1], "-"))' "$1"; }

# run NAME TEE AT EXPECT_DEFAULT EXPLICIT_ARGS EXPECT_EXPLICIT -- nacre args...
run() {
  local name=$1 tee=$2 at=$3 want=$4 explicit=$5 want2=$6; shift 7
  local out verdict why explicit_out="-" v2
  out=$("$NACRE" evidence verify --tee "$tee" "$@" --at "$at" --json 2>/dev/null || true)
  verdict=$(field verdict <<<"$out")
  if [ "$verdict" = accept ]; then why="measurement $(field measurement <<<"$out" | cut -c1-16)…"; [ "$tee" = tdx ] && why="tcb_status $(field tcb_status <<<"$out")"; else why="$(field reason <<<"$out" | cut -c1-60)"; fi
  [ "$verdict" = "$want" ] || { failures=$((failures+1)); verdict="$verdict!"; }
  if [ "$explicit" != "-" ]; then
    # shellcheck disable=SC2086
    v2=$("$NACRE" evidence verify --tee "$tee" "$@" --at "$at" $explicit --json 2>/dev/null | field verdict || true)
    [ "$v2" = "$want2" ] || { failures=$((failures+1)); v2="$v2!"; }
    explicit_out="$v2 with $(basename -- "${explicit##* }")"
  fi
  row "$name" "$tee" "$at" "$verdict" "$why" "$explicit_out"
}

echo
row "vector" "tee" "verified at" "default" "reason / key claim" "explicit policy"
row "---" "---" "---" "---" "---" "---"
S=$VEC/snp; T=$VEC/tdx; AT=2025-10-01T00:00:00Z
run milan-v2-virtee-sev snp $AT accept - - -- --evidence $S/milan-v2-virtee-sev/report.bin --certs $S/milan-v2-virtee-sev/{ark.pem,ask.pem,vcek.der,crl.pem}
run milan-v2-debug-go-sev-guest snp $AT reject "--policy $WORK/snp-debug.toml" accept -- --evidence $S/milan-v2-debug-go-sev-guest/report.bin --certs $S/milan-v2-debug-go-sev-guest/{ark.pem,ask.pem,vcek.der,crl.pem}
run milan-v3-vlek-trustee snp $AT reject "--allow-missing-crl" accept -- --evidence $S/milan-v3-vlek-trustee/report.bin --certs $S/milan-v3-vlek-trustee/{ark.pem,asvk.pem,vlek.der}
run genoa-v3-azure-trustee snp $AT accept - - -- --evidence $S/genoa-v3-azure-trustee/report.bin --certs $S/genoa-v3-azure-trustee/{ark.pem,ask.pem,vcek.pem,crl.pem}
run turin-v5-oak snp $AT reject "--allow-missing-crl" accept -- --evidence $S/turin-v5-oak/report.bin --certs $S/turin-v5-oak/{ark.pem,ask.pem,vcek.der}
run v4-b0c06f-phala tdx 2025-07-04T10:00:00Z accept - - -- --evidence $T/v4-b0c06f-phala/quote.bin --collateral $T/v4-b0c06f-phala/collateral.json
run v5-90c06f-phala-outdated tdx 2026-03-05T10:00:00Z reject - - -- --evidence $T/v5-90c06f-phala-outdated/quote.bin --collateral $T/v5-90c06f-phala-outdated/collateral.json
run x-v4-50806f-debug-trustee tdx 2023-06-28T08:00:00Z reject "--policy $WORK/tdx-debug.toml" accept -- --evidence $T/x-v4-50806f-debug-trustee/quote.bin --collateral $T/x-v4-50806f-debug-trustee/collateral.json

# The simulated TEE: a fresh insecure hierarchy, a report bound to a nonce, then a tampered copy.
"$NACRE" sim ca init --out "$WORK/sim" >/dev/null 2>&1
RD=$(python3 -c 'import hashlib; print(hashlib.sha512(b"demo nonce").hexdigest())')
"$NACRE" sim report --ca "$WORK/sim" --out "$WORK/sim.bin" --report-data "$RD" --measurement "$(printf 'ab%.0s' $(seq 48))"
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[0x90]^=1; open(sys.argv[2],"wb").write(b)' "$WORK/sim.bin" "$WORK/sim-tampered.bin"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
SIMCERTS=("$WORK"/sim/{ark,ask,vcek,crl}.pem)
run "sim (fresh, nonce-bound)" sim "$NOW" accept - - -- --evidence "$WORK/sim.bin" --certs "${SIMCERTS[@]}" --insecure-sim-root "$WORK/sim/ark.pem" --expect-report-data "$RD"
run "sim (MEASUREMENT flipped)" sim "$NOW" reject - - -- --evidence "$WORK/sim-tampered.bin" --certs "${SIMCERTS[@]}" --insecure-sim-root "$WORK/sim/ark.pem" --expect-report-data "$RD"
run "sim (as snp: AMD roots)" snp "$NOW" reject - - -- --evidence "$WORK/sim.bin" --certs "${SIMCERTS[@]}"

# The model owner's side: seal the built-in sample model, check it opens, then tamper with it.
echo
"$NACRE" model sample --out "$WORK/mlp.onnx"
"$NACRE" seal "$WORK/mlp.onnx" --out "$WORK/mlp.sealed" --key-out "$WORK/mlp.key" --chunk-size 4096 | sed 's/^/    /'
if "$NACRE" unseal "$WORK/mlp.sealed" --key "$WORK/mlp.key" --out - | cmp -s - "$WORK/mlp.onnx"; then
    echo "    unseal: every chunk authenticated, plaintext identical to the model"
else
    echo "    unseal: FAILED"; failures=$((failures+1))
fi
python3 -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[-20]^=1; open(sys.argv[2],"wb").write(b)' "$WORK/mlp.sealed" "$WORK/mlp-tampered.sealed"
if msg=$("$NACRE" unseal "$WORK/mlp-tampered.sealed" --key "$WORK/mlp.key" --out "$WORK/out.onnx" 2>&1); then
    echo "    tampered unseal: ACCEPTED (wrong)"; failures=$((failures+1))
else
    echo "    tampered unseal refused: ${msg##*: }"
fi

echo
if [ "$failures" -eq 0 ]; then echo "all verdicts as expected"; else echo "$failures verdict(s) differ from expected (marked !)"; exit 1; fi
