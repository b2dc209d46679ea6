#!/usr/bin/env bash
# Issue 19's evaluation of the private drift monitor, simulated in process with the demo's model
# and reference data (README "private monitoring"):
#
#   scripts/eval-monitoring.sh [WORKDIR]
#
# - The reference: `nacre guard fit` on the demo's 20,000 training rows (scripts/models.py train,
#   seed 11) of the fraud MLP.
# - Traffic: 200,000 other rows of the same distribution (seed 29), drawn with replacement
#   (a smaller pool adds its own sampling error to every window, which no deployment has).
# - `nacre guard monitor-eval` (nacre-guard's monitor, the enclave's code; noise from a seeded
#   stream so that the run repeats): per ε and window size, the false-alarm rate over windows of
#   unshifted rows (2,000 per cell) with its Wilson 95 % upper bound, and how many of 20 runs with feature f5
#   shifted by 0.25 of its reference σ alarm on f5 within 2 windows, and the median delay.
#   f5 is one of the fraud MLP's ordinary features (a mixture: 3/4 N(0, 0.8²), 1/4 shifted).
# Exit status 1 if the targets fail: detection within 2 windows at n = 10,000 and ε = 1 in at
# least 19 of 20 runs, and at most 1 % false alarms there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/nacre-eval-monitoring.XXXXXX")}
mkdir -p "$work"
eval "$(scripts/inputs.sh)"
NACRE=${NACRE:-target/debug/nacre}
[ -x "$NACRE" ] || cargo build -q -p nacre-cli
"$NACRE_PYTHON" scripts/models.py make fraud-mlp "$work/fraud-mlp.onnx"
"$NACRE_PYTHON" scripts/models.py train "$work/train.npy" --rows 20000 --seed 11
"$NACRE_PYTHON" scripts/models.py train "$work/traffic.npy" --rows 200000 --seed 29
"$NACRE" guard fit "$work/fraud-mlp.onnx" --data "$work/train.npy" --out "$work/guard.json" >/dev/null 2>"$work/fit.txt"
"$NACRE" guard monitor-eval "$work/guard.json" --data "$work/traffic.npy" --shift-feature f5 \
    --shift-sigma 0.25 --epsilon 0.5,1,2 --window 2500,10000,40000 --null-windows 2000 --runs 20 |
    tee "$work/eval.txt"
python3 - "$work/eval.txt" <<'PY'
import sys
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 7 and f[0] == "1" and f[1] == "10000":
        rate, within = float(f[2].rstrip("%")), int(f[5].split("/")[0])
        ok = rate <= 1.0 and within >= 19
        print(f"target (n = 10,000, ε = 1): false alarms {rate} % ≤ 1 %, detected within 2 windows in {within}/20: "
              f"{'pass' if ok else 'FAIL'}")
        sys.exit(0 if ok else 1)
sys.exit("no row for ε = 1, n = 10,000")
PY
