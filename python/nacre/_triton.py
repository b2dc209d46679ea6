"""tritonclient, pinned to the verified certificate, verifying again once when the pin fails.

tritonclient's own connections are TLS to a pinned key: unlike `nacre.Session` or `nacre proxy`,
no fresh attestation is bound to them (docs/python.md, "Residual risk")."""

import inspect
import logging
import ssl
import threading

from ._errors import PinError
from ._verification import grpc_channel_args, verify

log = logging.getLogger("nacre")

# What the wrapper sets itself: the URL and the TLS trust.
_PINNED = {
    "http": {"url", "ssl", "ssl_options", "ssl_context_factory", "insecure"},
    "grpc": {"url", "ssl", "root_certificates", "private_key", "certificate_chain", "creds"},
}


def triton_http_client(url, policy, *, token=None, allow_insecure_sim=False, **kwargs):
    """A `tritonclient.http.InferenceServerClient` for the enclave at `url`, verified first
    (`nacre.verify`) and pinned to the verified certificate. `kwargs` go to the client
    (`connection_timeout`, `concurrency`, ...). Behaves like the client (every attribute is
    the client's); see `PinnedTritonClient`."""
    return PinnedTritonClient("http", url, policy, token, allow_insecure_sim, kwargs)


def triton_grpc_client(url, policy, *, token=None, allow_insecure_sim=False, **kwargs):
    """`triton_http_client` for `tritonclient.grpc.InferenceServerClient`. A `channel_args`
    given here gets tritonclient's message size limits unless it sets its own."""
    return PinnedTritonClient("grpc", url, policy, token, allow_insecure_sim, kwargs)


class PinnedTritonClient:
    """A tritonclient client, pinned to the certificate `nacre.verify` accepted.

    - With `token`, calls that take `headers` get `authorization: Bearer <token>` (lower case:
      gRPC refuses upper-case metadata keys) unless they give their own.
    - A call that fails because the server's certificate no longer verifies against the pin
      (the enclave restarted with a new key, or something else answers) verifies the enclave
      again, rebuilds the client on the newly verified certificate and retries the call once.
      If the retry fails on the pin too, `PinError`; a refusal raises `VerificationError`.
      Only calls that raise are covered (not callbacks of async or streaming calls).

    `.verification` is the current verification, `.reverifications` how often it was redone."""

    def __init__(self, protocol, url, policy, token, allow_insecure_sim, kwargs):
        pinned = _PINNED[protocol] & set(kwargs)
        if pinned:
            raise TypeError(f"{', '.join(sorted(pinned))}: set by nacre from the verified certificate")
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        self._module = module
        self._protocol = protocol
        self._target = (url, policy, allow_insecure_sim)
        self._token = token
        self._kwargs = kwargs
        self._lock = threading.Lock()
        self._takes_headers = {}
        self.reverifications = 0
        self.verification = verify(url, policy, allow_insecure_sim=allow_insecure_sim)
        self._client = self._build(self.verification)

    def _build(self, verification):
        if self._protocol == "http":
            args = verification.tritonclient_http_args()
        else:
            args = verification.tritonclient_grpc_args()
            extra = list(self._kwargs.get("channel_args") or []) + list(args.pop("channel_args", []))
            if extra:
                args["channel_args"] = grpc_channel_args(extra)
        return self._module.InferenceServerClient(**{**self._kwargs, **args})

    def __getattr__(self, name):
        if name == "_client":  # not built yet (a failed __init__)
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._call(name, args, kwargs)

        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def _call(self, name, args, kwargs):
        client = self._client
        try:
            return getattr(client, name)(*args, **self._with_headers(client, name, kwargs))
        except Exception as e:
            if not pin_failed(e):
                raise
            url = self._target[0]
            log.warning("%s: %s failed on the pinned certificate (%s); verifying again", url, name, e)
        self._reverify(client)
        client = self._client
        try:
            return getattr(client, name)(*args, **self._with_headers(client, name, kwargs))
        except Exception as e:
            if pin_failed(e):
                raise PinError(
                    f"{self._target[0]}: {name} failed on the certificate just verified too: what answers "
                    "tritonclient's connection is not the verified enclave"
                ) from e
            raise

    def _with_headers(self, client, name, kwargs):
        """The call's keyword arguments, with a fresh headers dict each attempt (tritonclient.http
        writes Inference-Header-Content-Length into the dict it is given) holding the token."""
        takes = self._takes_headers.get(name)
        if takes is None:
            try:
                takes = "headers" in inspect.signature(getattr(client, name)).parameters
            except (TypeError, ValueError):
                takes = False
            self._takes_headers[name] = takes
        if not takes:
            return kwargs
        headers = dict(kwargs.get("headers") or {})
        if self._token is not None and not any(k.lower() == "authorization" for k in headers):
            headers["authorization"] = f"Bearer {self._token}"
        return {**kwargs, "headers": headers or None}

    def _reverify(self, failed_client):
        with self._lock:
            if self._client is not failed_client:
                return  # another thread verified again meanwhile
            url, policy, allow_insecure_sim = self._target
            verification = verify(url, policy, allow_insecure_sim=allow_insecure_sim)
            self._client = self._build(verification)
            self.verification = verification
            self.reverifications += 1
            log.warning("%s: verified again; pinned TLS key now %s", url, verification.spki_sha256)
            try:
                failed_client.close()
            except Exception:  # a client that failed may fail to close; it is dropped either way
                pass

    def close(self):
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<nacre pinned tritonclient.{self._protocol} {self._target[0]}>"


def pin_failed(error):
    """Whether `error` is the server's certificate failing verification: an SSL certificate
    error anywhere in the chain (tritonclient.http), or gRPC UNAVAILABLE from a failed TLS
    handshake (tritonclient.grpc)."""
    seen = set()
    e = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        status = getattr(e, "status", None)
        message = getattr(e, "message", None)
        if callable(status) and callable(message):
            text = str(message() or "")
            if "UNAVAILABLE" in str(status()) and (
                "CERTIFICATE_VERIFY_FAILED" in text or "handshake" in text.lower()
            ):
                return True
        e = e.__cause__ or e.__context__
    return False
