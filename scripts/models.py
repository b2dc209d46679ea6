#!/usr/bin/env python3
"""Demo and benchmark models built with `onnx`, their KServe v2 requests, and the onnxruntime
reference run that Nacre's outputs are compared with.

    models.py make fraud-mlp OUT.onnx          # features FP32[N,30] -> fraud_probability FP32[N,1]
    models.py make small-cnn OUT.onnx          # image FP32[N,1,28,28] -> logits FP32[N,10]
    models.py input fraud-mlp|small-cnn OUT.json [--batch B] [--seed S]
    models.py ort MODEL.onnx REQUEST.json      # KServe v2 response JSON on stdout

Everything is deterministic: weights come from a fixed seed, so the same command writes the same
bytes (and so the same model digest) on every machine with the pinned onnx version. The models
use IR version 8 and opset 17, which tract-onnx 0.23 loads. Needs onnx, onnxruntime and numpy
(scripts/inputs.sh installs pinned versions into a virtualenv and prints NACRE_PYTHON).
"""

import argparse
import json
import sys

import numpy as np

IR_VERSION = 8
OPSET = 17
WEIGHT_SEED = 20240501

FRAUD_FEATURES = 30
MNIST_SIDE = 28


def _onnx():
    import onnx  # imported lazily: `ort` does not need it

    return onnx


def _init(onnx, name, array):
    return onnx.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _he(rng, fan_in, shape):
    """He-normal weights (the usual init for ReLU layers), float32."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _finish(onnx, graph, name):
    model = onnx.helper.make_model(
        graph,
        producer_name="nacre-models",
        producer_version="1",
        ir_version=IR_VERSION,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
    )
    model.doc_string = name
    onnx.checker.check_model(model, full_check=True)
    return model


def fraud_mlp():
    """A fraud-scoring MLP over 30 standardized transaction features (the layout of the public
    credit-card fraud data sets: time, 28 anonymised components, amount): 30 -> 64 -> 32 -> 1,
    ReLU, sigmoid. Weights are random but fixed; the output bias makes fraud the rare class."""
    onnx = _onnx()
    h = onnx.helper
    rng = np.random.default_rng(WEIGHT_SEED)
    w1 = _he(rng, FRAUD_FEATURES, (64, FRAUD_FEATURES))
    b1 = (rng.standard_normal(64) * 0.05).astype(np.float32)
    w2 = _he(rng, 64, (32, 64))
    b2 = (rng.standard_normal(32) * 0.05).astype(np.float32)
    w3 = _he(rng, 32, (1, 32)) * 0.7
    b3 = np.array([-2.5], dtype=np.float32)  # prior: most transactions are legitimate
    nodes = [
        h.make_node("Gemm", ["features", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        h.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        h.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["fc2"], name="fc2", transB=1),
        h.make_node("Relu", ["fc2"], ["relu2"], name="relu2"),
        h.make_node("Gemm", ["relu2", "fc3.weight", "fc3.bias"], ["logit"], name="fc3", transB=1),
        h.make_node("Sigmoid", ["logit"], ["fraud_probability"], name="sigmoid"),
    ]
    graph = h.make_graph(
        nodes,
        "fraud_mlp",
        [h.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", FRAUD_FEATURES])],
        [h.make_tensor_value_info("fraud_probability", onnx.TensorProto.FLOAT, ["N", 1])],
        initializer=[
            _init(onnx, "fc1.weight", w1),
            _init(onnx, "fc1.bias", b1),
            _init(onnx, "fc2.weight", w2),
            _init(onnx, "fc2.bias", b2),
            _init(onnx, "fc3.weight", w3),
            _init(onnx, "fc3.bias", b3),
        ],
    )
    return _finish(onnx, graph, "fraud-mlp: transaction features -> fraud probability")


def small_cnn():
    """A small MNIST-shaped conv net: conv3x3(8) relu maxpool2, conv3x3(16) relu maxpool2,
    flatten, gemm -> 10 logits."""
    onnx = _onnx()
    h = onnx.helper
    rng = np.random.default_rng(WEIGHT_SEED + 1)
    c1 = _he(rng, 1 * 9, (8, 1, 3, 3))
    c1b = (rng.standard_normal(8) * 0.05).astype(np.float32)
    c2 = _he(rng, 8 * 9, (16, 8, 3, 3))
    c2b = (rng.standard_normal(16) * 0.05).astype(np.float32)
    flat = 16 * (MNIST_SIDE // 4) ** 2
    fc = _he(rng, flat, (10, flat))
    fcb = (rng.standard_normal(10) * 0.05).astype(np.float32)
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        h.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1", **conv),
        h.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        h.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", **pool),
        h.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2", **conv),
        h.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        h.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", **pool),
        h.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        h.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = h.make_graph(
        nodes,
        "small_cnn",
        [h.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 1, MNIST_SIDE, MNIST_SIDE])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])],
        initializer=[
            _init(onnx, "conv1.weight", c1),
            _init(onnx, "conv1.bias", c1b),
            _init(onnx, "conv2.weight", c2),
            _init(onnx, "conv2.bias", c2b),
            _init(onnx, "fc.weight", fc),
            _init(onnx, "fc.bias", fcb),
        ],
    )
    return _finish(onnx, graph, "small-cnn: 28x28 grey image -> 10 class logits")


MODELS = {"fraud-mlp": fraud_mlp, "small-cnn": small_cnn}


def fraud_features(batch, seed):
    """Standardized transaction features: mostly ordinary rows, and every fourth row shifted
    the way fraudulent transactions tend to be (large components, unusual amount)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, FRAUD_FEATURES)) * 0.8
    x[:, 0] = rng.uniform(-1.7, 1.7, batch)  # time of day, standardized
    x[:, -1] = rng.lognormal(-0.5, 0.6, batch) - 0.6  # amount, right-skewed
    for i in range(3, batch, 4):
        x[i, 1:8] += rng.choice([-1.0, 1.0], 7) * rng.uniform(2.0, 4.0, 7)
        x[i, -1] += rng.uniform(2.0, 5.0)
    return np.round(x, 4).astype(np.float32)


def mnist_like(batch, seed):
    """Grey images in [0, 1]: a bright stroke on a dark background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((batch, 1, MNIST_SIDE, MNIST_SIDE), dtype=np.float32)
    for b in range(batch):
        col = rng.integers(8, 20)
        img[b, 0, 4:24, col : col + 3] = 1.0
        img[b, 0] += rng.uniform(0, 0.1, (MNIST_SIDE, MNIST_SIDE))
    return np.round(np.clip(img, 0, 1), 4).astype(np.float32)


INPUTS = {"fraud-mlp": ("features", fraud_features), "small-cnn": ("image", mnist_like)}


def request(model, batch, seed):
    name, make = INPUTS[model]
    x = make(batch, seed)
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": [float(v) for v in x.ravel()],
            }
        ]
    }


KSERVE_TO_NUMPY = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
NUMPY_TO_KSERVE = {np.dtype(v): k for k, v in KSERVE_TO_NUMPY.items()}


def ort_run(model_path, request_path, model_name=None):
    import onnxruntime as ort

    with open(request_path) as f:
        req = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for t in req["inputs"]:
        dtype = KSERVE_TO_NUMPY.get(t["datatype"])
        if dtype is None:
            raise SystemExit(f"models.py: unsupported datatype {t['datatype']}")
        feeds[t["name"]] = np.asarray(t["data"], dtype=dtype).reshape(t["shape"])
    names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(names, feeds)
    if model_name is None:
        import os

        model_name = os.path.splitext(os.path.basename(model_path))[0]
    return {
        "model_name": model_name,
        "outputs": [
            {
                "name": n,
                "shape": list(o.shape),
                "datatype": NUMPY_TO_KSERVE.get(o.dtype, str(o.dtype)),
                "data": [v.item() for v in o.ravel()],
            }
            for n, o in zip(names, outputs)
        ],
    }


def ort_time(model_path, request_path, iters):
    """onnxruntime's latency on one request, in process, one thread: p50/p99 µs and runs/s."""
    import time

    import onnxruntime as ort

    with open(request_path) as f:
        req = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    feeds = {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in req["inputs"]}
    names = [o.name for o in sess.get_outputs()]
    for _ in range(100):
        sess.run(names, feeds)
    samples = []
    start = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(names, feeds)
        samples.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    samples.sort()
    pick = lambda q: samples[round((len(samples) - 1) * q)] * 1e6  # noqa: E731
    return {"p50_us": pick(0.5), "p99_us": pick(0.99), "per_sec": iters / total}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write a model")
    m.add_argument("model", choices=sorted(MODELS))
    m.add_argument("out")
    i = sub.add_parser("input", help="write a KServe v2 inference request body")
    i.add_argument("model", choices=sorted(INPUTS))
    i.add_argument("out")
    i.add_argument("--batch", type=int, default=4)
    i.add_argument("--seed", type=int, default=7)
    o = sub.add_parser("ort", help="run onnxruntime on a request; KServe v2 response on stdout")
    o.add_argument("model")
    o.add_argument("request")
    o.add_argument("--model-name")
    t = sub.add_parser("time", help="onnxruntime latency on a request (JSON: p50_us, p99_us, per_sec)")
    t.add_argument("model")
    t.add_argument("request")
    t.add_argument("--iters", type=int, default=2000)
    a = p.parse_args(argv)
    if a.cmd == "make":
        model = MODELS[a.model]()
        with open(a.out, "wb") as f:
            f.write(model.SerializeToString())
    elif a.cmd == "input":
        if not 1 <= a.batch <= 4096:
            p.error("--batch: 1..4096")
        with open(a.out, "w") as f:
            json.dump(request(a.model, a.batch, a.seed), f)
            f.write("\n")
    elif a.cmd == "time":
        json.dump(ort_time(a.model, a.request, a.iters), sys.stdout)
        sys.stdout.write("\n")
    else:
        json.dump(ort_run(a.model, a.request, a.model_name), sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
