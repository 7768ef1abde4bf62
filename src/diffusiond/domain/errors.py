"""Domain errors: values with a stable machine-readable code.

Each dialect maps these to its own error shape exactly once.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base error; `code` is stable, `status` is the HTTP status most dialects use."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field


class InvalidParams(DomainError):
    status = 400
    code = "invalid_params"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "permission_denied"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class InsufficientCredits(DomainError):
    status = 402
    code = "insufficient_credits"


class PayloadTooLarge(DomainError):
    status = 413
    code = "invalid_file_size"


class RateLimited(DomainError):
    """A limit was hit; `retry_after` is the seconds until a retry can succeed.

    `policy` names the limit, `quota` is its size and `window` the seconds it covers, if any (for a
    token bucket: the burst, and the time the bucket takes to refill), as RateLimit-Policy says them.
    """

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float = 1.0,
                 policy: str = "default", quota: int = 1, window: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.policy = policy
        self.quota = quota
        self.window = window


class JobFailed(DomainError):
    status = 500
    code = "job_failed"


class Timeout(DomainError):
    status = 504
    code = "timeout"


class ClientGone(DomainError):
    """The client closed the connection before its answer was ready (nginx's 499: nobody reads it)."""

    status = 499
    code = "client_closed_request"
