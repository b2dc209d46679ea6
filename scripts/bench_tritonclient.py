#!/usr/bin/env python3
"""tritonclient's latency and throughput against an enclave (or `nacre proxy`), for the serving
benchmark (enclave/runtime/benches/serving.rs runs it):

    "$NACRE_PYTHON" scripts/bench_tritonclient.py --url HOST:PORT (--ca CERT.pem | --plaintext) \\
        --model NAME --request REQ.json --protocol http|grpc --connections C --iters N

Each connection is one tritonclient client in its own process (the GIL would otherwise make
every client wait for the others), sending the request's inputs with the client's default
arguments (HTTP: binary tensors both ways) one at a time. Prints one JSON line: p50_us,
p99_us, per_sec (all requests over the wall time of the timed part).
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402  (scripts/models.py: JSON tensors)

WARMUP = 50


def client_and_inputs(args):
    with open(args.request) as f:
        request = json.load(f)
    arrays = [(t["name"], models.tensor_from_json(t)) for t in request["inputs"]]
    if args.protocol == "http":
        import tritonclient.http as tc

        if args.plaintext:
            client = tc.InferenceServerClient(args.url)
        else:
            client = tc.InferenceServerClient(args.url, ssl=True, ssl_options={"ca_certs": args.ca})
    else:
        import tritonclient.grpc as tc

        if args.plaintext:
            client = tc.InferenceServerClient(args.url)
        else:
            client = tc.InferenceServerClient(args.url, ssl=True, root_certificates=args.ca)
    inputs = []
    for name, a in arrays:
        datatype = "BYTES" if a.dtype == object else tc.np_to_triton_dtype(a.dtype)
        i = tc.InferInput(name, list(a.shape), datatype)
        i.set_data_from_numpy(a)
        inputs.append(i)
    return client, inputs


def worker(args, n, start, out):
    client, inputs = client_and_inputs(args)
    for _ in range(WARMUP):
        client.infer(args.model, inputs)
    start.wait()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.infer(args.model, inputs)
        samples.append(time.perf_counter() - t)
    out.put(samples)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--ca")
    p.add_argument("--plaintext", action="store_true")
    p.add_argument("--model", required=True)
    p.add_argument("--request", required=True)
    p.add_argument("--protocol", choices=["http", "grpc"], required=True)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--iters", type=int, default=2000)
    args = p.parse_args(argv)
    if not (args.ca or args.plaintext):
        p.error("--ca or --plaintext")
    per = max(1, args.iters // args.connections)
    ctx = mp.get_context("fork")
    start = ctx.Barrier(args.connections + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, per, start, out)) for _ in range(args.connections)]
    for proc in procs:
        proc.start()
    start.wait()
    t = time.perf_counter()
    samples = []
    for _ in procs:
        samples.extend(out.get())
    wall = time.perf_counter() - t
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            print(f"a client process failed (exit {proc.exitcode})", file=sys.stderr)
            return 1
    s = np.sort(np.array(samples))
    pick = lambda q: float(s[int(round((len(s) - 1) * q))]) * 1e6  # noqa: E731
    json.dump({"p50_us": pick(0.5), "p99_us": pick(0.99), "per_sec": len(s) / wall}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
