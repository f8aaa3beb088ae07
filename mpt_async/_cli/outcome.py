"""How the command line sorts the errors it reports: into outcomes, each with its name.

An :class:`Outcome` names a failed line in a batch record, says whether a later run may do
better (:attr:`Outcome.transient`), whether every other call would fail the same way (a
batch run stops), and whether the caller must change something (exit status 2). The
request loop's decisions stay in the code table (:mod:`mpt_async._codes`).
"""

from __future__ import annotations

import enum

from mpt_async._codes import CODE_TABLE, Action, classify_code
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestValidationError,
    SharedStoreError,
    StreamError,
)
from mpt_async._validate import is_int

__all__ = ["Outcome", "is_transient", "outcome_of", "record_code"]


class Outcome(enum.Enum):
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
        return self in (Outcome.INVALID_REQUEST, Outcome.CONFIGURATION)


_PERMANENT = frozenset(
    {Outcome.INVALID_JSON, Outcome.INVALID_REQUEST, Outcome.HTTP_ERROR, Outcome.UNEXPECTED}
)
_FOR_EVERY_CALL = frozenset(
    {
        Outcome.CONFIGURATION,
        Outcome.AUTHENTICATION,
        Outcome.PERMISSION,
        Outcome.NOT_FOUND,
        Outcome.QUOTA,
    }
)
#: The failures told apart by class alone, most specific first.
_BY_CLASS: tuple[tuple[type[BaseException], Outcome], ...] = (
    (RequestValidationError, Outcome.INVALID_REQUEST),
    (ConfigurationError, Outcome.CONFIGURATION),
    (AuthenticationError, Outcome.AUTHENTICATION),
    (PermissionDeniedError, Outcome.PERMISSION),
    (NotFoundError, Outcome.NOT_FOUND),
    (InternalServerError, Outcome.SERVER_ERROR),
    (MalformedResponseError, Outcome.MALFORMED_RESPONSE),
    (APIError, Outcome.HTTP_ERROR),
    (APITimeoutError, Outcome.TIMEOUT),
    (APIConnectionError, Outcome.CONNECTION),
    (SharedStoreError, Outcome.CONNECTION),  # Redis's network, not the service's
    (StreamError, Outcome.STREAM),
)


def _outcome_of_class(cls: type[BaseException], code: int | str | None) -> Outcome:
    if issubclass(cls, RateLimitError):
        # A limit the table says not to retry is a quota (daily, total).
        quota = code is not None and classify_code(code)[0] is Action.RAISE
        return Outcome.QUOTA if quota else Outcome.RATE_LIMIT
    for base, failure in _BY_CLASS:
        if issubclass(cls, base):
            return failure
    return Outcome.UNEXPECTED


def outcome_of(exc: BaseException) -> Outcome:
    """What kind of failure ``exc`` is.

    Args:
        exc: The error a call ended with.
    """
    return _outcome_of_class(type(exc), getattr(exc, "error_code", None))


def record_code(exc: BaseException) -> int | str:
    """The ``code`` a batch record keeps: the API's ``error_code``, else the failure's name.

    Args:
        exc: Why the line failed.
    """
    code = exc.error_code if isinstance(exc, APIError) else None
    return code if code is not None else outcome_of(exc).value


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
        return action is not Action.RAISE or _outcome_of_class(cls, code).transient
    try:
        return Outcome(code).transient
    except ValueError:
        return False
