#!/usr/bin/env python3
"""Evaluates the input guard on the demo's fraud MLP (issue 17): how often held-out
in-distribution rows are flagged (false positives), and how often shifted or adversarially
perturbed rows are (detection), with the guard the enclave runs (`nacre guard score`).

    NACRE=target/debug/nacre "$NACRE_PYTHON" scripts/eval-guard.py [WORKDIR]

- The manifest: `nacre guard fit` on 20,000 training rows (seed 11), OOD threshold at the
  training sample's 99.9th percentile of squared Mahalanobis distance, ranges ±10 % of span.
- Held out: 5,000 rows of the same generator (seed 99).
- Shifted: the held-out rows with a mean shift of k·σ (σ = 0.8, the features' scale) in 3
  features or in all of them, and with the noise scaled ×2.
- FGSM-style evasion: for the rows the model scores as fraud (p ≥ 0.5), one step
  x' = x − ε·sign(∇ₓ p), the gradient by central differences through onnxruntime (the model has
  no gradient op), ε in standardized units. "Evades" = p' < 0.5.
Prints a Markdown table.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import models  # noqa: E402

NACRE = os.environ.get("NACRE", "target/debug/nacre")


def score(guard, rows, work, name):
    path = work / f"{name}.npy"
    np.save(path, rows.astype(np.float32))
    out = subprocess.run([NACRE, "guard", "score", str(guard), "--data", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def rate(results):
    return sum(r["finding"] is not None for r in results) / len(results)


def main():
    work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nacre-eval-guard-"))
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "fraud-mlp.onnx"
    model_path.write_bytes(models.fraud_mlp().SerializeToString())
    np.save(work / "train.npy", models.fraud_features(20000, 11))
    guard = work / "guard.json"
    subprocess.run([NACRE, "guard", "fit", str(model_path), "--data", str(work / "train.npy"), "--out", str(guard)],
                   check=True, capture_output=True)
    sess = models.ort_session(str(model_path))
    name = sess.get_inputs()[0].name

    def prob(x):
        return sess.run(None, {name: x.astype(np.float32)})[0][:, 0]

    held = models.fraud_features(5000, 99).astype(np.float64)
    rows = [("held-out, same distribution (false positives)", score(guard, held, work, "held"), None)]
    sigma = 0.8
    for k in (1.0, 2.0, 3.0):
        shifted = held.copy()
        shifted[:, 10:13] += k * sigma
        rows.append((f"mean shift +{k:g}σ in 3 features", score(guard, shifted, work, f"shift3-{k}"), None))
    for k in (0.5, 1.0):
        shifted = held + k * sigma
        rows.append((f"mean shift +{k:g}σ in all 30 features", score(guard, shifted, work, f"shiftall-{k}"), None))
    noisy = held.mean(0) + 2.0 * (held - held.mean(0))
    rows.append(("noise ×2 (same mean)", score(guard, noisy, work, "noise2"), None))

    fraud = held[prob(held) >= 0.5]
    h = 1e-3
    grad = np.zeros_like(fraud)
    for j in range(fraud.shape[1]):
        up, down = fraud.copy(), fraud.copy()
        up[:, j] += h
        down[:, j] -= h
        grad[:, j] = (prob(up) - prob(down)) / (2 * h)
    for eps in (0.1, 0.25, 0.5, 1.0):
        adv = fraud - eps * np.sign(grad)
        evades = float(np.mean(prob(adv) < 0.5))
        rows.append((f"FGSM evasion, ε = {eps:g} ({len(fraud)} fraud rows)", score(guard, adv, work, f"fgsm-{eps}"), evades))
    base = score(guard, fraud, work, "fraud")

    print(f"\nInput guard on the fraud MLP (`nacre guard fit` defaults: OOD threshold at the training 99.9th percentile); work dir {work}\n")
    print("| rows | n | flagged or refused by the guard | of which out of range | evades the model (p < 0.5) |")
    print("|---|---|---|---|---|")
    for label, res, evades in [("fraud rows as they are (FGSM baseline)", base, None)] + rows:
        ranges = sum(r["finding"] not in (None, "out_of_distribution") for r in res) / len(res)
        ev = "–" if evades is None else f"{evades:.1%}"
        print(f"| {label} | {len(res):,} | {rate(res):.1%} | {ranges:.1%} | {ev} |")


if __name__ == "__main__":
    main()
