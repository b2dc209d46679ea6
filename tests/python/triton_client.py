#!/usr/bin/env python3
"""The standard client's check: NVIDIA's tritonclient (HTTP and gRPC), with its default
arguments wherever it has them, against a Nacre enclave over TLS, every output compared with
onnxruntime's on the same inputs.

    "$NACRE_PYTHON" tests/python/triton_client.py --url 127.0.0.1:PORT --ca CERT.pem \\
        --model NAME --model-file MODEL.onnx [--protocol http|grpc|both] [--token-file FILE]
    "$NACRE_PYTHON" tests/python/triton_client.py --url 127.0.0.1:PORT --policy POLICY.toml \\
        [--allow-insecure-sim] --model NAME --model-file MODEL.onnx ...
    "$NACRE_PYTHON" tests/python/triton_client.py --dry-run --model-file MODEL.onnx [--inputs REQ.json]

(NACRE_PYTHON from `eval "$(scripts/inputs.sh)"`: onnxruntime, numpy and tritonclient 2.73.0.)

Checks, one line each (`ok   ...` or `FAIL ...`), then a JSON summary line; exit 1 on any
failure, 2 on bad arguments:
- liveness, readiness, model readiness, server metadata, model metadata (names, datatypes,
  shapes against the ONNX file), model configuration, inference statistics (the success count
  grows by the inferences made);
- HTTP inference: binary in/out with no outputs named (tritonclient then asks for
  `binary_data_output`), every output named with `InferRequestedOutput(name)` (binary by
  default), one output named (only it comes back), JSON in/out (`binary_data=False` on both),
  JSON in with no outputs named; each with a request id that must be echoed;
- gRPC inference: no outputs named, every output named, one output named; raw contents expected
  (tritonclient reads only `raw_output_contents`);
- an unknown model is refused with a parseable error; with a token, a request without it is
  refused (401, or 407 from `nacre proxy` / UNAUTHENTICATED).

Comparison with onnxruntime: integers, BOOL and BYTES exactly; FP32 and FP64 within
1e-5 + 1e-5 * |expected|; FP16 within 1e-3 + 1e-3 * |expected| (its epsilon is 2^-10).

Inputs: from --inputs (a KServe v2 JSON request, e.g. scripts/models.py input or make dtypes),
or generated from the ONNX file's inputs (the first dimension, if dynamic, is --batch; the
values come from scripts/models.py: the demo models' own generators, else its per-datatype
values with the type's edge cases, --seed).

With --policy (a client policy file, as `nacre verify --policy` takes), the Python package `nacre`
(scripts/python-package.sh) verifies the enclave first — `nacre.verify`, a check of its own — and
both clients are built with its ready-made arguments (`tritonclient_http_args()`,
`tritonclient_grpc_args()`): the certificate it accepted is their only CA.

The CA file is the enclave's certificate: both clients verify the name in the URL against it
(the enclave's default names are localhost and 127.0.0.1); --server-name overrides that name.
(Python 3.13 and later verify strictly: a certificate without an Authority Key Identifier, or a
CA certificate whose basicConstraints is not critical, is refused.) gRPC needs the server to
select ALPN h2. Every call has a timeout (--timeout), and the whole run a deadline.
"""

import argparse
import json
import os
import re
import signal
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.dont_write_bytecode = True  # no __pycache__ left in the work tree
import models  # noqa: E402  (scripts/models.py: input generators, JSON tensors, onnxruntime)

ORT_TO_KSERVE = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
# (atol, rtol) per float datatype.
TOLERANCE = {"FP16": (1e-3, 1e-3), "FP32": (1e-5, 1e-5), "FP64": (1e-5, 1e-5)}


class Report:
    """One line per check, and the summary. `secret` (the bearer token) never appears in a line:
    some client errors quote the header value they refused."""

    def __init__(self, secret=None):
        self.passed = 0
        self.failures = []
        self.secret = secret

    def redact(self, text):
        return text.replace(self.secret, "<token>") if self.secret else text

    def check(self, proto, what, fn):
        """Runs fn(); it returns a detail string (ok) or raises (FAIL). Returns whether it passed."""
        try:
            detail = fn()
        except Exception as e:  # every failure, the client's own included, is a FAIL line
            self.fail(proto, what, describe(e))
            return False
        self.passed += 1
        line = f"ok   {proto:5} {what}" + (f" ({detail})" if detail else "")
        print(self.redact(line).replace("\n", " / "), flush=True)
        return True

    def fail(self, proto, what, why):
        why = self.redact(why).strip().replace("\n", " / ")
        self.failures.append(f"{proto} {what}: {why}")
        print(f"FAIL {proto:5} {what}: {why}", flush=True)


class CheckFailed(Exception):
    pass


def die(msg):
    """Bad arguments or inputs: exit 2, as argparse does."""
    print(f"triton_client.py: {msg}", file=sys.stderr)
    sys.exit(2)


def expect(cond, why):
    if not cond:
        raise CheckFailed(why)


def describe(e):
    """An exception as one readable line: tritonclient's status and message, else the type."""
    status = getattr(e, "status", None)
    if callable(status) and hasattr(e, "message"):
        return f"{type(e).__name__} [{status()}] {e.message()}"
    if isinstance(e, CheckFailed):
        return str(e)
    return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------- reference


def model_io(sess):
    """[(name, KServe datatype, shape with None for a dynamic dimension)] for inputs, outputs."""

    def one(arg):
        dt = ORT_TO_KSERVE.get(arg.type)
        if dt is None:
            die(f"{arg.name}: no KServe datatype for {arg.type}")
        return (arg.name, dt, [d if isinstance(d, int) else None for d in arg.shape])

    return [one(a) for a in sess.get_inputs()], [one(a) for a in sess.get_outputs()]


def make_inputs(args, inputs):
    """{name: numpy array} from --inputs, or generated (module docstring)."""
    if args.inputs:
        with open(args.inputs) as f:
            req = json.load(f)
        feeds = {t["name"]: models.tensor_from_json(t) for t in req["inputs"]}
        want = {name: dt for name, dt, _ in inputs}
        if set(feeds) != set(want):
            die(f"{args.inputs} has inputs {sorted(feeds)}, the model {sorted(want)}")
        for t in req["inputs"]:
            if t["datatype"] != want[t["name"]]:
                die(f"{args.inputs}: input {t['name']} is {t['datatype']}, the model's {want[t['name']]}")
        return feeds
    feeds = {}
    for name, dt, shape in inputs:
        if shape and shape[0] is None:
            shape = [args.batch] + shape[1:]
        if any(d is None for d in shape):
            die(f"input {name} has a dynamic dimension past the first: give --inputs")
        known = models.INPUTS.get(args.model or "")
        if known and known[0] == name and dt == "FP32":
            x = known[1](shape[0], args.seed)
        else:
            x = models.dtype_values(dt, tuple(shape), args.seed)
        feeds[name] = x
    return feeds


def as_bytes(a):
    """BYTES elements as bytes: tritonclient gives bytes from binary data, str from JSON;
    onnxruntime gives str."""
    return np.array(
        [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in a.ravel()], dtype=object
    ).reshape(a.shape)


def compare(name, datatype, got, want):
    """Raises unless `got` (from the server) equals onnxruntime's `want`; returns the max |diff|
    for floats."""
    expect(got is not None, f"{name}: missing from the response")
    expect(
        list(got.shape) == list(want.shape), f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"
    )
    if datatype == "BYTES":
        got, want = as_bytes(got), as_bytes(want)
    else:
        expect(got.dtype == want.dtype, f"{name}: numpy dtype {got.dtype}, expected {want.dtype}")
    if datatype in TOLERANCE:
        atol, rtol = TOLERANCE[datatype]
        g, w = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(g - w)
        worst = float(diff.max()) if diff.size else 0.0
        ok = np.all((diff <= atol + rtol * np.abs(w)) | (np.isnan(g) & np.isnan(w)) | (g == w))
        expect(ok, f"{name}: max |diff| {worst:.3g} over {atol:g} + {rtol:g}*|expected|")
        return worst
    g, w = got.ravel(), want.ravel()
    bad = [i for i in range(g.size) if g[i] != w[i]]
    if bad:
        a, b = (v.item() if isinstance(v, np.generic) else v for v in (g[bad[0]], w[bad[0]]))
        raise CheckFailed(f"{name}: {len(bad)} of {g.size} elements differ, first [{bad[0]}]: {a!r} != {b!r}")
    return None


def compare_all(result_get, names, datatypes, reference):
    """Compares each named output; returns a short detail."""
    worst = []
    for name in names:
        w = compare(name, datatypes[name], result_get(name), reference[name])
        if w is not None:
            worst.append(w)
    return f"{', '.join(names)} match onnxruntime" + (f", max |diff| {max(worst):.3g}" if worst else "")


# ---------------------------------------------------------------------------- HTTP


def fresh(headers):
    """A copy of the headers for one call: tritonclient.http adds `Inference-Header-Content-Length`
    to the dict it is given, so a dict shared between calls would carry one request's binary
    header length into the next (a JSON request then arrives cut at the stale length)."""
    return dict(headers) if headers else None


def http_checks(args, rep, sess_io, feeds, reference, headers):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    proto = "http"
    inputs_io, outputs_io = sess_io
    out_names = [n for n, _, _ in outputs_io]
    out_types = {n: dt for n, dt, _ in outputs_io}
    ssl_options = {"ca_certs": args.ca}
    if args.server_name:
        ssl_options["server_hostname"] = args.server_name
    if args.verification:
        client = httpclient.InferenceServerClient(
            **args.verification.tritonclient_http_args(),
            connection_timeout=args.timeout,
            network_timeout=args.timeout,
        )
    else:
        client = httpclient.InferenceServerClient(
            args.url,
            ssl=not args.plaintext,
            ssl_options=None if args.plaintext else ssl_options,
            connection_timeout=args.timeout,
            network_timeout=args.timeout,
        )

    def live():
        expect(client.is_server_live(headers=fresh(headers)), "GET /v2/health/live: not 200")

    # The first call says whether the server can be reached at all; the rest would only repeat it.
    if not rep.check(proto, "server live", live):
        rep.fail(proto, "remaining checks", f"skipped: no answer from https://{args.url}")
        return
    rep.check(proto, "server ready", lambda: expect(client.is_server_ready(headers=fresh(headers)), "not 200"))
    rep.check(
        proto, "model ready", lambda: expect(client.is_model_ready(args.model, headers=fresh(headers)), "not 200")
    )
    rep.check(
        proto,
        "unknown model not ready",
        lambda: expect(
            not client.is_model_ready(args.model + "-no-such-model", headers=fresh(headers)),
            "its ready endpoint answered 200",
        ),
    )

    def server_metadata():
        md = client.get_server_metadata(headers=fresh(headers))
        expect(isinstance(md.get("name"), str) and md["name"], f"no name: {md}")
        expect(isinstance(md.get("version"), str), f"no version: {md}")
        ext = md.get("extensions")
        expect(isinstance(ext, list), f"no extensions list: {md}")
        expect("binary_tensor_data" in ext, f"binary_tensor_data not among the extensions {ext}")
        return f"{md['name']} {md['version']}, extensions {', '.join(ext)}"

    rep.check(proto, "server metadata", server_metadata)

    def model_metadata():
        md = client.get_model_metadata(args.model, headers=fresh(headers))
        expect(md.get("name") == args.model, f"name {md.get('name')!r}")
        check_signature(md.get("inputs"), md.get("outputs"), inputs_io, outputs_io, int)
        return f"platform {md.get('platform')!r}"

    rep.check(proto, "model metadata", model_metadata)

    def model_config():
        cfg = client.get_model_config(args.model, headers=fresh(headers))
        expect(cfg.get("name") == args.model, f"name {cfg.get('name')!r}")
        check_config(
            [(t.get("name"), t.get("data_type")) for t in cfg.get("input", [])],
            [(t.get("name"), t.get("data_type")) for t in cfg.get("output", [])],
            inputs_io,
            outputs_io,
        )
        return f"max_batch_size {cfg.get('max_batch_size')}"

    rep.check(proto, "model config", model_config)

    def success_count():
        stats = client.get_inference_statistics(args.model, headers=fresh(headers))
        mine = [s for s in stats.get("model_stats", []) if s.get("name") == args.model]
        expect(mine, f"no model_stats entry for {args.model}: {stats}")
        return sum(int(s["inference_stats"]["success"]["count"]) for s in mine)

    stats = SuccessCount(rep, proto, success_count)

    served = 0
    counter = iter(range(1, 1000))

    def infer(what, binary_in, outputs, expect_binary_out, names):
        def run():
            nonlocal served
            ins = []
            for name, dt, _ in inputs_io:
                x = feeds[name]
                i = httpclient.InferInput(name, list(x.shape), dt)
                if binary_in:
                    i.set_data_from_numpy(x)  # the default: binary
                else:
                    i.set_data_from_numpy(x, binary_data=False)
                ins.append(i)
            rid = f"triton-client-http-{next(counter)}"
            res = client.infer(args.model, ins, outputs=outputs, request_id=rid, headers=fresh(headers))
            served += 1
            resp = res.get_response()
            expect(resp.get("id") == rid, f"request id {rid!r} not echoed: {resp.get('id')!r}")
            expect(resp.get("model_name") == args.model, f"model_name {resp.get('model_name')!r}")
            got = [o["name"] for o in resp.get("outputs", [])]
            expect(sorted(got) == sorted(names), f"outputs {got}, expected {names}")
            for o in resp["outputs"]:
                expect(
                    o.get("datatype") == out_types[o["name"]], f"{o['name']}: datatype {o.get('datatype')}"
                )
                size = (o.get("parameters") or {}).get("binary_data_size")
                if expect_binary_out:
                    expect(size is not None, f"{o['name']}: answered in JSON, binary asked for")
                else:
                    expect(size is None and "data" in o, f"{o['name']}: answered in binary, JSON asked for")
            return compare_all(res.as_numpy, names, out_types, reference) + ", id echoed"

        rep.check(proto, what, run)

    infer("binary in/out, no outputs named", True, None, True, out_names)
    infer(
        "binary in/out, every output named (InferRequestedOutput defaults)",
        True,
        [httpclient.InferRequestedOutput(n) for n in reversed(out_names)],
        True,
        out_names,
    )
    infer(
        f"binary in/out, one output named ({out_names[-1]})",
        True,
        [httpclient.InferRequestedOutput(out_names[-1])],
        True,
        out_names[-1:],
    )
    infer(
        "JSON in/out (binary_data=False)",
        False,
        [httpclient.InferRequestedOutput(n, binary_data=False) for n in out_names],
        False,
        out_names,
    )
    infer("JSON in, no outputs named (binary out)", False, None, True, out_names)

    stats.grew_by(served)

    def refused(hdrs, statuses, what):
        def run():
            ins = [
                httpclient.InferInput(n, list(feeds[n].shape), dt).set_data_from_numpy(feeds[n])
                for n, dt, _ in inputs_io
            ]
            try:
                client.infer(what, ins, headers=fresh(hdrs))
            except InferenceServerException as e:
                expect(
                    e.status() in statuses,
                    f"status {e.status()}, expected {'/'.join(statuses)}: {e.message()}",
                )
                expect(
                    not e.message().startswith("an exception occurred in the client"),
                    f'the error body is not KServe\'s JSON {{"error": ...}}: {e.message()}',
                )
                return f"{e.status()}: {e.message()}"
            raise CheckFailed("served")

        return run

    rep.check(proto, "unknown model refused", refused(headers, ("400", "404"), args.model + "-no-such-model"))
    if headers:
        rep.check(proto, "refused without its token(s)", refused(None, ("401", "407"), args.model))
    client.close()


# ---------------------------------------------------------------------------- gRPC


def grpc_checks(args, rep, sess_io, feeds, reference, headers):
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import model_config_pb2
    from tritonclient.utils import InferenceServerException

    proto = "grpc"
    inputs_io, outputs_io = sess_io
    out_names = [n for n, _, _ in outputs_io]
    out_types = {n: dt for n, dt, _ in outputs_io}
    kwargs = {}
    if args.server_name:
        # channel_args replaces tritonclient's own list: keep its message size limits.
        kwargs["channel_args"] = [
            ("grpc.ssl_target_name_override", args.server_name),
            ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ]
    if args.plaintext:
        client = grpcclient.InferenceServerClient(args.url, **kwargs)
    elif args.verification:
        client = grpcclient.InferenceServerClient(**args.verification.tritonclient_grpc_args())
    else:
        client = grpcclient.InferenceServerClient(args.url, ssl=True, root_certificates=args.ca, **kwargs)
    t = args.timeout

    def live():
        expect(client.is_server_live(headers=headers, client_timeout=t), "live = false")

    if not rep.check(proto, "server live", live):
        rep.fail(proto, "remaining checks", f"skipped: no answer from {args.url} (gRPC over TLS, ALPN h2)")
        return
    rep.check(
        proto,
        "server ready",
        lambda: expect(client.is_server_ready(headers=headers, client_timeout=t), "false"),
    )
    rep.check(
        proto,
        "model ready",
        lambda: expect(client.is_model_ready(args.model, headers=headers, client_timeout=t), "false"),
    )

    def server_metadata():
        md = client.get_server_metadata(headers=headers, client_timeout=t)
        expect(md.name, f"no name: {md}")
        return f"{md.name} {md.version}, extensions {', '.join(md.extensions)}"

    rep.check(proto, "server metadata", server_metadata)

    def model_metadata():
        md = client.get_model_metadata(args.model, headers=headers, client_timeout=t)
        expect(md.name == args.model, f"name {md.name!r}")

        def tensors(ts):
            return [{"name": x.name, "datatype": x.datatype, "shape": list(x.shape)} for x in ts]

        check_signature(tensors(md.inputs), tensors(md.outputs), inputs_io, outputs_io, int)
        return f"platform {md.platform!r}"

    rep.check(proto, "model metadata", model_metadata)

    def model_config():
        cfg = client.get_model_config(args.model, headers=headers, client_timeout=t).config
        expect(cfg.name == args.model, f"name {cfg.name!r}")
        name = model_config_pb2.DataType.Name
        check_config(
            [(x.name, name(x.data_type)) for x in cfg.input],
            [(x.name, name(x.data_type)) for x in cfg.output],
            inputs_io,
            outputs_io,
        )
        return f"max_batch_size {cfg.max_batch_size}"

    rep.check(proto, "model config", model_config)

    def success_count():
        stats = client.get_inference_statistics(args.model, headers=headers, client_timeout=t)
        mine = [s for s in stats.model_stats if s.name == args.model]
        expect(mine, f"no model_stats entry for {args.model}")
        return sum(s.inference_stats.success.count for s in mine)

    stats = SuccessCount(rep, proto, success_count)

    served = 0
    counter = iter(range(1, 1000))

    def infer(what, outputs, names):
        def run():
            nonlocal served
            ins = [
                grpcclient.InferInput(n, list(feeds[n].shape), dt).set_data_from_numpy(feeds[n])
                for n, dt, _ in inputs_io
            ]
            rid = f"triton-client-grpc-{next(counter)}"
            res = client.infer(
                args.model, ins, outputs=outputs, request_id=rid, headers=headers, client_timeout=t
            )
            served += 1
            resp = res.get_response()
            expect(resp.id == rid, f"request id {rid!r} not echoed: {resp.id!r}")
            expect(resp.model_name == args.model, f"model_name {resp.model_name!r}")
            got = [o.name for o in resp.outputs]
            expect(sorted(got) == sorted(names), f"outputs {got}, expected {names}")
            for o in resp.outputs:
                expect(o.datatype == out_types[o.name], f"{o.name}: datatype {o.datatype}")
            expect(
                len(resp.raw_output_contents) == len(resp.outputs),
                f"{len(resp.raw_output_contents)} raw_output_contents for {len(resp.outputs)} outputs "
                "(tritonclient reads only raw contents)",
            )
            return compare_all(res.as_numpy, names, out_types, reference) + ", id echoed"

        rep.check(proto, what, run)

    infer("no outputs named", None, out_names)
    infer(
        "every output named (InferRequestedOutput defaults)",
        [grpcclient.InferRequestedOutput(n) for n in reversed(out_names)],
        out_names,
    )
    infer(
        f"one output named ({out_names[-1]})",
        [grpcclient.InferRequestedOutput(out_names[-1])],
        out_names[-1:],
    )

    stats.grew_by(served)

    def refused(hdrs, statuses, model):
        def run():
            ins = [
                grpcclient.InferInput(n, list(feeds[n].shape), dt).set_data_from_numpy(feeds[n])
                for n, dt, _ in inputs_io
            ]
            try:
                client.infer(model, ins, headers=hdrs, client_timeout=t)
            except InferenceServerException as e:
                status = str(e.status()).replace("StatusCode.", "")
                expect(status in statuses, f"status {status}, expected {'/'.join(statuses)}: {e.message()}")
                return f"{status}: {e.message()}"
            raise CheckFailed("served")

        return run

    rep.check(
        proto,
        "unknown model refused",
        refused(headers, ("NOT_FOUND", "INVALID_ARGUMENT"), args.model + "-no-such-model"),
    )
    if headers:
        rep.check(proto, "refused without its token(s)", refused(None, ("UNAUTHENTICATED",), args.model))
    client.close()


# ---------------------------------------------------------------------------- shared checks


class SuccessCount:
    """The statistics extension: the model's success count, read once before the inferences
    (a check of its own) and once after, when it must have grown by at least their number."""

    def __init__(self, rep, proto, read):
        self.rep, self.proto, self.read = rep, proto, read
        self.before = None

        def first():
            self.before = read()
            return f"success count {self.before}"

        rep.check(proto, "inference statistics", first)

    def grew_by(self, served):
        def second():
            expect(self.before is not None, "no count before the inferences")
            after = self.read()
            detail = f"success count {self.before} -> {after} after {served} inferences"
            expect(after >= self.before + served, detail)
            return detail

        self.rep.check(self.proto, "inference statistics count the inferences", second)


def check_signature(inputs, outputs, inputs_io, outputs_io, to_int):
    """Model metadata's tensors against the ONNX file: names, datatypes; shapes with -1 for a
    dynamic dimension (an output's fixed dimension may also be -1: tract can know less than the
    file declares)."""
    for what, got, want in (("input", inputs, inputs_io), ("output", outputs, outputs_io)):
        expect(isinstance(got, list), f"no {what}s")
        by_name = {t.get("name"): t for t in got}
        expect(sorted(by_name) == sorted(n for n, _, _ in want), f"{what}s {sorted(by_name)}")
        for name, dt, shape in want:
            t = by_name[name]
            expect(t.get("datatype") == dt, f"{what} {name}: datatype {t.get('datatype')}, expected {dt}")
            s = [to_int(d) for d in t.get("shape", [])]
            expect(len(s) == len(shape), f"{what} {name}: shape {s}, expected rank {len(shape)}")
            for g, w in zip(s, shape):
                ok = g == -1 if w is None else (g == w or (what == "output" and g == -1))
                expect(
                    ok, f"{what} {name}: shape {s}, the file says {[-1 if d is None else d for d in shape]}"
                )


def check_config(inputs, outputs, inputs_io, outputs_io):
    """Model configuration's tensors: names and Triton's TYPE_ names (TYPE_STRING for BYTES)."""
    for what, got, want in (("input", inputs, inputs_io), ("output", outputs, outputs_io)):
        types = dict(got)
        expect(sorted(types) == sorted(n for n, _, _ in want), f"{what}s {sorted(types)}")
        for name, dt, _ in want:
            config_type = "TYPE_STRING" if dt == "BYTES" else "TYPE_" + dt
            expect(
                types[name] == config_type, f"{what} {name}: data_type {types[name]}, expected {config_type}"
            )


def dry_run(rep, sess_io, feeds, reference):
    """No server: the inputs, onnxruntime's outputs, and tritonclient's requests built (binary
    and JSON, both protocols), so that every datatype passes the client's own encoding."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    inputs_io, outputs_io = sess_io

    def reference_line():
        ins = ", ".join(f"{n} {dt}{list(feeds[n].shape)}" for n, dt, _ in inputs_io)
        outs = ", ".join(f"{n} {dt}{list(reference[n].shape)}" for n, dt, _ in outputs_io)
        return f"{ins} -> {outs}"

    rep.check("ref", "onnxruntime on the inputs", reference_line)
    for binary in (True, False):

        def http_body():
            ins = [
                httpclient.InferInput(n, list(feeds[n].shape), dt).set_data_from_numpy(
                    feeds[n], binary_data=binary
                )
                for n, dt, _ in inputs_io
            ]
            outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n, _, _ in outputs_io]
            body, json_size = httpclient.InferenceServerClient.generate_request_body(
                ins, outputs=outs, request_id="x"
            )
            return f"{len(body)} bytes, Inference-Header-Content-Length {json_size}"

        rep.check("http", f"request built ({'binary' if binary else 'JSON'})", http_body)

    def grpc_request():
        ins = [
            grpcclient.InferInput(n, list(feeds[n].shape), dt).set_data_from_numpy(feeds[n])
            for n, dt, _ in inputs_io
        ]
        return f"{sum(len(i._get_content() or b'') for i in ins)} bytes of raw_input_contents"

    rep.check("grpc", "request built", grpc_request)


def verify(args):
    """--policy: `nacre.verify` (the Python package); sets args.verification."""
    try:
        import nacre
    except ImportError as e:
        raise CheckFailed(f"--policy needs the Python package nacre ({e}): run scripts/python-package.sh")
    v = nacre.verify("https://" + args.url, args.policy, allow_insecure_sim=args.allow_insecure_sim)
    args.verification = v
    return f"{len(v.steps)} steps passed, TLS key {v.spki_sha256[:16]}…"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="HOST:PORT of the enclave's TLS port (no scheme)")
    p.add_argument("--ca", help="PEM file the server's certificate must chain to (the enclave's certificate)")
    p.add_argument("--server-name", help="name to verify in the certificate instead of the URL's host")
    p.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS: --url is a local `nacre proxy`, which verifies the enclave (no --ca)",
    )
    p.add_argument(
        "--policy", help="verify with the Python package `nacre` under this client policy; its CA (no --ca)"
    )
    p.add_argument(
        "--allow-insecure-sim", action="store_true", help="with --policy: the policy may trust the sim TEE"
    )
    p.add_argument("--proxy-token-file", help="file holding `nacre proxy`'s own token (Proxy-Authorization)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", help="bearer token (visible to other local users: prefer --token-file)")
    tok.add_argument("--token-file", help="file holding the bearer token")
    p.add_argument("--model", help="the model's name on the server (default: MODEL.onnx's file name)")
    p.add_argument("--model-file", required=True, help="the same ONNX model, for onnxruntime's reference")
    p.add_argument("--protocol", choices=["http", "grpc", "both"], default="both")
    p.add_argument("--inputs", help="a KServe v2 JSON request whose inputs to send (default: generated)")
    p.add_argument("--batch", type=int, default=3, help="the first dimension of generated inputs")
    p.add_argument("--seed", type=int, default=7, help="seed of generated inputs")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for each call (connect, read)")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument(
        "--dry-run", action="store_true", help="no server: reference and client-side requests only"
    )
    args = p.parse_args(argv)
    if not 1 <= args.batch <= 4096:
        p.error("--batch: 1..4096")
    if args.model is None:
        args.model = os.path.splitext(os.path.basename(args.model_file))[0]
    if not args.dry_run:
        if not args.url or not (args.ca or args.plaintext or args.policy):
            p.error("--url and --ca (or --plaintext, or --policy) are needed (or --dry-run)")
        if args.policy and (args.ca or args.plaintext or args.server_name):
            p.error("--policy: the CA and name come from the verification (no --ca, --plaintext, --server-name)")
        if "://" in args.url:
            p.error("--url: HOST:PORT, without a scheme")
        if args.ca and not os.path.isfile(args.ca):
            p.error(f"--ca: {args.ca}: no such file")
    token = args.token
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    # RFC 6750's b64token; checked here, since the clients' own errors would quote the value.
    if token is not None and not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token):
        p.error("the bearer token has characters a token cannot have (RFC 6750 b64token)")

    # A last resort against a hang the per-call timeouts miss.
    def overdue(_sig, _frame):
        print(f"FAIL all   deadline of {args.deadline:g} s passed", flush=True)
        print(json.dumps({"result": "fail", "failures": ["deadline"]}), flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, overdue)
    signal.setitimer(signal.ITIMER_REAL, args.deadline)

    from importlib.metadata import version

    sess = models.ort_session(args.model_file)
    sess_io = model_io(sess)
    feeds = make_inputs(args, sess_io[0])
    reference = dict(models.ort_outputs(args.model_file, feeds))
    proxy_token = None
    if args.proxy_token_file:
        with open(args.proxy_token_file) as f:
            proxy_token = f.read().strip()
    rep = Report(secret=token)
    protocols = []
    args.verification = None
    if args.dry_run:
        dry_run(rep, sess_io, feeds, reference)
    elif args.policy and not rep.check("nacre", "nacre.verify (the clients' CA)", lambda: verify(args)):
        rep.fail("all", "remaining checks", "skipped: the enclave was not verified")
    else:
        protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]
        # gRPC metadata keys must be lower case: "Authorization" fails in the client itself
        # (INTERNAL "Invalid metadata") before anything is sent. HTTP takes either.
        headers = {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if proxy_token:
            headers["proxy-authorization"] = f"Bearer {proxy_token}"
        if "http" in protocols:
            http_checks(args, rep, sess_io, feeds, reference, dict(headers) or None)
        if "grpc" in protocols:
            grpc_checks(args, rep, sess_io, feeds, reference, dict(headers) or None)
    signal.setitimer(signal.ITIMER_REAL, 0)
    summary = {
        "result": "fail" if rep.failures else "ok",
        "passed": rep.passed,
        "failed": len(rep.failures),
        "failures": rep.failures,
        "url": args.url,
        "model": args.model,
        "protocols": protocols,
        "dry_run": args.dry_run,
        "inputs": {n: [dt, list(feeds[n].shape)] for n, dt, _ in sess_io[0]},
        "tritonclient": version("tritonclient"),
    }
    print(json.dumps(summary), flush=True)
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
