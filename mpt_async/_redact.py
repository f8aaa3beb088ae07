"""The one redactor: which values are secret, and how they are masked wherever they show.

The rules, in one place:

- URL query parameters ``access_token`` and ``client_secret`` (a Qianfan URL carries the
  access token, and on the token endpoint the Secret Key).
- ``Authorization`` headers, whatever their scheme, and any bce-auth-v1 signature string.
- ``Bearer`` credentials.
- The password in a URL's user information (``http://user:password@proxy:3128``).
- Literal secrets the caller knows of (a key, a token), wherever they appear.

The API Key (``client_id``) and the IAM Access Key identify an account without granting
anything; they are not masked.

:func:`scrub` applies the rules to an error on its way out to the caller, and cuts its chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mpt_async._exceptions import APIError, AuthenticationError, MPTError

__all__ = ["MASK", "SECRET_NAMES", "redact", "redact_pairs", "scrub"]

#: What a secret is replaced with.
MASK = "***"
#: Query parameters and headers whose values are secret (compared in lower case).
SECRET_NAMES = frozenset({"access_token", "authorization", "client_secret"})
#: Secrets shorter than this are not masked literally (they would mask ordinary text).
_MIN_LITERAL = 4

_PATTERNS = (
    # name=value in a URL query, a form body or a log line.
    (re.compile(r"(?i)\b(access_token|client_secret)=[^&\s\"'<>]*"), rf"\1={MASK}"),
    # An Authorization header, as a line ("Authorization: x") or in a repr ('authorization': 'x').
    (
        re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)[^\r\n'\"]*"),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)\bbce-auth-v1/[^\s'\"<>]*"), f"bce-auth-v1/{MASK}"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\"<>]+"), rf"\1{MASK}"),
    # scheme://user:password@host: the password.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@'\"<>]*:)[^/\s@'\"<>]+@"), rf"\1{MASK}@"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret masked as ``***``.

    Args:
        text: What is about to be shown: a message, a log line, a URL.
        secrets: Literal secrets to mask as well (a key, a token).
    """
    for secret in sorted({s for s in secrets if len(s) >= _MIN_LITERAL}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_pairs(pairs: Mapping[str, str], mask: str = MASK) -> dict[str, str]:
    """A copy of query parameters or headers with the secret ones' values masked.

    Args:
        pairs: Names and values (names compared in lower case).
        mask: What each secret value becomes.
    """
    return {k: mask if k.lower() in SECRET_NAMES else v for k, v in pairs.items()}


def scrub(error: MPTError, secrets: Iterable[str]) -> MPTError:
    """Mask ``secrets`` (and anything the redactor knows) in ``error``, and cut its chain.

    The one exit check before an error reaches the caller: a server may echo a URL, a key
    or a signature in ``error_msg``, ``error_description`` or its reason phrase.
    """
    secrets = tuple(secrets)
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    if isinstance(error, APIError):
        error.error_msg = redact(error.error_msg, secrets)
        if isinstance(error, AuthenticationError) and error.error is not None:
            error.error = redact(error.error, secrets)
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = False
    return error
