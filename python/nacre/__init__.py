"""Nacre for Python: verify a confidential-computing enclave before any input leaves.

    import nacre

    v = nacre.verify("https://127.0.0.1:8443", "client-policy.toml")   # raises unless accepted
    print(v)                                   # the steps, as `nacre verify` prints them

    with nacre.Session("https://127.0.0.1:8443", "client-policy.toml", token=TOKEN) as s:
        r = s.post("/v2/models/fraud-mlp/infer", json=request)    # on the verified connection
        r.raise_for_status()

    client = nacre.triton_http_client("https://127.0.0.1:8443", "client-policy.toml")
    client.infer(...)                          # tritonclient, pinned to the verified certificate

The verification itself (the attested certificate, the fresh channel-bound attestation, the
policy) is nacre-client's, in Rust; see docs/python.md.
"""

from . import _native
from ._errors import (
    HTTPError,
    NacreError,
    PinError,
    PolicyError,
    SessionClosedError,
    TransportError,
    VerificationError,
)
from ._session import Response, Session
from ._triton import PinnedTritonClient, triton_grpc_client, triton_http_client
from ._verification import Verification, verify

__version__ = _native.__version__

__all__ = [
    "HTTPError",
    "NacreError",
    "PinError",
    "PinnedTritonClient",
    "PolicyError",
    "Response",
    "Session",
    "SessionClosedError",
    "TransportError",
    "Verification",
    "VerificationError",
    "triton_grpc_client",
    "triton_http_client",
    "verify",
]
