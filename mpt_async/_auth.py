"""The three ways to authenticate, and reading them from the environment.

The service takes an access token
(https://cloud.baidu.com/doc/WENXINWORKSHOP/s/Ilkkrb0i5) or a bce-auth-v1 signature
(https://cloud.baidu.com/doc/Reference/s/njwvz1yfu); the environment variables are the
``qianfan`` SDK's, so users can switch without edits.

These are plain, frozen descriptions of credentials; what to do with them on each request
(fetch and cache a token, or sign) is the transport's job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

from mpt_async._exceptions import ConfigurationError
from mpt_async._signer import DEFAULT_EXPIRATION
from mpt_async._token_store import MAX_TOKEN_LENGTH, is_token
from mpt_async._validate import check_int, check_str

__all__ = [
    "AKSKAuth",
    "AccessTokenAuth",
    "Auth",
    "FixedTokenAuth",
    "ENV_VARS",
    "auth_from_env",
    "base_url_from_env",
]

DEFAULT_BASE_URL = "https://aip.baidubce.com"
#: The longest a bce-auth-v1 signature may stay valid, in seconds.
_MAX_EXPIRATION = 1800

#: The environment variables read when ``auth=None`` (the qianfan SDK's names).
ENV_VARS = (
    "QIANFAN_ACCESS_TOKEN",
    "QIANFAN_AK",
    "QIANFAN_SK",
    "QIANFAN_ACCESS_KEY",
    "QIANFAN_SECRET_KEY",
    "QIANFAN_BASE_URL",
)


def _mask(value: str) -> str:
    """Show only enough of an identifier to tell two apart."""
    return repr(value[:4] + "…") if len(value) > 8 else "'…'"


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_str(value, f"{type(instance).__name__}.{attribute.name}", non_empty=True)


def _sendable(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    """A token that could be sent (a 70,000-character one would not fit in a URL)."""
    _non_empty(instance, attribute, value)
    if not is_token(value):
        msg = (
            f"{type(instance).__name__}.{attribute.name} must be 1 to {MAX_TOKEN_LENGTH}"
            f" printable characters, not {len(value)} characters"
        )
        raise ConfigurationError(msg)


@attrs.frozen
class AccessTokenAuth:
    """An application's API Key and Secret Key, traded for an access token (refreshed for you).

    Args:
        api_key: The application's API Key (``client_id``).
        secret_key: The application's Secret Key; never shown in ``repr``.
    """

    api_key: str = attrs.field(validator=_non_empty, repr=_mask)
    secret_key: str = attrs.field(validator=_non_empty, repr=False)


@attrs.frozen
class AKSKAuth:
    """IAM Access Key and Secret Key: every request is signed with bce-auth-v1.

    Args:
        access_key: The IAM Access Key.
        secret_key: The IAM Secret Key; never shown in ``repr``.
        expiration: How long each signature is valid, in seconds (at most 1800).
    """

    access_key: str = attrs.field(validator=_non_empty, repr=_mask)
    secret_key: str = attrs.field(validator=_non_empty, repr=False)
    expiration: int = attrs.field(default=DEFAULT_EXPIRATION)

    @expiration.validator
    def _check_expiration(self, _: object, value: int) -> None:
        check_int(value, "AKSKAuth.expiration", low=1, high=_MAX_EXPIRATION)


@attrs.frozen
class FixedTokenAuth:
    """An access token obtained elsewhere; used as is and never refreshed.

    Args:
        access_token: The token; never shown in ``repr``.
    """

    access_token: str = attrs.field(validator=_sendable, repr=False)


Auth = AccessTokenAuth | AKSKAuth | FixedTokenAuth


def auth_from_env(environ: Mapping[str, str] | None = None) -> Auth:
    """Pick credentials from the environment, as the qianfan SDK names them.

    In order: ``QIANFAN_ACCESS_TOKEN``; ``QIANFAN_AK`` + ``QIANFAN_SK``;
    ``QIANFAN_ACCESS_KEY`` + ``QIANFAN_SECRET_KEY``.

    Raises:
        ConfigurationError: If none is set (or only half a pair), saying what to set.
    """
    env = os.environ if environ is None else environ
    if token := env.get("QIANFAN_ACCESS_TOKEN"):
        return FixedTokenAuth(token)
    for key, secret, cls in (
        ("QIANFAN_AK", "QIANFAN_SK", AccessTokenAuth),
        ("QIANFAN_ACCESS_KEY", "QIANFAN_SECRET_KEY", AKSKAuth),
    ):
        first, second = env.get(key), env.get(secret)
        if first and second:
            return cls(first, second)
        if first or second:
            missing = secret if first else key
            msg = f"{key} and {secret} go together: {missing} is not set"
            raise ConfigurationError(msg)
    msg = (
        "no credentials: pass auth=..., or set QIANFAN_AK and QIANFAN_SK (API Key and Secret "
        "Key), QIANFAN_ACCESS_KEY and QIANFAN_SECRET_KEY (IAM AK/SK), or QIANFAN_ACCESS_TOKEN"
    )
    raise ConfigurationError(msg)


def base_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``QIANFAN_BASE_URL``, or Baidu's own host."""
    env = os.environ if environ is None else environ
    return env.get("QIANFAN_BASE_URL") or DEFAULT_BASE_URL
