"""The bce-auth-v1 request signer (Baidu Cloud's AK/SK scheme), as pure functions.

Nothing here does I/O or reads a clock: the caller passes the timestamp, so the
known answers published by Baidu pin every rule (see ``tests/test_signer.py``).
The emulator verifies signatures with the same functions; those known answers,
not a shared implementation, are what keeps both sides honest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AUTH_VERSION",
    "DEFAULT_EXPIRATION",
    "authorization",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "default_signed_headers",
    "format_timestamp",
    "sign_request",
    "uri_encode",
]

AUTH_VERSION = "bce-auth-v1"
#: The qianfan SDK signs for 300 s; Baidu accepts at most 1800 s.
DEFAULT_EXPIRATION = 300
_UNRESERVED = "-._~"  # with A-Z a-z 0-9, which quote() never escapes
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """Percent-encode ``value`` as bce-auth-v1 requires.

    UTF-8 bytes; ``A-Z a-z 0-9 - . _ ~`` are kept, everything else becomes
    ``%XY`` in upper-case hex (a space is ``%20``, never ``+``).

    Args:
        value: The text to encode.
        keep_slash: Keep ``/`` as is (for the canonical URI).
    """
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def format_timestamp(when: _dt.datetime | float) -> str:
    """Format a moment as the UTC ``YYYY-MM-DDTHH:MM:SSZ`` used by ``x-bce-date``.

    Args:
        when: An aware datetime, or seconds since the epoch.
    """
    if not isinstance(when, _dt.datetime):
        when = _dt.datetime.fromtimestamp(when, tz=_dt.timezone.utc)
    elif when.tzinfo is None:
        msg = "timestamp must be timezone-aware"
        raise ValueError(msg)
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Build CanonicalQueryString: encoded ``k=v`` pairs, sorted, ``&``-joined.

    The ``authorization`` parameter is never signed; an empty value keeps its ``=``.
    """
    encoded = sorted(
        f"{uri_encode(k)}={uri_encode(v)}" for k, v in pairs if k.lower() != "authorization"
    )
    return "&".join(encoded)


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> tuple[str, str]:
    """Build CanonicalHeaders and the signedHeaders field.

    Args:
        headers: The request's headers (any case).
        signed: The header names to sign (any case).

    Returns:
        ``(canonical_headers, signed_headers)``. Headers whose trimmed value is empty
        are left out of both, as Baidu's servers do.
    """
    by_name = {k.strip().lower(): v for k, v in headers.items()}
    lines = []
    names = []
    for name in {n.strip().lower() for n in signed}:
        value = by_name.get(name, "").strip(_ASCII_WHITESPACE)
        if not value:
            continue
        names.append(name)
        lines.append(f"{uri_encode(name)}:{uri_encode(value)}")
    return "\n".join(sorted(lines)), ";".join(sorted(names))


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed: Iterable[str],
) -> tuple[str, str]:
    """Build the CanonicalRequest text and the signedHeaders field.

    Returns:
        ``(canonical_request, signed_headers)``; the request has no trailing newline
        and no body hash.
    """
    header_text, signed_field = canonical_headers(headers, signed)
    text = "\n".join(
        (method.upper(), uri_encode(path, keep_slash=True), canonical_query(query), header_text)
    )
    return text, signed_field


def _hex_hmac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def authorization(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str],
    timestamp: str,
    expiration: int = DEFAULT_EXPIRATION,
    signed_headers: Iterable[str] | None = None,
    list_signed_headers: bool = True,
) -> str:
    """Compute the ``Authorization`` header value for one request.

    Args:
        access_key: The IAM access key (AK).
        secret_key: The IAM secret key (SK); never part of the result.
        method: HTTP method.
        path: The URL path, not yet encoded.
        query: The query pairs, not yet encoded.
        headers: The headers going on the wire, including ``Host`` exactly as sent.
        timestamp: ``YYYY-MM-DDTHH:MM:SSZ`` (see :func:`format_timestamp`).
        expiration: Validity in seconds (at most 1800).
        signed_headers: Names to sign; by default ``host`` and ``content-type`` plus
            every ``x-bce-*`` header present.
        list_signed_headers: Write the signedHeaders field (``False`` leaves it empty,
            which means "the default set" to Baidu's servers).

    Returns:
        ``bce-auth-v1/{ak}/{timestamp}/{expiration}/{signedHeaders}/{signature}``.
    """
    if signed_headers is None:
        signed_headers = default_signed_headers(headers)
    prefix = f"{AUTH_VERSION}/{access_key}/{timestamp}/{expiration}"
    signing_key = _hex_hmac(secret_key, prefix)
    text, signed_field = canonical_request(method, path, query, headers, signed_headers)
    signature = _hex_hmac(signing_key, text)
    return f"{prefix}/{signed_field if list_signed_headers else ''}/{signature}"


def default_signed_headers(headers: Mapping[str, str]) -> list[str]:
    """The headers signed when the caller names none: host, content-type and x-bce-*."""
    names = {k.strip().lower() for k in headers}
    return sorted(n for n in names if n in ("host", "content-type") or n.startswith("x-bce-"))


def sign_request(
    request: httpx.Request, *, access_key: str, secret_key: str, expiration: int, now: float
) -> str:
    """Sign an httpx request in place, over its headers exactly as they will be sent.

    Sets ``x-bce-date`` (from ``now``, Unix seconds) and ``Authorization``.

    Returns:
        The signature (the secret part of the header), for keeping out of messages.
    """
    timestamp = format_timestamp(now)
    request.headers["x-bce-date"] = timestamp
    value = authorization(
        access_key=access_key,
        secret_key=secret_key,
        method=request.method,
        path=request.url.path,
        query=parse_qsl(request.url.query.decode(), keep_blank_values=True),
        headers=request.headers,
        timestamp=timestamp,
        expiration=expiration,
    )
    request.headers["Authorization"] = value
    return value.rpartition("/")[2]
