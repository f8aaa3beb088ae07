"""Every error mpt_async raises, and nothing else.

The tree::

    MPTError
    ├── RequestValidationError (also a ValueError)  raised before any I/O
    ├── ConfigurationError (also a ValueError)      bad or missing settings or credentials
    ├── APIError                                    the service said no (or sent nonsense)
    │   ├── AuthenticationError                     refused credentials; 110/111 not cured
    │   ├── RateLimitError                          HTTP 429, codes 4/17/18/19/336501/336502
    │   ├── PermissionDeniedError                   codes 6, 336004
    │   ├── NotFoundError                           code 336005 (no such endpoint), HTTP 404
    │   ├── InvalidRequestError                     codes 3, 336001-336007, 336101, 336103-336105
    │   ├── InternalServerError                     codes 1/2/15/336000/336100, HTTP 5xx
    │   └── MalformedResponseError                  a reply that is not the protocol's shape
    ├── APIConnectionError                          the request did not get an answer
    │   └── APITimeoutError
    ├── SharedStoreError                            Redis did not answer (on_error="raise")
    └── StreamError                                 a broken stream (gap, repeat, bad line, no end)

Which code maps to which class, and whether it is retried, is decided in one table:
``mpt_async._codes``.
"""

from __future__ import annotations

from mpt_async._quota_kind import QuotaKind

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "InternalServerError",
    "InvalidRequestError",
    "MPTError",
    "MalformedResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestValidationError",
    "SharedStoreError",
    "StreamError",
]


class MPTError(Exception):
    """The base of every error raised by mpt_async."""


class RequestValidationError(MPTError, ValueError):
    """A request broke a rule of the API; it was refused before anything was sent.

    Attributes:
        field: The offending field, as a dotted path (``messages[2].content``).
        rule: The rule that was broken, in words.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule

    def __reduce__(self) -> tuple[type[RequestValidationError], tuple[str, str]]:
        return (type(self), (self.field, self.rule))


class ConfigurationError(MPTError, ValueError):
    """The client was set up wrongly: missing credentials, a bad option."""


class APIError(MPTError):
    """The service answered with an error, or with something that is not the protocol.

    Attributes:
        error_code: The API's ``error_code`` (``None`` for a bare HTTP error).
        error_msg: The API's ``error_msg``, or a description of the HTTP error.
        status_code: The HTTP status, when there was a response.
        request_id: The request's id, when the service sent one.
    """

    def __init__(
        self,
        error_msg: str,
        *,
        error_code: int | str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        parts = [f"error_code={error_code}"] if error_code is not None else []
        if status_code is not None:
            parts.append(f"status={status_code}")
        if request_id is not None:
            parts.append(f"request_id={request_id}")
        super().__init__(f"{error_msg} ({', '.join(parts)})" if parts else error_msg)
        self.error_code = error_code
        self.error_msg = error_msg
        self.status_code = status_code
        self.request_id = request_id

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_api_error,
            (type(self), self.error_msg, self.error_code, self.status_code, self.request_id),
        )


def _rebuild_api_error(
    cls: type[APIError],
    error_msg: str,
    error_code: int | str | None,
    status_code: int | None,
    request_id: str | None,
) -> APIError:
    return cls(error_msg, error_code=error_code, status_code=status_code, request_id=request_id)


class AuthenticationError(APIError):
    """The credentials were refused (token endpoint, signature, or a token a refresh did not cure).

    Attributes:
        error: For token endpoint refusals, the OAuth ``error`` (``invalid_client``).
    """

    error: str | None = None


class RateLimitError(APIError):
    """A quota or rate limit was hit (HTTP 429, codes 4/17/18/19/336501/336502).

    A refusal by a rate (per second, per minute, tokens) is not raised: the call waits
    for capacity and tries again, up to ``Timeouts.quota``. This error says why it came.

    Attributes:
        quota: Which quota refused (per second, minute, tokens, day, total); ``None``
            when the service did not say.
        can_wait: Whether waiting can help: ``False`` for a daily or total quota.
    """

    def __init__(
        self,
        error_msg: str,
        *,
        error_code: int | str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        quota: QuotaKind | None = None,
    ) -> None:
        super().__init__(
            error_msg, error_code=error_code, status_code=status_code, request_id=request_id
        )
        self.quota = quota

    @property
    def can_wait(self) -> bool:
        """Whether waiting can help (``True`` unless the quota is a daily or total one)."""
        return self.quota is None or self.quota.waits

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_rate_limit_error,
            (
                type(self),
                self.error_msg,
                self.error_code,
                self.status_code,
                self.request_id,
                self.quota,
            ),
        )


def _rebuild_rate_limit_error(
    cls: type[RateLimitError],
    error_msg: str,
    error_code: int | str | None,
    status_code: int | None,
    request_id: str | None,
    quota: QuotaKind | None,
) -> RateLimitError:
    return cls(
        error_msg,
        error_code=error_code,
        status_code=status_code,
        request_id=request_id,
        quota=quota,
    )


class PermissionDeniedError(APIError):
    """The credentials are valid but may not use this service (codes 6, 336004)."""


class NotFoundError(APIError):
    """No service answers to this endpoint name (code 336005, HTTP 404)."""


class InvalidRequestError(APIError):
    """The service refused the request's parameters."""


class InternalServerError(APIError):
    """The service failed (HTTP 5xx, codes 1/2/15/336000/336100); retried by default."""


class MalformedResponseError(APIError):
    """The reply is not what the protocol promises (not JSON, wrong shape or types)."""


class APIConnectionError(MPTError):
    """No answer came back: the connection failed, was dropped, or broke mid-way."""


class APITimeoutError(APIConnectionError):
    """No answer came back in time (connect, write, or the idle gap while reading)."""


class SharedStoreError(MPTError):
    """A :class:`~mpt_async.RedisStore` set to fail closed (``on_error="raise"``) got no answer.

    Redis's outage, not the service's, so not an :class:`APIConnectionError`: it is
    raised before the attempt that needed Redis (its rate-limit place, its token lock) is
    sent, and it is not retried.
    """


class StreamError(MPTError):
    """A stream broke the protocol: a ``sentence_id`` gap or repeat, a bad line, or no end.

    Attributes:
        received: How many chunks had been received before the break.
    """

    def __init__(self, message: str, *, received: int = 0) -> None:
        super().__init__(message)
        self.received = received

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_stream_error, (str(self), self.received))


def _rebuild_stream_error(message: str, received: int) -> StreamError:
    return StreamError(message, received=received)
