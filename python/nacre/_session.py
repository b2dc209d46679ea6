"""`nacre.Session`: requests-style HTTP on the verified connection itself."""

import json as _json
import urllib.parse
from collections.abc import Mapping

from . import _native
from ._errors import HTTPError
from ._verification import Verification, warn_if_sim


class Headers(Mapping):
    """Response headers, case-insensitive; a repeated header's values joined with ", "."""

    def __init__(self, pairs):
        self._d = {}
        for name, value in pairs:
            key = name.lower()
            self._d[key] = f"{self._d[key]}, {value}" if key in self._d else value

    def __getitem__(self, name):
        return self._d[name.lower()]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __repr__(self):
        return repr(self._d)


class Response:
    """An answer from the enclave, whatever its status (a 401 is a Response, not an exception)."""

    __slots__ = ("status_code", "headers", "content", "url")

    def __init__(self, status_code, headers, content, url):
        self.status_code = status_code
        self.headers = Headers(headers)
        self.content = content
        self.url = url

    @property
    def ok(self):
        return self.status_code < 400

    @property
    def encoding(self):
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self):
        return self.content.decode(self.encoding, errors="replace")

    def json(self, **kwargs):
        return _json.loads(self.content, **kwargs)

    def raise_for_status(self):
        if self.status_code >= 400:
            raise HTTPError(f"{self.status_code} for {self.url}: {self.text[:500]}", self)

    def __repr__(self):
        return f"<nacre.Response [{self.status_code}]>"


class Session:
    """HTTP requests to the enclave over nacre-client's `AttestedSession`: each one travels on a
    connection whose attested certificate and fresh, channel-bound attestation were verified —
    not on a pinned key alone. The constructor verifies (raising `VerificationError`,
    `TransportError` or `PolicyError` as `nacre.verify` does). When the enclave has closed the
    connection (idle), the next request first verifies a new one from the start; a refusal then
    raises and nothing is sent.

    `token`: sent as `Authorization: Bearer` unless a request gives its own `authorization`.
    Thread-safe: requests from several threads take turns on the one connection."""

    def __init__(self, url, policy, *, token=None, allow_insecure_sim=False):
        self._native = _native.Session(url, policy, token=token, allow_insecure_sim=allow_insecure_sim)
        warn_if_sim(self.verification)

    @property
    def verification(self):
        """The current connection's verification (a reconnection replaces it)."""
        return Verification(self._native.verification)

    @property
    def verifications(self):
        """Connections verified so far: 1, plus one per reconnection."""
        return self._native.verifications

    @property
    def url(self):
        return self._native.url

    def request(self, method, path, *, data=None, json=None, headers=None, timeout=None):
        """`method` on `path` (`/v2/...`, with any query). `json`: a body encoded as JSON;
        `data`: bytes, str (UTF-8), a file object, or a dict / pairs (form-encoded). `timeout`:
        seconds for the whole call, a new connection's verification included (a (connect, read)
        pair is summed); None: nacre-client's own limit of 30 s per step."""
        pairs = list((headers or {}).items()) if isinstance(headers, Mapping) else list(headers or [])
        pairs = [(str(k), v.decode("latin-1") if isinstance(v, bytes) else str(v)) for k, v in pairs]
        names = {k.lower() for k, _ in pairs}
        if json is not None and data is not None:
            raise ValueError("give json or data, not both")
        if json is not None:
            body = _json.dumps(json).encode("utf-8")
            content_type = "application/json"
        else:
            body, content_type = _encode(data)
        if content_type and "content-type" not in names:
            pairs.append(("content-type", content_type))
        if isinstance(timeout, tuple):
            parts = [t for t in timeout if t is not None]
            timeout = sum(parts) if parts else None
        status, response_headers, content = self._native.request(method, path, pairs, body, timeout)
        return Response(status, response_headers, content, self.url.rstrip("/") + path)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def head(self, path, **kwargs):
        return self.request("HEAD", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def close(self):
        """Closes the connection; later requests raise `SessionClosedError`."""
        self._native.close()

    @property
    def closed(self):
        return self._native.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<nacre.Session {self.url}{' closed' if self.closed else ''}>"


def _encode(data):
    """A request body and its default content type."""
    if data is None:
        return b"", None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), None
    if isinstance(data, str):
        return data.encode("utf-8"), None
    if hasattr(data, "read"):
        body = data.read()
        return (body.encode("utf-8") if isinstance(body, str) else bytes(body)), None
    if isinstance(data, (Mapping, list, tuple)):
        return urllib.parse.urlencode(data).encode("ascii"), "application/x-www-form-urlencoded"
    raise TypeError(f"data: bytes, str, a file object or a dict, not {type(data).__name__}")
