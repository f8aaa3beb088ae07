"""The one table of what each API error code means for the client (SPEC section 5).

Every retry, refresh and raise decision about an error code or HTTP status is read from
here by the request loop; nothing else in the package interprets codes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from mpt_async._exceptions import (
    APIError,
    AuthenticationError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

__all__ = ["CODE_TABLE", "Action", "classify_code", "classify_status", "make_error"]


class Action(enum.Enum):
    """What the request loop does about an error."""

    RETRY = "retry"
    """Back off and try again, up to ``max_retries``."""
    REFRESH = "refresh"
    """Fetch a new access token and replay once (not counted as a retry)."""
    RAISE = "raise"
    """Give up at once."""


R, F, X = Action.RETRY, Action.REFRESH, Action.RAISE

#: code -> (action, error class, the message Baidu documents for it).
CODE_TABLE: Mapping[int, tuple[Action, type[APIError], str]] = {
    1: (R, InternalServerError, "Unknown error"),
    2: (R, InternalServerError, "Service temporarily unavailable"),
    3: (X, InvalidRequestError, "Unsupported openapi method"),
    4: (R, RateLimitError, "Open api request limit reached"),
    6: (X, PermissionDeniedError, "No permission to access data"),
    13: (X, AuthenticationError, "Get service token failed"),
    14: (X, AuthenticationError, "IAM Certification failed"),
    15: (R, InternalServerError, "app not exists or create failed"),
    17: (X, RateLimitError, "Open api daily request limit reached"),
    18: (R, RateLimitError, "Open api qps request limit reached"),
    19: (X, RateLimitError, "Open api total request limit reached"),
    100: (X, AuthenticationError, "Invalid parameter"),
    110: (F, AuthenticationError, "Access token invalid or no longer valid"),
    111: (F, AuthenticationError, "Access token expired"),
    336000: (R, InternalServerError, "Internal error"),
    336001: (X, InvalidRequestError, "Invalid Argument"),
    336002: (X, InvalidRequestError, "Invalid JSON"),
    336003: (X, InvalidRequestError, "Invalid parameter"),
    336004: (X, PermissionDeniedError, "Permission error"),
    336005: (X, NotFoundError, "API name not exist"),
    336006: (X, InvalidRequestError, "the length of messages must be an odd number"),
    336007: (X, InvalidRequestError, "input too long"),
    336100: (R, InternalServerError, "try again later"),
    336101: (X, InvalidRequestError, "Invalid HTTP method"),
    336103: (X, InvalidRequestError, "input too long"),
    336104: (X, InvalidRequestError, "invalid argument (system setting)"),
    336105: (X, InvalidRequestError, "invalid argument (user setting)"),
    336501: (R, RateLimitError, "Rate limit reached for RPM"),
    336502: (R, RateLimitError, "Rate limit reached for TPM"),
}
del R, F, X


def classify_code(code: int) -> tuple[Action, type[APIError]]:
    """The action and error class for an API ``error_code``; unknown codes raise as APIError."""
    entry = CODE_TABLE.get(code)
    if entry is None:
        return Action.RAISE, APIError
    return entry[0], entry[1]


def classify_status(status: int) -> tuple[Action, type[APIError]]:
    """The action and error class for an HTTP error status without an API error body."""
    if status == 429:
        return Action.RETRY, RateLimitError
    if status >= 500:
        return Action.RETRY, InternalServerError
    if status in (401, 403):
        return Action.RAISE, AuthenticationError if status == 401 else PermissionDeniedError
    if status == 404:
        return Action.RAISE, NotFoundError
    if status in (408, 409):  # request timeout, lock conflict: a new attempt may pass
        return Action.RETRY, APIError
    return Action.RAISE, InvalidRequestError if 400 <= status < 500 else APIError


def make_error(
    code: int,
    message: str,
    *,
    status_code: int | None,
    request_id: str | None,
) -> tuple[Action, APIError]:
    """Build the error for an error envelope and say what to do about it."""
    action, cls = classify_code(code)
    return action, cls(message, error_code=code, status_code=status_code, request_id=request_id)
