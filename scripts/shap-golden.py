#!/usr/bin/env python3
"""Golden Shapley values from the `shap` package, for the enclave's KernelSHAP (nacre-guard
`shap.rs`), computed once and committed so that CI does not install the shap stack:

    python3 -m venv /tmp/shapenv && /tmp/shapenv/bin/pip install shap onnx onnxruntime numpy
    /tmp/shapenv/bin/python scripts/shap-golden.py > enclave/model/tests/onnx/shap-golden.json

Two models, both evaluated by onnxruntime:
- `sample`: the 4-feature sample MLP of enclave/model/src/sample.rs (f32[N,4] -> f32[N,2]),
  rebuilt here with the same weights. With 4 features every coalition fits in shap's default
  sample count, so shap's values are exact and the enclave's must match them to float rounding.
- `fraud`: the demo's 30-feature fraud MLP (scripts/models.py, its ONNX SHA-256 recorded). The
  reference is shap with 65,536 coalitions; shap's own estimate at its default sample count
  (2·30 + 2,048) is recorded too, to show how far sampling alone moves the values.
KernelExplainer runs with l1_reg=False: the plain KernelSHAP regression, which the enclave does.
"""

import hashlib
import json
import os
import platform
import sys

import numpy as np
import onnxruntime as ort
import shap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

W1 = [[0.5, -1.0, 0.25], [1.5, 0.5, -0.5], [-0.75, 0.25, 1.0], [0.1, 0.2, 0.3]]
B1 = [0.1, -0.2, 0.3]
W2 = [[1.0, -1.0], [0.5, 2.0], [-1.5, 0.75]]
B2 = [0.05, -0.05]


def sample_mlp():
    onnx = models._onnx()
    h = onnx.helper
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "w1"], ["h0"]),
            h.make_node("Add", ["h0", "b1"], ["h1"]),
            h.make_node("Relu", ["h1"], ["h2"]),
            h.make_node("MatMul", ["h2", "w2"], ["h3"]),
            h.make_node("Add", ["h3", "b2"], ["y"]),
        ],
        "nacre-sample-mlp",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        initializer=[
            models._init(onnx, "w1", np.array(W1)),
            models._init(onnx, "b1", np.array(B1)),
            models._init(onnx, "w2", np.array(W2)),
            models._init(onnx, "b2", np.array(B2)),
        ],
    )
    return models._finish(onnx, graph, "sample mlp")


def session(model):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: np.asarray(x, dtype=np.float32)})[0].astype(np.float64)


def explain(f, background, rows, nsamples):
    e = shap.KernelExplainer(f, background)
    values = np.asarray(e.shap_values(rows, nsamples=nsamples, l1_reg=False, silent=True))
    # shap 0.4x returns a list per output; 0.5x an array (rows, features, outputs).
    if values.ndim == 3 and values.shape[0] == rows.shape[0]:
        values = values.transpose(0, 2, 1)
    else:
        values = values.reshape(-1, rows.shape[0], rows.shape[1]).transpose(1, 0, 2)
    return np.atleast_1d(e.expected_value).tolist(), values.tolist()


def main():
    np.random.seed(0)
    small_bg = np.array(
        [[0.1, -0.3, 0.5, 1.0], [-0.7, 0.2, 0.0, 0.4], [0.3, 0.9, -1.2, -0.2], [1.1, -0.4, 0.6, 0.0]],
        dtype=np.float32,
    )
    small_rows = np.array([[1.5, -0.5, 0.8, 2.0], [-1.0, 1.0, 0.3, -0.6], [0.1, -0.3, 2.5, 1.0]], dtype=np.float32)
    base, values = explain(session(sample_mlp()), small_bg, small_rows, 2 * 4 + 2048)

    fraud = models.fraud_mlp()
    fraud_bytes = fraud.SerializeToString()
    fraud_bg = models.fraud_features(16, 7)
    fraud_rows = models.fraud_features(4, 11)
    f = session(fraud)
    fraud_base, fraud_values = explain(f, fraud_bg, fraud_rows, 65536)
    _, fraud_default = explain(f, fraud_bg, fraud_rows, 2 * 30 + 2048)

    json.dump(
        {
            "provenance": {
                "script": "scripts/shap-golden.py",
                "shap": shap.__version__,
                "numpy": np.__version__,
                "onnxruntime": ort.__version__,
                "python": platform.python_version(),
                "explainer": "shap.KernelExplainer(f, background).shap_values(rows, nsamples=N, l1_reg=False)",
            },
            "sample": {
                "background": small_bg.tolist(),
                "rows": small_rows.tolist(),
                "nsamples": 2 * 4 + 2048,
                "base": base,
                "values": values,
            },
            "fraud": {
                "onnx_sha256": hashlib.sha256(fraud_bytes).hexdigest(),
                "background": fraud_bg.tolist(),
                "rows": fraud_rows.tolist(),
                "nsamples": 65536,
                "base": fraud_base,
                "values": fraud_values,
                "shap_default_nsamples": 2 * 30 + 2048,
                "shap_default_values": fraud_default,
            },
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
