"""The one table of what each API error code means for the client.

The codes are those of the service's error-code page,
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh.

Every retry, refresh and raise decision about an error code or HTTP status is read from
here by the request loop; nothing else in the package interprets codes. The command line
sorts the errors it reports into outcomes of its own (:mod:`mpt_async._cli.outcome`).
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
from mpt_async._quota_kind import QuotaKind

__all__ = [
    "CODE_TABLE",
    "QUOTA_KINDS",
    "Action",
    "classify_code",
    "classify_status",
    "make_error",
]


class Action(enum.Enum):
    """What the request loop does about an error."""

    RETRY = "retry"
    """Back off and try again, up to ``max_retries``."""
    REFRESH = "refresh"
    """Fetch a new access token and replay once (not counted as a retry)."""
    RAISE = "raise"
    """Give up at once."""
    WAIT = "wait"
    """A quota refused the call: wait for capacity and try again (not counted as a retry;
    bounded by ``Timeouts.quota``)."""


R, F, X, W = Action.RETRY, Action.REFRESH, Action.RAISE, Action.WAIT

#: code -> (action, error class, the message Baidu documents for it). The v1 interface's codes
#: are integers (https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh); the v2 interface's
#: are strings, sent with a real HTTP status (https://cloud.baidu.com/doc/qianfan-api/s/Om9b4yj3w).
CODE_TABLE: Mapping[int | str, tuple[Action, type[APIError], str]] = {
    1: (R, InternalServerError, "Unknown error"),
    2: (R, InternalServerError, "Service temporarily unavailable"),
    3: (X, InvalidRequestError, "Unsupported openapi method"),
    4: (W, RateLimitError, "Open api request limit reached"),
    6: (X, PermissionDeniedError, "No permission to access data"),
    13: (X, AuthenticationError, "Get service token failed"),
    14: (X, AuthenticationError, "IAM Certification failed"),
    15: (R, InternalServerError, "app not exists or create failed"),
    17: (X, RateLimitError, "Open api daily request limit reached"),
    18: (W, RateLimitError, "Open api qps request limit reached"),
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
    336501: (W, RateLimitError, "Rate limit reached for RPM"),
    336502: (W, RateLimitError, "Rate limit reached for TPM"),
    # -- v2 --------------------------------------------------------------------------
    "malformed_json": (X, InvalidRequestError, "the body is not JSON"),
    "invalid_argument": (X, InvalidRequestError, "a parameter breaks the service's rules"),
    "invalid_messages": (X, InvalidRequestError, "the messages break the service's rules"),
    "characters_too_long": (X, InvalidRequestError, "input too long"),
    "tokens_too_long": (X, InvalidRequestError, "input too long"),
    "method_not_supported": (X, InvalidRequestError, "Invalid HTTP method"),
    # Expired, revoked and missing tokens all read the same: refresh once, then raise.
    "invalid_iam_token": (F, AuthenticationError, "the API key or bearer token was refused"),
    # Not a credentials problem, though it comes as 401: a wrong service name lands here.
    "invalid_model": (
        X,
        NotFoundError,
        "no service by that name (endpoint=): use the service's v2 API name from the console",
    ),
    "invalid_appid": (X, AuthenticationError, "this API key may not use that appid"),
    "account_overdue": (
        X,
        PermissionDeniedError,
        "the account is in arrears: top it up in the Qianfan console, then call again",
    ),
    "model_offline": (
        X,
        PermissionDeniedError,
        "the service is offline: start it (or redeploy it on the v2 interface) in the console",
    ),
    "internal_error": (R, InternalServerError, "Internal error"),
    "dispatch_internal_error": (R, InternalServerError, "Internal error"),
    "user_rate_limit_exceeded": (W, RateLimitError, "qps request limit by APP ID reached"),
    "cluster_rate_limit_exceeded": (W, RateLimitError, "request limit by resource cluster reached"),
    "rpm_rate_limit_exceeded": (W, RateLimitError, "Rate limit reached for RPM"),
    "tpm_rate_limit_exceeded": (W, RateLimitError, "Rate limit reached for TPM"),
    "input_tpm_rate_limit_exceeded": (W, RateLimitError, "Rate limit reached for input TPM"),
    "output_tpm_rate_limit_exceeded": (W, RateLimitError, "Rate limit reached for output TPM"),
    "cluster_rpm_rate_limit_exceeded": (W, RateLimitError, "cluster RPM limit reached"),
    "cluster_tpm_rate_limit_exceeded": (W, RateLimitError, "cluster TPM limit reached"),
    "preemptible_rate_limit_exceeded": (W, RateLimitError, "preemptible traffic limit reached"),
}
del R, F, X, W

#: The quota column of the table: which quota each rate-limit code names (v1 codes; the
#: v2 interface's 429 ``code`` strings join it). Whether a refusal waits follows from the
#: kind (:attr:`QuotaKind.waits`); the quota model learns the limit of that kind.
QUOTA_KINDS: Mapping[int | str, QuotaKind] = {
    4: QuotaKind.SECOND,  # the cluster's limit: a rate, like 18
    17: QuotaKind.DAY,
    18: QuotaKind.SECOND,
    19: QuotaKind.TOTAL,
    336501: QuotaKind.MINUTE,
    336502: QuotaKind.TOKENS,
    # v2's 429 codes (https://cloud.baidu.com/doc/qianfan-api/s/Om9b4yj3w)
    "user_rate_limit_exceeded": QuotaKind.SECOND,
    "cluster_rate_limit_exceeded": QuotaKind.SECOND,
    "preemptible_rate_limit_exceeded": QuotaKind.SECOND,
    "rpm_rate_limit_exceeded": QuotaKind.MINUTE,
    "cluster_rpm_rate_limit_exceeded": QuotaKind.MINUTE,
    "tpm_rate_limit_exceeded": QuotaKind.TOKENS,
    "input_tpm_rate_limit_exceeded": QuotaKind.TOKENS,
    "output_tpm_rate_limit_exceeded": QuotaKind.TOKENS,
    "cluster_tpm_rate_limit_exceeded": QuotaKind.TOKENS,
}


def classify_code(code: int | str) -> tuple[Action, type[APIError]]:
    """The action and error class for an API error code; unknown codes raise as APIError."""
    entry = CODE_TABLE.get(code)
    if entry is None:
        return Action.RAISE, APIError
    return entry[0], entry[1]


def classify_status(status: int) -> tuple[Action, type[APIError]]:
    """The action and error class for an HTTP error status without an API error body."""
    if status == 429:
        return Action.WAIT, RateLimitError
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
    code: int | str,
    message: str,
    *,
    status_code: int | None,
    request_id: str | None,
) -> tuple[Action, APIError]:
    """Build the error for an error envelope and say what to do about it."""
    action, cls = classify_code(code)
    if issubclass(cls, RateLimitError):
        error: APIError = cls(
            message,
            error_code=code,
            status_code=status_code,
            request_id=request_id,
            quota=QUOTA_KINDS.get(code),
        )
    else:
        error = cls(message, error_code=code, status_code=status_code, request_id=request_id)
    return action, error
