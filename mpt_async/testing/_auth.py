"""Checking ``bce-auth-v1`` signatures the way Baidu's gateway does.

The expected signature is recomputed with :mod:`mpt_async._signer` from what actually
arrived (method, path, query, and the headers the client says it signed, ``Host``
included), so a client that signs a different Host or a stale header fails here.
"""

from __future__ import annotations

import datetime as _dt
import hmac
from collections.abc import Mapping, Sequence

from mpt_async import _signer

__all__ = ["BAIDU_DEFAULT_SIGNED", "MAX_CLOCK_SKEW", "MAX_EXPIRATION", "verify_signature"]

#: The longest validity a signature may claim, in seconds.
MAX_EXPIRATION = 1800
#: How far in the future a signature's timestamp may be, in seconds.
MAX_CLOCK_SKEW = 300
#: What an empty signedHeaders field means to Baidu: these, plus every ``x-bce-*``.
BAIDU_DEFAULT_SIGNED = ("host", "content-length", "content-type", "content-md5")


def _parse_timestamp(text: str) -> float | None:
    try:
        when = _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return when.replace(tzinfo=_dt.timezone.utc).timestamp()


def _expiration(text: str) -> int | None:
    # ASCII digits only ("²" is a digit to str.isdigit() but not to int()), and short.
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        return None
    expiration = int(text)
    return expiration if 0 < expiration <= MAX_EXPIRATION else None


def _signed_headers(signed_field: str, headers: Mapping[str, str]) -> list[str]:
    if signed_field:
        return signed_field.split(";")
    return [*BAIDU_DEFAULT_SIGNED, *(h for h in headers if h.startswith("x-bce-"))]


def verify_signature(
    authorization: str,
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    keys: Mapping[str, str],
    now: float,
) -> bool:
    """Whether an ``Authorization`` header is a valid, current bce-auth-v1 signature.

    Args:
        authorization: The header's value.
        method: The request's method.
        path: The request's path, percent-decoded.
        query: The query pairs, percent-decoded, in order.
        headers: The received headers, names lower-case.
        keys: Access key to secret key, for every known access key.
        now: The current time, seconds since the epoch.
    """
    parts = authorization.strip().split("/")
    if len(parts) != 6 or parts[0] != _signer.AUTH_VERSION:
        return False
    _, access_key, timestamp, expiration_text, signed_field, signature = parts
    secret_key = keys.get(access_key)
    signed_at = _parse_timestamp(timestamp)
    expiration = _expiration(expiration_text)
    if secret_key is None or signed_at is None or expiration is None:
        return False
    if now > signed_at + expiration or signed_at > now + MAX_CLOCK_SKEW:
        return False
    signed = _signed_headers(signed_field, headers)
    # Baidu refuses a signature that does not cover the Host it was sent to.
    if "host" not in (name.strip().lower() for name in signed):
        return False
    expected = _signer.authorization(
        access_key=access_key,
        secret_key=secret_key,
        method=method,
        path=path,
        query=query,
        headers=headers,
        timestamp=timestamp,
        expiration=expiration,
        signed_headers=signed,
    )
    return hmac.compare_digest(expected.rsplit("/", 1)[1], signature)
