#!/usr/bin/env python3
"""Evaluates the extraction detector (PRADA, issue 18) on the demo's fraud MLP: replayed
synthetic extraction attacks must raise the alarm within N queries, benign held-out traffic
must not, and a surrogate trained on what the attacker got before the alarm is compared with
one trained on everything, with and without output hardening.

    NACRE=target/release/nacre "$NACRE_PYTHON" scripts/eval-extraction.py [WORKDIR]

- The manifest: `nacre guard fit` on 20,000 training rows, plus the extraction settings below
  (delta, history, min_queries: the defaults the README states).
- Attacks, each one client's query stream, answered by the model (onnxruntime here; the
  detector's replay runs the same rows on tract in `nacre guard replay`):
  - Jacobian-based augmentation (Papernot et al. 2017): 10 real rows as the seed set; a
    surrogate MLP trained on the answers; each round adds x + λ·sign(∇ₓ surrogate) for every x
    (λ = 0.1), 6 rounds (630 queries).
  - Equation-solving (Tramèr et al. 2016): uniform random points in the feature box (±3σ),
    1,000 queries — the attack solves for the weights from the confidence values.
  - Benign: 5,000 held-out rows of the data generator, as one client.
- Surrogates: an MLP (30 → 32 → 1) trained on the queries answered before the alarm, on the
  full probabilities (policy `full`) or on labels only (policy `label`); agreement = share of
  5,000 test rows on which it predicts the model's class, over all of them and over the ones
  the model calls fraud. The constant "never fraud" predictor's agreement is the floor.
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
HISTORY = 500
SIGMA = 0.8


def replay(guard, model, rows, work, name):
    path = work / f"{name}.npy"
    np.save(path, rows.astype(np.float32))
    out = subprocess.run([NACRE, "guard", "replay", str(guard), "--model", str(model), "--data", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def score(guard, rows, work, name):
    """The share of rows the input guard (schema, out-of-distribution) flags or refuses."""
    path = work / f"{name}-score.npy"
    np.save(path, rows.astype(np.float32))
    out = subprocess.run([NACRE, "guard", "score", str(guard), "--data", str(path)],
                         check=True, capture_output=True, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    return sum(r["finding"] is not None for r in lines) / len(lines)


class Mlp:
    """30 → h → 1, ReLU, sigmoid; full-batch Adam on (soft) cross-entropy."""

    def __init__(self, d, h=32, seed=0):
        rng = np.random.default_rng(seed)
        self.p = [rng.standard_normal((d, h)) * np.sqrt(2 / d), np.zeros(h),
                  rng.standard_normal((h, 1)) * np.sqrt(1 / h), np.zeros(1)]

    def forward(self, x):
        w1, b1, w2, b2 = self.p
        a = x @ w1 + b1
        hdn = np.maximum(a, 0)
        return a, hdn, 1 / (1 + np.exp(-(hdn @ w2 + b2)[:, 0]))

    def fit(self, x, y, epochs=400, lr=0.01):
        m = [np.zeros_like(p) for p in self.p]
        v = [np.zeros_like(p) for p in self.p]
        for t in range(1, epochs + 1):
            a, hdn, p = self.forward(x)
            g = (p - y)[:, None] / len(x)
            w2 = self.p[2]
            gh = (g @ w2.T) * (a > 0)
            grads = [x.T @ gh, gh.sum(0), hdn.T @ g, g.sum(0)]
            for i, gr in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * gr
                v[i] = 0.999 * v[i] + 0.001 * gr * gr
                self.p[i] -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
        return self

    def grad_sign(self, x):
        """sign(∂p/∂x) per row."""
        a, _, p = self.forward(x)
        w1, _, w2, _ = self.p
        g = (p * (1 - p))[:, None] * ((a > 0) * w2[:, 0]) @ w1.T
        return np.sign(g)

    def predict(self, x):
        return (self.forward(x)[2] > 0.5).astype(int)


def main():
    work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nacre-eval-extraction-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "fraud-mlp.onnx"
    model.write_bytes(models.fraud_mlp().SerializeToString())
    np.save(work / "train.npy", models.fraud_features(20000, 11))
    guard = work / "guard.json"
    subprocess.run([NACRE, "guard", "fit", str(model), "--data", str(work / "train.npy"), "--out", str(guard),
                    "--extraction-history", str(HISTORY)], check=True, capture_output=True)
    extraction = json.loads(guard.read_text())["extraction"]

    sess = models.ort_session(str(model))
    name = sess.get_inputs()[0].name

    def oracle(x):
        return sess.run(None, {name: x.astype(np.float32)})[0][:, 0].astype(np.float64)

    d = models.FRAUD_FEATURES
    test = models.fraud_features(5000, 123).astype(np.float64)
    truth = (oracle(test) > 0.5).astype(int)
    floor = float((truth == 0).mean())

    # Jacobian-based augmentation.
    s = models.fraud_features(10, 5).astype(np.float64)
    for _ in range(6):
        sur = Mlp(d, seed=1).fit(s, oracle(s), epochs=200)
        s = np.vstack([s, s + 0.1 * sur.grad_sign(s)])
    jacobian = s
    # Equation-solving: uniform in the box.
    rng = np.random.default_rng(3)
    equation = rng.uniform(-3 * SIGMA, 3 * SIGMA, (1000, d))
    benign = models.fraud_features(5000, 99).astype(np.float64)

    rows = []
    for label, queries in [("Jacobian augmentation", jacobian), ("equation-solving", equation),
                           ("benign held-out", benign)]:
        r = replay(guard, model, queries, work, label.split()[0].lower())
        flagged = score(guard, queries, work, label.split()[0].lower())
        n = r["first_alarm"]
        answered = queries if n is None else queries[: n + 1]

        def agreement(x, hardened):
            """(all test rows, the rows the model calls fraud)"""
            if len(x) < 2:
                return (float("nan"), float("nan"))
            y = oracle(x)
            if hardened:
                y = (y > 0.5).astype(float)
            same = Mlp(d, seed=2).fit(x, y).predict(test) == truth
            return (float(same.mean()), float(same[truth == 1].mean()))

        rows.append((label, len(queries), n, r["alarms"], r["lowest_w"], flagged,
                     agreement(answered, False), agreement(answered, True),
                     agreement(queries, False), agreement(queries, True)))

    print(f"extraction settings (nacre guard fit --extraction-history {HISTORY}): {json.dumps(extraction)}; test rows 5,000, of which the model calls "
          f"{100 * (1 - floor):.1f} % fraud; the constant 'not fraud' predictor agrees on {100 * floor:.1f} %")
    print()
    print("Surrogate agreement: all test rows / the rows the model calls fraud.")
    print()
    print("| stream | queries | PRADA: first alarm at | alarmed queries | lowest W | input guard: flagged or refused | "
          "surrogate at alarm, outputs full | at alarm, label only | with all queries, full | all queries, label only |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, q, n, alarms, w, flagged, af, al, xf, xl in rows:
        at = "none" if n is None else f"query {n + 1}"
        wtxt = "–" if w is None else f"{w:.3f}"
        pct = lambda a: f"{100 * a[0]:.1f} % / {100 * a[1]:.1f} %"
        print(f"| {label} | {q:,} | {at} | {alarms:,} | {wtxt} | {100 * flagged:.1f} % | "
              f"{pct(af)} | {pct(al)} | {pct(xf)} | {pct(xl)} |")


if __name__ == "__main__":
    main()
