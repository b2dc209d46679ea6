"""The package's exceptions, by cause. Bad arguments raise ValueError or TypeError as usual."""


class NacreError(Exception):
    """Base of the errors below."""


class PolicyError(NacreError):
    """The client policy file did not load, or it trusts the simulated TEE (`insecure_sim_root`)
    and `allow_insecure_sim=True` was not given. Raised before any connection is made."""


class VerificationError(NacreError):
    """The enclave was refused. `.verification` is the refused document: the step that failed
    (`.failed_step`, e.g. "attested certificate") and why (`.reason`). Nothing was sent but the
    fresh attestation's nonce."""

    def __init__(self, verification):
        from ._verification import Verification

        if not isinstance(verification, Verification):
            verification = Verification(verification)
        self.verification = verification
        super().__init__(
            f"{verification.url}: refused at {verification.failed_step!r}: {verification.reason}"
        )


class TransportError(NacreError, ConnectionError):
    """The enclave could not be reached, or a request on a verified connection failed in
    transport. Such a request is not retried (whether the server acted on it is unknown); the
    session's next request verifies a new connection. `.verification`: the refused document when
    the failure happened while verifying, else None."""

    def __init__(self, message, verification=None):
        from ._verification import Verification

        if verification is not None and not isinstance(verification, Verification):
            verification = Verification(verification)
        # One argument: OSError would read two as (errno, strerror).
        super().__init__(message)
        self.verification = verification


class SessionClosedError(NacreError):
    """A request on a `nacre.Session` after `close()`."""


class PinError(NacreError):
    """A tritonclient call failed on the pinned certificate, the enclave was verified again, and
    the call failed on the newly verified certificate too: what answers tritonclient's connection
    is not the enclave that nacre verified (a relay, or another server at that address)."""


class HTTPError(NacreError):
    """`Response.raise_for_status()` on a 4xx or 5xx status; `.response` is the response."""

    def __init__(self, message, response):
        super().__init__(message)
        self.response = response
