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
from typing import TYPE_CHECKING

import attrs

from mpt_async._exceptions import ConfigurationError
from mpt_async._signer import DEFAULT_EXPIRATION
from mpt_async._token_store import MAX_TOKEN_LENGTH, is_token
from mpt_async._validate import check_int, check_str

if TYPE_CHECKING:
    from mpt_async._dialect import API

__all__ = [
    "AKSKAuth",
    "APIKeyAuth",
    "AccessTokenAuth",
    "Auth",
    "FixedTokenAuth",
    "ENV_VARS",
    "auth_from_env",
    "base_url_from_env",
]

DEFAULT_BASE_URL = "https://aip.baidubce.com"
#: The v2 interface's host.
DEFAULT_V2_BASE_URL = "https://qianfan.baidubce.com"
#: Where IAM issues bearer tokens for IAM AK/SK (v2).
DEFAULT_IAM_BASE_URL = "https://iam.bj.baidubce.com"
#: How a v2 API key (and an IAM bearer token) begins.
V2_KEY_PREFIX = "bce-v3/"
#: The longest a bce-auth-v1 signature may stay valid, in seconds.
_MAX_EXPIRATION = 1800

#: The environment variables read when ``auth=None`` (the qianfan SDK's names).
ENV_VARS = (
    "QIANFAN_API_KEY",
    "QIANFAN_ACCESS_TOKEN",
    "QIANFAN_AK",
    "QIANFAN_SK",
    "QIANFAN_ACCESS_KEY",
    "QIANFAN_SECRET_KEY",
    "QIANFAN_BASE_URL",
    "QIANFAN_IAM_BASE_URL",
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

    def _billed(self) -> tuple[str, str]:
        """Who is billed, and the secret that proves it: only ever hashed (shared keys)."""
        return self.api_key, self.secret_key


@attrs.frozen
class APIKeyAuth:
    """A permanent v2 API key (``bce-v3/ALTAK-…/…``), sent as ``Authorization: Bearer``.

    It is sent to the service only, never to the token endpoints.

    Args:
        api_key: The key, as the console shows it; never shown in ``repr``.
    """

    api_key: str = attrs.field(validator=_non_empty, repr=False)

    def _billed(self) -> tuple[str, str]:
        """Who is billed, and the secret that proves it: only ever hashed (shared keys)."""
        return "apikey\0", self.api_key


@attrs.frozen
class AKSKAuth:
    """IAM Access Key and Secret Key.

    On the v2 interface (the default for these keys) they are traded with IAM for a bearer
    token, refreshed for you; on v1 every request is signed with bce-auth-v1.

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

    def _billed(self) -> tuple[str, str]:
        """Who is billed, and the secret that proves it: only ever hashed (shared keys)."""
        return f"aksk\0{self.access_key}", self.secret_key


@attrs.frozen
class FixedTokenAuth:
    """An access token obtained elsewhere; used as is and never refreshed.

    Args:
        access_token: The token; never shown in ``repr``.
    """

    access_token: str = attrs.field(validator=_sendable, repr=False)

    def _billed(self) -> tuple[str, str]:
        """Who is billed, and the secret that proves it: only ever hashed (shared keys)."""
        return "fixed\0", self.access_token


Auth = APIKeyAuth | AccessTokenAuth | AKSKAuth | FixedTokenAuth


def auth_from_env(environ: Mapping[str, str] | None = None) -> Auth:
    """Pick credentials from the environment, as the qianfan SDK names them.

    In order: ``QIANFAN_API_KEY`` (a v2 API key); ``QIANFAN_ACCESS_TOKEN``; ``QIANFAN_AK`` +
    ``QIANFAN_SK``; ``QIANFAN_ACCESS_KEY`` + ``QIANFAN_SECRET_KEY``.

    Raises:
        ConfigurationError: If none is set (or only half a pair), saying what to set.
    """
    env = os.environ if environ is None else environ
    if key := env.get("QIANFAN_API_KEY"):
        return APIKeyAuth(key)
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
        "no credentials: pass auth=..., or set QIANFAN_API_KEY (a v2 API key), QIANFAN_AK and "
        "QIANFAN_SK (v1 API Key and Secret Key), QIANFAN_ACCESS_KEY and QIANFAN_SECRET_KEY "
        "(IAM AK/SK), or QIANFAN_ACCESS_TOKEN"
    )
    raise ConfigurationError(msg)


def default_api(auth: Auth) -> API:
    """The interface ``auth`` speaks when ``api`` is not given.

    A v2 API key means v2, and so do IAM AK/SK: Baidu switched the v1 interface off on
    2026-08-31, and these keys work on v2 (through an IAM bearer token). A v1 application's
    API Key and Secret Key, or an access token, mean v1: they only work there.
    """
    return "v2" if isinstance(auth, (APIKeyAuth, AKSKAuth)) else "v1"


def check_api(auth: Auth, api: object) -> API:
    """``api`` checked against ``auth`` (``None``: the credentials' own).

    Raises:
        ConfigurationError: For an unknown interface, or credentials it does not take.
    """
    if api is None:
        return default_api(auth)
    if api not in ("v1", "v2"):
        raise ConfigurationError(f"api must be 'v1' or 'v2', not {api!r}")
    if api == "v2" and isinstance(auth, AccessTokenAuth):
        msg = (
            "a v1 application's API Key and Secret Key (AccessTokenAuth) do not work on the v2 "
            "interface: use a v2 API key (APIKeyAuth) or IAM AK/SK (AKSKAuth)"
        )
        raise ConfigurationError(msg)
    if api == "v1" and isinstance(auth, APIKeyAuth):
        raise ConfigurationError("a v2 API key (APIKeyAuth) only works with api='v2'")
    return "v2" if api == "v2" else "v1"


def base_url_from_env(api: API = "v1", environ: Mapping[str, str] | None = None) -> str:
    """``QIANFAN_BASE_URL``, or Baidu's own host for ``api``."""
    env = os.environ if environ is None else environ
    default = DEFAULT_V2_BASE_URL if api == "v2" else DEFAULT_BASE_URL
    return env.get("QIANFAN_BASE_URL") or default


def iam_base_url_from_env(base_url: str, environ: Mapping[str, str] | None = None) -> str:
    """``QIANFAN_IAM_BASE_URL``; else IAM's own host, or ``base_url`` when it is not Baidu's.

    A service address of your own (a gateway, the emulator) serves the token route too.
    """
    env = os.environ if environ is None else environ
    if url := env.get("QIANFAN_IAM_BASE_URL"):
        return url
    baidu = base_url.rstrip("/") in (DEFAULT_BASE_URL, DEFAULT_V2_BASE_URL)
    return DEFAULT_IAM_BASE_URL if baidu else base_url
