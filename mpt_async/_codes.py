"""The one table of what each API error code means for the client.

The codes are those of the service's error-code page,
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh.

Every retry, refresh and raise decision about an error code or HTTP status is read from
here by the request loop; nothing else in the package interprets codes. The command line's
questions (is a failure worth a rerun, does it stop a whole batch, is it the caller's
fault) are answered here too, by :func:`failure_of` and :class:`Failure`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestValidationError,
    SharedStoreError,
    StreamError,
)
from mpt_async._validate import is_int

__all__ = [
    "CODE_TABLE",
    "Action",
    "Failure",
    "classify_code",
    "classify_status",
    "failure_of",
    "is_transient",
    "make_error",
    "record_code",
]


class Action(enum.Enum):
    """What the request loop does about an error."""

    RETRY = "retry"
    """Back off and try again, up to ``max_retries``."""
    REFRESH = "refresh"
    """Fetch a new access token and replay once (not counted as a retry)."""
    RAISE = "raise"
    """Give up at once."""


R, F, X = Action.RETRY, Action.REFRESH, Action.RAISE

#: code -> (action, error class, the message Baidu documents for it). The v1 interface's codes
#: are integers (https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh); the v2 interface's
#: are strings, sent with a real HTTP status (https://cloud.baidu.com/doc/qianfan-api/s/Om9b4yj3w).
CODE_TABLE: Mapping[int | str, tuple[Action, type[APIError], str]] = {
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
    "user_rate_limit_exceeded": (R, RateLimitError, "qps request limit by APP ID reached"),
    "cluster_rate_limit_exceeded": (R, RateLimitError, "request limit by resource cluster reached"),
    "rpm_rate_limit_exceeded": (R, RateLimitError, "Rate limit reached for RPM"),
    "tpm_rate_limit_exceeded": (R, RateLimitError, "Rate limit reached for TPM"),
    "input_tpm_rate_limit_exceeded": (R, RateLimitError, "Rate limit reached for input TPM"),
    "output_tpm_rate_limit_exceeded": (R, RateLimitError, "Rate limit reached for output TPM"),
    "cluster_rpm_rate_limit_exceeded": (R, RateLimitError, "cluster RPM limit reached"),
    "cluster_tpm_rate_limit_exceeded": (R, RateLimitError, "cluster TPM limit reached"),
    "preemptible_rate_limit_exceeded": (R, RateLimitError, "preemptible traffic limit reached"),
}
del R, F, X


def classify_code(code: int | str) -> tuple[Action, type[APIError]]:
    """The action and error class for an API error code; unknown codes raise as APIError."""
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
    code: int | str,
    message: str,
    *,
    status_code: int | None,
    request_id: str | None,
) -> tuple[Action, APIError]:
    """Build the error for an error envelope and say what to do about it."""
    action, cls = classify_code(code)
    return action, cls(message, error_code=code, status_code=status_code, request_id=request_id)


# -- failures, as the command line sees them ---------------------------------------------


class Failure(enum.Enum):
    """What kind of failure ended a call; each value is its name in a batch record."""

    INVALID_JSON = "invalid_json"
    """A batch input line is not a JSON value."""
    INVALID_REQUEST = "invalid_request"
    """The request breaks the API's rules (refused before any I/O)."""
    CONFIGURATION = "configuration"
    """The client was set up wrongly."""
    AUTHENTICATION = "authentication"
    """The credentials were refused."""
    PERMISSION = "permission"
    """The credentials may not use this service."""
    NOT_FOUND = "not_found"
    """No such endpoint."""
    QUOTA = "quota"
    """A daily or total request quota is used up: no retry helps today."""
    RATE_LIMIT = "rate_limit"
    """A per-second or per-minute limit."""
    SERVER_ERROR = "server_error"
    """The service failed."""
    MALFORMED_RESPONSE = "malformed_response"
    """The reply was not the protocol."""
    HTTP_ERROR = "http_error"
    """Any other refusal by the service."""
    TIMEOUT = "timeout"
    """A wait ran out."""
    CONNECTION = "connection"
    """The network failed."""
    STREAM = "stream"
    """A stream broke before its end."""
    UNEXPECTED = "error"
    """Anything else."""

    @property
    def transient(self) -> bool:
        """Whether a later run may succeed where this one failed (not the request's fault)."""
        return self not in _PERMANENT

    @property
    def stops_every_call(self) -> bool:
        """Whether every other call would fail the same way (so a batch run stops)."""
        return self in _FOR_EVERY_CALL

    @property
    def callers_fault(self) -> bool:
        """Whether the caller must change something: the command line exits with 2."""
        return self in (Failure.INVALID_REQUEST, Failure.CONFIGURATION)


_PERMANENT = frozenset(
    {Failure.INVALID_JSON, Failure.INVALID_REQUEST, Failure.HTTP_ERROR, Failure.UNEXPECTED}
)
_FOR_EVERY_CALL = frozenset(
    {
        Failure.CONFIGURATION,
        Failure.AUTHENTICATION,
        Failure.PERMISSION,
        Failure.NOT_FOUND,
        Failure.QUOTA,
    }
)
#: The failures told apart by class alone, most specific first.
_BY_CLASS: tuple[tuple[type[BaseException], Failure], ...] = (
    (RequestValidationError, Failure.INVALID_REQUEST),
    (ConfigurationError, Failure.CONFIGURATION),
    (AuthenticationError, Failure.AUTHENTICATION),
    (PermissionDeniedError, Failure.PERMISSION),
    (NotFoundError, Failure.NOT_FOUND),
    (InternalServerError, Failure.SERVER_ERROR),
    (MalformedResponseError, Failure.MALFORMED_RESPONSE),
    (APIError, Failure.HTTP_ERROR),
    (APITimeoutError, Failure.TIMEOUT),
    (APIConnectionError, Failure.CONNECTION),
    (SharedStoreError, Failure.CONNECTION),  # Redis's network, not the service's
    (StreamError, Failure.STREAM),
)


def _failure_of_class(cls: type[BaseException], code: int | str | None) -> Failure:
    if issubclass(cls, RateLimitError):
        # A limit the table says not to retry is a quota (daily, total).
        quota = code is not None and classify_code(code)[0] is Action.RAISE
        return Failure.QUOTA if quota else Failure.RATE_LIMIT
    for base, failure in _BY_CLASS:
        if issubclass(cls, base):
            return failure
    return Failure.UNEXPECTED


def failure_of(exc: BaseException) -> Failure:
    """What kind of failure ``exc`` is.

    Args:
        exc: The error a call ended with.
    """
    return _failure_of_class(type(exc), getattr(exc, "error_code", None))


def record_code(exc: BaseException) -> int | str:
    """The ``code`` a batch record keeps: the API's ``error_code``, else the failure's name.

    Args:
        exc: Why the line failed.
    """
    code = exc.error_code if isinstance(exc, APIError) else None
    return code if code is not None else failure_of(exc).value


def is_transient(code: object) -> bool:
    """Whether a line recorded with ``code`` is worth trying again in a later run.

    True for the failures that are not the line's fault: connection, timeout, rate limits
    and quotas, server errors, malformed replies, and the codes the client retries or
    that refuse the credentials. False for a request the API refused (or would refuse).

    Args:
        code: The ``code`` of a record (see :func:`record_code`).
    """
    if is_int(code) or (isinstance(code, str) and code in CODE_TABLE):
        action, cls = classify_code(code)
        return action is not Action.RAISE or _failure_of_class(cls, code).transient
    try:
        return Failure(code).transient
    except ValueError:
        return False
