#!/usr/bin/env python3
"""Demo and benchmark models built with `onnx`, their KServe v2 requests, and the onnxruntime
reference run that Nacre's outputs are compared with.

    models.py make fraud-mlp OUT.onnx          # features FP32[N,30] -> fraud_probability FP32[N,1]
    models.py make small-cnn OUT.onnx          # image FP32[N,1,28,28] -> logits FP32[N,10]
    models.py make dtype DATATYPE OUT.onnx     # x T[N,4] -> y T[N,4], z T[N,4], T any KServe datatype
    models.py make dtypes OUTDIR [--batch B] [--seed S]   # all of them, with requests and answers
    models.py input fraud-mlp|small-cnn|dtype-<datatype> OUT.json [--batch B] [--seed S]
    models.py ort MODEL.onnx REQUEST.json      # KServe v2 response JSON on stdout
    models.py time MODEL.onnx REQUEST.json     # onnxruntime latency (JSON: p50_us, p99_us, per_sec)
    models.py profile MODEL.onnx REQUEST.json  # onnxruntime µs per run by operator type (JSON)

The datatype models (`dtype-bool` … `dtype-bytes`, one per KServe v2 datatype that ONNX has: BOOL,
INT8-64, UINT8-64, FP16, FP32, FP64, BYTES as ONNX STRING; not BF16, which tract does not have)
check that a server carries each element type through unchanged: `y` computes something per column
(see DTYPES for the op) and `z` permutes the columns, so a wrong width, byte order, element order
or string framing shows in the outputs. `make dtypes OUTDIR` writes, for each,
dtype-<datatype>.onnx, the request dtype-<datatype>.request.json and onnxruntime's answer
dtype-<datatype>.response.json (KServe v2 JSON), and the same input and outputs as ONNX TensorProto
files (dtype-<datatype>.input_0.pb, .output_0.pb, .output_1.pb: the ONNX backend tests' format,
exact for FP16 bits, 64-bit integers and strings), which enclave/model/tests/dtypes.rs reads.

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


# One model per KServe v2 datatype: name -> (ONNX element type name, numpy dtype, op of y, c).
# y = op(x, c) with a constant per column; the op is one that both onnxruntime 1.20's CPU
# provider and tract 0.23 implement for the type. onnxruntime has Add only for INT32, INT64 and
# the floats, so the other integers use Mod (ONNX's integer Mod, fmod=0: the result takes the
# divisor's sign, as Python's %), which it has for every integer type; BOOL uses Not; BYTES
# (ONNX STRING) uses Where, choosing per column between x and a constant string. z is
# Gather(x, DTYPE_PERMUTATION, axis=1) for every type: a column permutation, type-agnostic.
DTYPES = {
    "BOOL": ("BOOL", np.bool_, "Not", None),
    "INT8": ("INT8", np.int8, "Mod", [3, 5, 7, 11]),
    "INT16": ("INT16", np.int16, "Mod", [3, 5, 7, 11]),
    "INT32": ("INT32", np.int32, "Add", [1, 2, 3, 4]),
    "INT64": ("INT64", np.int64, "Add", [1, 2, 3, 4]),
    "UINT8": ("UINT8", np.uint8, "Mod", [3, 5, 7, 11]),
    "UINT16": ("UINT16", np.uint16, "Mod", [3, 5, 7, 11]),
    "UINT32": ("UINT32", np.uint32, "Mod", [3, 5, 7, 11]),
    "UINT64": ("UINT64", np.uint64, "Mod", [3, 5, 7, 11]),
    "FP16": ("FLOAT16", np.float16, "Add", [0.5, -1.25, 2.0, 3.75]),
    "FP32": ("FLOAT", np.float32, "Add", [0.5, -1.25, 2.0, 3.75]),
    "FP64": ("DOUBLE", np.float64, "Add", [0.5, -1.25, 2.0, 3.75]),
    "BYTES": ("STRING", np.object_, "Where", ["k0", "", "k2", "k\u00e9"]),
}
DTYPE_PERMUTATION = [3, 0, 2, 1]
# Which columns of y keep x (the others take the constant), for Where.
DTYPE_WHERE_MASK = [True, False, False, True]


def dtype_model_name(datatype):
    return "dtype-" + datatype.lower()


def dtype_model(datatype):
    """x T[N,4] -> y = op(x, c) T[N,4], z = x's columns permuted T[N,4] (DTYPES)."""
    onnx = _onnx()
    h = onnx.helper
    onnx_type, np_type, op, c = DTYPES[datatype]
    elem = getattr(onnx.TensorProto, onnx_type)
    initializer = [onnx.numpy_helper.from_array(np.array(DTYPE_PERMUTATION, dtype=np.int64), "permutation")]
    if op == "Not":
        y = h.make_node("Not", ["x"], ["y"], name="y")
    elif op == "Where":
        initializer.append(onnx.numpy_helper.from_array(np.array(c, dtype=np.object_), "c"))
        initializer.append(onnx.numpy_helper.from_array(np.array(DTYPE_WHERE_MASK), "keep"))
        y = h.make_node("Where", ["keep", "x", "c"], ["y"], name="y")
    else:
        initializer.append(onnx.numpy_helper.from_array(np.array(c, dtype=np_type), "c"))
        y = h.make_node(op, ["x", "c"], ["y"], name="y")
    z = h.make_node("Gather", ["x", "permutation"], ["z"], name="z", axis=1)
    graph = h.make_graph(
        [y, z],
        dtype_model_name(datatype).replace("-", "_"),
        [h.make_tensor_value_info("x", elem, ["N", 4])],
        [h.make_tensor_value_info("y", elem, ["N", 4]), h.make_tensor_value_info("z", elem, ["N", 4])],
        initializer=initializer,
    )
    doc = f"{dtype_model_name(datatype)}: y = {op}(x, c), z = x[:, {DTYPE_PERMUTATION}]"
    return _finish(onnx, graph, doc)


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


# Strings for BYTES inputs: empty, multi-byte UTF-8, JSON escapes, one longer than a length
# byte would hold (a framing error shows).
DTYPE_STRINGS = [
    "",
    "a",
    "caf\u00e9",
    "\u65e5\u672c\u8a9e",
    'quote " and back\\slash',
    "tab\tnew\nline",
    "x" * 300,
]


def dtype_values(datatype, shape, seed):
    """Deterministic values of a KServe datatype: the type's edge values first (its minimum and
    maximum, as far as y's op keeps them in range; 2^53 + 1 for the 64-bit integers, which a
    server that reads JSON numbers as doubles gets wrong), then random ones over its range."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    _, np_type, op, _ = DTYPES[datatype]
    if datatype == "BOOL":
        special = [True, False]
        rest = list(rng.random(count) < 0.5)
    elif datatype == "BYTES":
        special = list(DTYPE_STRINGS)
        rest = [DTYPE_STRINGS[i] for i in rng.integers(0, len(DTYPE_STRINGS), count)]
    elif np.issubdtype(np_type, np.integer):
        info = np.iinfo(np_type)
        hi = int(info.max) - (4 if op == "Add" else 0)  # x + c must not overflow
        special = [int(info.min), hi]
        if info.bits == 64:
            special.append(2**53 + 1)
        special += ([-1] if info.min < 0 else []) + [0, 1]
        rest = [int(v) for v in rng.integers(int(info.min), hi, count, dtype=np_type, endpoint=True)]
    else:
        special = [0.0, -1.5, 0.1, 1e-3, 1000.25]
        rest = list(rng.standard_normal(count) * 50.0)
    values = (special + rest)[:count]
    return np.array(values, dtype=np_type).reshape(shape)


INPUTS = {"fraud-mlp": ("features", fraud_features), "small-cnn": ("image", mnist_like)}
for _dt in DTYPES:
    INPUTS[dtype_model_name(_dt)] = ("x", lambda batch, seed, dt=_dt: dtype_values(dt, (batch, 4), seed))


def request(model, batch, seed):
    name, make = INPUTS[model]
    return {"inputs": [tensor_to_json(name, make(batch, seed))]}


def write_dtypes(outdir, batch, seed):
    """Every datatype model with a request and onnxruntime's answer (module docstring)."""
    import os

    onnx = _onnx()
    os.makedirs(outdir, exist_ok=True)
    for datatype in DTYPES:
        name = dtype_model_name(datatype)
        base = os.path.join(outdir, name)
        with open(base + ".onnx", "wb") as f:
            f.write(dtype_model(datatype).SerializeToString())
        x = dtype_values(datatype, (batch, 4), seed)
        req = {"inputs": [tensor_to_json("x", x)]}
        with open(base + ".request.json", "w") as f:
            json.dump(req, f)
            f.write("\n")
        outputs = ort_outputs(base + ".onnx", {"x": x})
        with open(base + ".response.json", "w") as f:
            json.dump({"model_name": name, "outputs": [tensor_to_json(n, o) for n, o in outputs]}, f)
            f.write("\n")
        for file, array in [("input_0", x)] + [(f"output_{i}", o) for i, (_, o) in enumerate(outputs)]:
            with open(f"{base}.{file}.pb", "wb") as f:
                f.write(onnx.numpy_helper.from_array(array).SerializeToString())


# KServe v2 datatype -> numpy dtype. BYTES is numpy's object dtype holding Python str (what
# onnxruntime takes and returns for ONNX STRING tensors); BF16 has no ONNX-runtime path here.
KSERVE_TO_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMPY_TO_KSERVE = {np.dtype(v): k for k, v in KSERVE_TO_NUMPY.items()}


def tensor_from_json(t):
    """A KServe v2 JSON tensor (`data` flat or nested, row-major) as a numpy array."""
    dtype = KSERVE_TO_NUMPY.get(t["datatype"])
    if dtype is None:
        raise SystemExit(f"models.py: unsupported datatype {t['datatype']}")
    if dtype is np.object_:
        flat = np.array(t["data"], dtype=np.object_).ravel()
        return np.array([str(v) for v in flat], dtype=np.object_).reshape(t["shape"])
    return np.asarray(t["data"], dtype=dtype).reshape(t["shape"])


def tensor_to_json(name, array):
    """A numpy array as a KServe v2 JSON tensor (flat `data`; BYTES elements as str)."""
    datatype = NUMPY_TO_KSERVE.get(array.dtype)
    if datatype is None:
        raise SystemExit(f"models.py: no KServe datatype for numpy {array.dtype}")
    if datatype == "BYTES":
        data = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    else:
        data = [v.item() for v in array.ravel()]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def ort_session(model_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])


def ort_outputs(model_path, feeds, names=None):
    """onnxruntime's outputs for numpy feeds, as (name, array) pairs in the model's output order
    (or in the order of `names`)."""
    sess = ort_session(model_path)
    if names is None:
        names = [o.name for o in sess.get_outputs()]
    return list(zip(names, sess.run(names, feeds)))


def selftests(model_path, rows, seed):
    """Self-test vectors for a guard manifest (`nacre guard fit --self-tests`): fraud-feature rows
    one by one, with onnxruntime's outputs as the expected values (tract is what they test)."""
    import onnxruntime as ort

    sess = ort_session(model_path)
    name = sess.get_inputs()[0].name
    vectors = []
    for row in fraud_features(rows, seed):
        x = row.reshape(1, -1)
        outs = ort_outputs(model_path, {name: x})
        vectors.append({
            "inputs": {name: {"shape": list(x.shape), "data": [float(v) for v in x.ravel()]}},
            "outputs": {n: {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]} for n, a in outs},
        })
    return {"expected_from": f"onnxruntime {ort.__version__}", "vectors": vectors}


def ort_run(model_path, request_path, model_name=None):
    with open(request_path) as f:
        req = json.load(f)
    feeds = {t["name"]: tensor_from_json(t) for t in req["inputs"]}
    # Outputs named in the request, in its order; none named = all of them.
    names = [o["name"] for o in req.get("outputs", [])] or None
    outputs = ort_outputs(model_path, feeds, names)
    if model_name is None:
        import os

        model_name = os.path.splitext(os.path.basename(model_path))[0]
    resp = {"model_name": model_name}
    if "id" in req:
        resp["id"] = req["id"]
    resp["outputs"] = [tensor_to_json(n, o) for n, o in outputs]
    return resp


def ort_time(model_path, request_path, iters):
    """onnxruntime's latency on one request, in process, one thread: p50/p99 µs and runs/s."""
    import time

    with open(request_path) as f:
        req = json.load(f)
    sess = ort_session(model_path)
    feeds = {t["name"]: tensor_from_json(t) for t in req["inputs"]}
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


def ort_profile(model_path, request_path, iters):
    """onnxruntime's time per operator type, µs per run (its own profiler, one thread), largest
    first: the counterpart of the serving benchmark's tract profile."""
    import os
    import tempfile

    import onnxruntime as ort

    with open(request_path) as f:
        req = json.load(f)
    feeds = {t["name"]: tensor_from_json(t) for t in req["inputs"]}
    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(d, "ort")
        sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        for _ in range(iters):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    totals = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0) + e.get("dur", 0)
    return dict(sorted(((k, v / iters) for k, v in totals.items()), key=lambda kv: -kv[1]))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write a model")
    m.add_argument("model", choices=sorted(MODELS) + ["dtype", "dtypes"])
    m.add_argument(
        "args", nargs="+", metavar="ARG", help="OUT.onnx; dtype: DATATYPE OUT.onnx; dtypes: OUTDIR"
    )
    m.add_argument("--batch", type=int, default=3, help="dtypes: rows of the requests")
    m.add_argument("--seed", type=int, default=7, help="dtypes: seed of the requests' values")
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
    r = sub.add_parser("profile", help="onnxruntime µs per run by operator type (JSON)")
    r.add_argument("model")
    r.add_argument("request")
    r.add_argument("--iters", type=int, default=1000)
    d = sub.add_parser("train", help="write fraud-mlp training rows (.npy float32) for `nacre guard fit`")
    d.add_argument("out")
    d.add_argument("--rows", type=int, default=20000)
    d.add_argument("--seed", type=int, default=11)
    s = sub.add_parser("selftests", help="guard self-test vectors with onnxruntime's outputs (JSON)")
    s.add_argument("model")
    s.add_argument("out")
    s.add_argument("--rows", type=int, default=4)
    s.add_argument("--seed", type=int, default=13)
    a = p.parse_args(argv)
    if a.cmd == "train":
        if not 2 <= a.rows <= 10_000_000:
            p.error("--rows: 2..10000000")
        np.save(a.out, fraud_features(a.rows, a.seed))
        return 0
    if a.cmd == "selftests":
        if not 1 <= a.rows <= 256:
            p.error("--rows: 1..256")
        with open(a.out, "w") as f:
            json.dump(selftests(a.model, a.rows, a.seed), f)
            f.write("\n")
        return 0
    if a.cmd == "make":
        want = {"dtype": 2, "dtypes": 1}.get(a.model, 1)
        if len(a.args) != want:
            p.error(f"make {a.model}: {want} argument(s) expected, got {len(a.args)}")
        if a.model == "dtypes":
            if not 1 <= a.batch <= 4096:
                p.error("--batch: 1..4096")
            write_dtypes(a.args[0], a.batch, a.seed)
            return 0
        if a.model == "dtype":
            if a.args[0] not in DTYPES:
                p.error(f"make dtype: DATATYPE is one of {', '.join(DTYPES)}")
            model = dtype_model(a.args[0])
        else:
            model = MODELS[a.model]()
        with open(a.args[-1], "wb") as f:
            f.write(model.SerializeToString())
    elif a.cmd == "input":
        if not 1 <= a.batch <= 4096:
            p.error("--batch: 1..4096")
        with open(a.out, "w") as f:
            json.dump(request(a.model, a.batch, a.seed), f)
            f.write("\n")
    elif a.cmd == "profile":
        json.dump(ort_profile(a.model, a.request, a.iters), sys.stdout)
        sys.stdout.write("\n")
    elif a.cmd == "time":
        json.dump(ort_time(a.model, a.request, a.iters), sys.stdout)
        sys.stdout.write("\n")
    else:
        json.dump(ort_run(a.model, a.request, a.model_name), sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
