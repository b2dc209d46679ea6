"""`nacre.verify` and the verification document, with ready-made tritonclient arguments that
pin the verified certificate."""

import ipaddress
import logging
import os
import tempfile
import weakref

from . import _native

log = logging.getLogger("nacre")


class Verification:
    """What was checked before any input left, step by step — `nacre verify`'s document
    (`str()` is its text, `.document` its JSON as Python objects, `.to_json()` the JSON text).

    On acceptance, also the verified enclave certificate (`.certificate_pem`), the TLS key it
    binds (`.spki_sha256`) and the model binding: `.model_identity`, `.guard_digest` (zeros: no
    guard manifest) and `.release_key_digest` (SHA-256 of the key-release HPKE key), all hex."""

    __slots__ = ("_native", "_certificate_file", "__weakref__")

    def __init__(self, native):
        self._native = native
        self._certificate_file = None

    url = property(lambda self: self._native.url, doc="`https://HOST:PORT` as given")
    accepted = property(lambda self: self._native.accepted)
    steps = property(
        lambda self: self._native.steps, doc='[{"step", "status" ("passed"/"failed"/"not run"), "detail"}]'
    )
    warnings = property(lambda self: self._native.warnings)
    reason = property(lambda self: self._native.reason, doc="why it was refused (None on acceptance)")
    failed_step = property(lambda self: self._native.failed_step, doc="the step that failed (refusals)")
    document = property(lambda self: self._native.document, doc="the document (`nacre verify --json`)")
    insecure_sim = property(lambda self: self._native.insecure_sim, doc="the policy trusted the sim TEE")
    certificate_pem = property(lambda self: self._native.certificate_pem, doc="the verified certificate")
    certificate_names = property(
        lambda self: self._native.certificate_names, doc="the certificate's subjectAltName names and IPs"
    )
    spki_sha256 = property(lambda self: self._native.spki_sha256, doc="SHA-256 of the verified TLS key")
    model_identity = property(lambda self: self._native.model_identity, doc="the model identity the enclave bound")
    guard_digest = property(lambda self: self._native.guard_digest, doc="the guard manifest's SHA-256 (zeros: none)")
    release_key_digest = property(
        lambda self: self._native.release_key_digest, doc="SHA-256 of the HPKE key of the enclave's key release"
    )

    def to_json(self):
        return self._native.to_json()

    def __str__(self):
        return str(self._native)

    def __repr__(self):
        return repr(self._native)

    # ------------------------------------------------------------------ pinning a client library

    def certificate_file(self):
        """The path of a PEM file holding exactly the verified certificate, to give a TLS library
        as its only trust anchor (the enclave's certificate is self-signed: trusting it and
        nothing else pins the verified key). Written once; removed when this object goes."""
        if not self.accepted:
            raise ValueError("a refused verification has no certificate")
        if self._certificate_file is None:
            fd, path = tempfile.mkstemp(prefix="nacre-enclave-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(self.certificate_pem.encode("ascii"))
            weakref.finalize(self, _unlink, path)
            self._certificate_file = path
        return self._certificate_file

    def host_port(self):
        """`HOST:PORT` (tritonclient's URL form: no scheme)."""
        rest = self.url.split("://", 1)[1].rstrip("/")
        # The port is after the last ':' outside an IPv6 literal's brackets; 443 when absent.
        return rest if ":" in rest.rsplit("]", 1)[-1] else rest + ":443"

    def server_name(self):
        """The name a TLS library should check the certificate against: None when the URL's host
        is among the certificate's names (the enclave's defaults: localhost, 127.0.0.1), else
        one of its names. The name adds nothing to the pin; it only has to match."""
        host = self.host_port().rsplit(":", 1)[0].strip("[]")
        names = self.certificate_names
        if not names or host in names:
            return None
        dns = [n for n in names if not _is_ip(n)]
        return (dns or names)[0]

    def tritonclient_http_args(self):
        """Keyword arguments for `tritonclient.http.InferenceServerClient(**args)`: TLS whose only
        trusted certificate is the verified one. Add your own (timeouts, concurrency) to the dict."""
        ssl_options = {"ca_certs": self.certificate_file()}
        name = self.server_name()
        if name:
            ssl_options["server_hostname"] = name
        return {"url": self.host_port(), "ssl": True, "ssl_options": ssl_options}

    def tritonclient_grpc_args(self):
        """Keyword arguments for `tritonclient.grpc.InferenceServerClient(**args)`: TLS whose only
        root certificate is the verified one."""
        args = {"url": self.host_port(), "ssl": True, "root_certificates": self.certificate_file()}
        name = self.server_name()
        if name:
            args["channel_args"] = grpc_channel_args([("grpc.ssl_target_name_override", name)])
        return args


def grpc_channel_args(extra):
    """tritonclient.grpc's channel arguments with `extra`: a `channel_args` list replaces the
    client's own, so its message size limits are carried over unless `extra` sets them."""
    import tritonclient.grpc as grpcclient

    keys = {k for k, _ in extra}
    base = [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ]
    return [kv for kv in base if kv[0] not in keys] + list(extra)


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def warn_if_sim(verification):
    if verification.insecure_sim:
        log.warning(
            "%s: accepted under the INSECURE simulated TEE root (allow_insecure_sim=True): "
            "development only, no hardware root of trust",
            verification.url,
        )


def verify(url, policy, *, allow_insecure_sim=False):
    """Verifies the enclave at `url` (`https://HOST:PORT`) as `nacre verify --policy` does: the
    attested certificate, then a fresh attestation bound to that connection's TLS exporter (the
    binding is checked in Rust: Python's ssl cannot export keying material). Returns the
    accepted `Verification`; raises `VerificationError` on refusal, `TransportError` when the
    enclave cannot be reached, `PolicyError` for the policy file (str or os.PathLike) — which
    must not trust the simulated TEE unless `allow_insecure_sim=True`."""
    v = Verification(_native.verify(url, policy, allow_insecure_sim=allow_insecure_sim))
    warn_if_sim(v)
    return v
