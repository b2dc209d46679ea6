#!/usr/bin/env python3
"""The Python package `nacre` (python/, built by scripts/python-package.sh) against a Nacre
enclave, one group of checks per command (enclave/runtime/tests/serve/python.rs runs them and
reads the enclave's counters between them):

    "$NACRE_PYTHON" tests/python/nacre_package.py accept   --url https://H:P --policy P.toml \\
        --spki HEX --model-identity HEX
    ... refusals --url https://H:P --policy P.toml --wrong-digest P2.toml --wrong-measurement P3.toml
    ... reverify --url https://H:P --policy P.toml --token-file F --wrong-ca OTHER.pem \\
        --model NAME --model-file M.onnx
    ... session  --url https://H:P --policy P.toml --token-file F --model NAME --model-file M.onnx \\
        [--idle-timeout SECONDS]

The policies trust the simulated TEE, so every call that should connect passes
allow_insecure_sim=True. Output: `ok   ...` / `FAIL ...` per check, then a JSON summary line;
exit 1 on any failure, 3 when `import nacre` fails (the package is not installed).
"""

import argparse
import json
import os
import socket
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.dont_write_bytecode = True  # no __pycache__ left in the work tree
import models  # noqa: E402  (scripts/models.py: input generators, onnxruntime)

try:
    import nacre
    from nacre._triton import pin_failed
except ImportError as e:
    print(
        f"nacre_package.py: cannot import nacre in {sys.executable} ({e}): run scripts/python-package.sh",
        flush=True,
    )
    sys.exit(3)

SIM = {"allow_insecure_sim": True}
failures = []
passed = 0


class CheckFailed(Exception):
    pass


def expect(cond, why):
    if not cond:
        raise CheckFailed(why)


def check(what, fn):
    """Runs fn(): it returns a detail (ok) or raises (FAIL)."""
    global passed
    try:
        detail = fn()
    except Exception as e:  # every failure, the package's own included, is a FAIL line
        why = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
        failures.append(f"{what}: {why}")
        print(f"FAIL {what}: {why}".replace("\n", " / "), flush=True)
        return
    passed += 1
    print(f"ok   {what}" + (f" ({detail})" if detail else ""), flush=True)


def raises(cls, fn):
    """The exception `fn()` raises, which must be a `cls`."""
    try:
        fn()
    except cls as e:
        return e
    except Exception as e:
        raise CheckFailed(f"raised {type(e).__name__}: {e}, expected {cls.__name__}")
    raise CheckFailed(f"no {cls.__name__} raised")


def host_port(url):
    return url.split("://", 1)[1].rstrip("/")


# ---------------------------------------------------------------------------- accept


def accept(args):
    def accepted():
        v = nacre.verify(args.url, args.policy, **SIM)
        expect(isinstance(v, nacre.Verification) and v.accepted, f"not accepted: {v}")
        bad = [s for s in v.steps if s["status"] != "passed"]
        expect(len(v.steps) >= 8 and not bad, f"steps not all passed: {bad or v.steps}")
        expect(v.steps[-1]["step"] == "key release in the transparency log", f"last step {v.steps[-1]}")
        pem = v.certificate_pem or ""
        expect(pem.startswith("-----BEGIN CERTIFICATE-----") and pem.rstrip().endswith("-----"), pem[:80])
        expect(v.spki_sha256 == args.spki, f"spki {v.spki_sha256}, the Rust client's {args.spki}")
        expect(v.model_identity == args.model_identity, f"model identity {v.model_identity}")
        expect(v.guard_digest == "00" * 32, f"guard digest {v.guard_digest} (this model has no guard manifest)")
        expect(
            len(v.release_key_digest) == 64 and v.release_key_digest != "00" * 32,
            f"release key digest {v.release_key_digest} (the model was released by the service)",
        )
        doc = v.document
        expect(doc["verdict"] == "accept" and doc["tls_spki_sha256"] == args.spki, f"document {doc}")
        expect(json.loads(v.to_json()) == doc, "to_json() differs from .document")
        expect(doc["insecure_sim"] is True and v.insecure_sim, "the sim root is not reported")
        text = str(v)
        expect("verified before any input was sent" in text and "INSECURE sim root" in text, text)
        expect(v.failed_step is None and v.reason is None, "an accepted document has a failure")
        expect({"localhost", "127.0.0.1"} <= set(v.certificate_names), f"names {v.certificate_names}")
        with open(v.certificate_file(), "rb") as f:
            expect(f.read() == pem.encode(), "certificate_file() does not hold exactly the certificate")
        return f"{len(v.steps)} steps passed, spki {v.spki_sha256[:16]}…"

    check("verify: accepted, every step passed, certificate and SPKI as the Rust client's", accepted)

    def args_ready_made():
        v = nacre.verify(args.url, args.policy, **SIM)
        h, g = v.tritonclient_http_args(), v.tritonclient_grpc_args()
        hp = host_port(args.url)
        expect(h == {"url": hp, "ssl": True, "ssl_options": {"ca_certs": v.certificate_file()}}, f"http {h}")
        expect(g == {"url": hp, "ssl": True, "root_certificates": v.certificate_file()}, f"grpc {g}")
        return "url, ssl, the verified certificate as the only CA"

    check("tritonclient arguments", args_ready_made)

    def sim_needs_opt_in():
        # A listener nobody else knows: any connection attempt would be waiting in its backlog.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            url = "https://127.0.0.1:%d" % listener.getsockname()[1]
            calls = [
                ("verify", lambda: nacre.verify(url, args.policy)),
                ("Session", lambda: nacre.Session(url, args.policy)),
                ("triton_http_client", lambda: nacre.triton_http_client(url, args.policy)),
                ("triton_grpc_client", lambda: nacre.triton_grpc_client(url, args.policy)),
            ]
            for name, call in calls:
                e = raises(nacre.PolicyError, call)
                expect("allow_insecure_sim=True" in str(e), f"{name}: {e}")
            try:
                conn, _ = listener.accept()
                conn.close()
                raise CheckFailed("a connection was made before the policy was refused")
            except BlockingIOError:
                pass
        return "PolicyError from verify, Session, both tritonclient wrappers; no connection made"

    check("the simulated TEE needs allow_insecure_sim=True", sim_needs_opt_in)

    def unreachable():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: connections are refused
            url = f"https://127.0.0.1:{port}"
            e = raises(nacre.TransportError, lambda: nacre.verify(url, args.policy, **SIM))
        expect(isinstance(e, ConnectionError) and isinstance(e, nacre.NacreError), "not a ConnectionError")
        v = e.verification
        expect(v is not None and not v.accepted, "no refused document")
        expect(v.failed_step == "TCP and TLS 1.3 connection", f"failed step {v.failed_step}")
        return str(e)

    check("an unreachable enclave: TransportError (a ConnectionError) with the document", unreachable)

    def misuse():
        raises(ValueError, lambda: nacre.verify("http://" + host_port(args.url), args.policy, **SIM))
        raises(nacre.PolicyError, lambda: nacre.verify(args.url, args.policy + ".missing", **SIM))
        return "http:// URL: ValueError; missing policy: PolicyError"

    check("bad arguments", misuse)


# ---------------------------------------------------------------------------- refusals


def refusals(args):
    for what, policy in (("model digest", args.wrong_digest), ("measurement", args.wrong_measurement)):

        def refused(policy=policy):
            e = raises(nacre.VerificationError, lambda: nacre.verify(args.url, policy, **SIM))
            v = e.verification
            expect(isinstance(v, nacre.Verification) and not v.accepted, f"document {v!r}")
            statuses = [(s["step"], s["status"]) for s in v.steps]
            expect(
                statuses
                == [
                    ("TCP and TLS 1.3 connection", "passed"),
                    ("attested certificate", "failed"),
                    ("fresh channel-bound attestation", "not run"),
                    ("guard manifest", "not run"),
                    ("key release in the transparency log", "not run"),
                ],
                f"steps {statuses}",
            )
            expect(v.failed_step == "attested certificate" and v.reason, f"failed step {v.failed_step}")
            expect(v.document["verdict"] == "reject" and v.certificate_pem is None, f"document {v.document}")
            expect("REFUSED, nothing was sent" in str(v), str(v))
            return v.reason

        check(f"wrong {what}: VerificationError at the attested certificate", refused)

        def every_entry_point(policy=policy):
            for name, call in (
                ("Session", lambda: nacre.Session(args.url, policy, token="t0k3n", **SIM)),
                ("triton_http_client", lambda: nacre.triton_http_client(args.url, policy, **SIM)),
                ("triton_grpc_client", lambda: nacre.triton_grpc_client(args.url, policy, **SIM)),
            ):
                e = raises(nacre.VerificationError, call)
                expect(e.verification.failed_step == "attested certificate", f"{name}: {e}")
            return "Session, triton_http_client, triton_grpc_client refused"

        check(f"wrong {what}: no entry point gets a client", every_entry_point)

    def unwitnessed():
        e = raises(nacre.VerificationError, lambda: nacre.verify(args.url, args.unwitnessed, **SIM))
        v = e.verification
        statuses = [s["status"] for s in v.steps]
        expect(statuses == ["passed"] * 4 + ["failed"], f"steps {v.steps}")
        expect(v.failed_step == "key release in the transparency log", f"failed step {v.failed_step}")
        expect("1 witness cosignatures needed, 0 verified" in v.reason, v.reason)
        for name, call in (
            ("Session", lambda: nacre.Session(args.url, args.unwitnessed, token="t0k3n", **SIM)),
            ("triton_http_client", lambda: nacre.triton_http_client(args.url, args.unwitnessed, **SIM)),
            ("triton_grpc_client", lambda: nacre.triton_grpc_client(args.url, args.unwitnessed, **SIM)),
        ):
            e = raises(nacre.VerificationError, call)
            expect(e.verification.failed_step == "key release in the transparency log", f"{name}: {e}")
        return v.reason

    check("a log policy the release does not meet (no witness cosigned): refused at the log step", unwitnessed)


# ---------------------------------------------------------------------------- reverify


def reverify(args):
    token = read(args.token_file)
    name, make = models.INPUTS[args.model]
    x = make(2, 11)
    (out_name, want), *_ = models.ort_outputs(args.model_file, {name: x})

    for proto in ("http", "grpc"):
        if proto == "http":
            import tritonclient.http as module

            wrap, timeouts = nacre.triton_http_client, {"connection_timeout": 10.0, "network_timeout": 10.0}
        else:
            import tritonclient.grpc as module

            wrap, timeouts = nacre.triton_grpc_client, {}

        def wrong_client(verification):
            """A client like the wrapper's, trusting another self-signed certificate."""
            if proto == "http":
                a = verification.tritonclient_http_args()
                a["ssl_options"] = {**a["ssl_options"], "ca_certs": args.wrong_ca}
            else:
                a = {**verification.tritonclient_grpc_args(), "root_certificates": args.wrong_ca}
            return module.InferenceServerClient(**a, **timeouts)

        def infer(client):
            i = module.InferInput(name, list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            got = client.infer(args.model, [i]).as_numpy(out_name)
            expect(got is not None and got.shape == want.shape, f"output {got!r}")
            diff = float(np.abs(got.astype(np.float64) - want).max())
            expect(np.allclose(got, want, atol=1e-5, rtol=1e-5), f"max |diff| {diff:.3g}")
            return diff

        def recovers():
            c = wrap(args.url, args.policy, token=token, **SIM, **timeouts)
            try:
                expect(c.is_server_ready() and c.reverifications == 0, "not ready")
                spki = c.verification.spki_sha256
                infer(c)  # the token is added: the enclave requires one
                # The pin fails: the client trusts a certificate the enclave does not present.
                c._client.close()
                c._client = wrong_client(c.verification)
                e = raises(Exception, lambda: c._client.is_model_ready(args.model))
                expect(pin_failed(e), f"a wrong pin's error is not recognised: {type(e).__name__}: {e}")
                diff = infer(c)  # fails on the pin, verifies again, rebuilds, retries: served
                expect(c.reverifications == 1, f"{c.reverifications} re-verifications")
                expect(c.verification.spki_sha256 == spki, "re-verified to another key")
                expect(c.is_model_ready(args.model) and c.reverifications == 1, "verified again needlessly")
                return f"verified again once; the retried inference matches onnxruntime ({diff:.3g})"
            finally:
                c.close()

        check(f"{proto}: a failed pin is verified again once and the call retried", recovers)

        def second_failure_raises():
            c = wrap(args.url, args.policy, token=token, **SIM, **timeouts)
            try:
                # Every client built is pinned wrong: the retry fails on the pin too.
                c._build = wrong_client
                c._client.close()
                c._client = wrong_client(c.verification)
                e = raises(nacre.PinError, c.is_server_ready)
                expect(c.reverifications == 1, f"{c.reverifications} re-verifications, expected exactly 1")
                expect(pin_failed(e.__cause__), f"cause {e.__cause__!r}")
                return str(e)
            finally:
                c.close()

        check(f"{proto}: a second consecutive pin failure raises PinError", second_failure_raises)

    def token_header_lower_case():
        # Without the token the enclave refuses: the wrappers add it (as lower-case metadata).
        import tritonclient.grpc as module
        from tritonclient.utils import InferenceServerException

        c = nacre.triton_grpc_client(args.url, args.policy, **SIM)
        try:
            i = module.InferInput(name, list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            e = raises(InferenceServerException, lambda: c.infer(args.model, [i]))
            expect("UNAUTHENTICATED" in str(e.status()), f"without the token: {e}")
            i.set_data_from_numpy(x)
            c.infer(args.model, [i], headers={"authorization": f"Bearer {token}"})
            return "refused without it (UNAUTHENTICATED), served with the caller's own header"
        finally:
            c.close()

    check("grpc: no token, no inference; a caller's own authorization passes", token_header_lower_case)


# ---------------------------------------------------------------------------- session


def session(args):
    token = read(args.token_file)
    req = models.request(args.model, 3, 5)
    feeds = {t["name"]: models.tensor_from_json(t) for t in req["inputs"]}
    reference = dict(models.ort_outputs(args.model_file, feeds))
    infer_path = f"/v2/models/{args.model}/infer"
    s = nacre.Session(args.url, args.policy, token=token, **SIM)

    def ready():
        expect(s.verifications == 1 and s.verification.accepted, "not verified")
        r = s.get("/v2/health/ready", timeout=10)
        expect(isinstance(r, nacre.Response) and r.status_code == 200 and r.ok, f"{r} {r.text}")
        r.raise_for_status()
        return f"{r.status_code}, verified key {s.verification.spki_sha256[:16]}…"

    check("Session: GET /v2/health/ready", ready)

    def inference():
        r = s.post(infer_path, json=req, timeout=10)
        expect(r.status_code == 200, f"{r.status_code}: {r.text}")
        expect(r.headers["Content-Type"].startswith("application/json"), f"headers {dict(r.headers)}")
        out = r.json()
        expect(out["model_name"] == args.model, f"model_name {out.get('model_name')}")
        worst = 0.0
        for t in out["outputs"]:
            got, want = models.tensor_from_json(t), reference[t["name"]]
            expect(got.shape == want.shape, f"{t['name']}: shape {got.shape}, expected {want.shape}")
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            worst = max(worst, float(diff.max()))
            expect(np.all(diff <= 1e-5 + 1e-5 * np.abs(want)), f"{t['name']}: max |diff| {worst:.3g}")
        expect(sorted(t["name"] for t in out["outputs"]) == sorted(reference), f"outputs {out['outputs']}")
        return f"outputs match onnxruntime, max |diff| {worst:.3g}"

    check("Session: POST an inference (JSON)", inference)

    def bad_token():
        with nacre.Session(args.url, args.policy, token="not-the-token", **SIM) as bad:
            r = bad.post(infer_path, json=req, timeout=10)
        expect(r.status_code == 401 and not r.ok, f"{r.status_code}: {r.text}")
        raises(nacre.HTTPError, r.raise_for_status)
        own = s.post(infer_path, json=req, headers={"Authorization": "Bearer nope"}, timeout=10)
        expect(own.status_code == 401, f"a request's own authorization header: {own.status_code}")
        return f"401 Response ({r.json().get('error')}); a request's own header overrides the session's"

    check("Session: a bad token gets a 401 Response, not an exception", bad_token)

    def misuse():
        raises(ValueError, lambda: s.get("v2/health/ready"))
        raises(ValueError, lambda: s.get("/v2/health/ready", headers={"Host": "elsewhere"}))
        raises(ValueError, lambda: s.post(infer_path, json=req, data=b"x"))
        r = s.get("/v2/health/ready")
        expect(r.status_code == 200 and s.verifications == 1, "the session did not survive bad arguments")
        return "ValueError, the session still serves"

    check("Session: bad arguments", misuse)

    if args.idle_timeout:

        def reconnect():
            before = s.verification.spki_sha256
            time.sleep(args.idle_timeout + 2)  # the enclave closes the idle connection
            r = s.post(infer_path, json=req, timeout=10)
            expect(r.status_code == 200, f"{r.status_code}: {r.text}")
            expect(s.verifications == 2, f"{s.verifications} verifications: the new connection not verified")
            expect(s.verification.spki_sha256 == before, "a different key")
            return "the closed connection was replaced by a newly verified one before the request"

        check("Session: after the enclave closes the idle connection", reconnect)

    def closed():
        s.close()
        raises(nacre.SessionClosedError, lambda: s.get("/v2/health/ready"))
        return "SessionClosedError"

    check("Session: close()", closed)


def read(path):
    with open(path) as f:
        return f.read().strip()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["accept", "refusals", "reverify", "session"])
    p.add_argument("--url", required=True, help="https://HOST:PORT of the enclave")
    p.add_argument("--policy", required=True, help="the client policy the enclave meets")
    p.add_argument("--spki", help="the TLS key's SHA-256 as the Rust client verified it (accept)")
    p.add_argument("--model-identity", help="the model identity (accept)")
    p.add_argument("--wrong-digest", help="a policy expecting another model digest (refusals)")
    p.add_argument("--wrong-measurement", help="a policy allowing another measurement (refusals)")
    p.add_argument("--unwitnessed", help="a policy requiring a witness cosignature the release lacks (refusals)")
    p.add_argument("--wrong-ca", help="a self-signed certificate that is not the enclave's (reverify)")
    p.add_argument("--token-file", help="the enclave's inference token")
    p.add_argument("--model", help="the served model's name")
    p.add_argument("--model-file", help="the same ONNX model, for onnxruntime's reference")
    p.add_argument("--idle-timeout", type=float, help="the enclave's idle_timeout_secs (session)")
    args = p.parse_args(argv)
    {"accept": accept, "refusals": refusals, "reverify": reverify, "session": session}[args.command](args)
    print(json.dumps({"result": "fail" if failures else "ok", "passed": passed, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
