"""The one TLS policy: the ``ssl.SSLContext`` that every transport verifies servers with.

A client's ``verify=`` option is checked when the client is made, and one context is made
from it, at the first ``https`` connection (making one reads a CA bundle, which costs
milliseconds). The same context goes to whichever transport carries the calls: mpt_async's
pool, the aiohttp adapter (its connector's ``ssl=``) and httpx's own transport, so that
a server is trusted, or not, whatever the transport.

- ``True`` (the default): httpx's default trust, the CA bundle of ``certifi``; with
  ``trust_env``, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` replace it when set, as in httpx.
- A path: the CA bundle (a PEM file) or directory (``c_rehash``'ed) to trust instead.
- An ``ssl.SSLContext``: used as it is.
- ``False``: no verification at all, for tests against a server with a throwaway
  certificate only (anyone on the path can then read and change the calls).
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import TypeAlias

from mpt_async._validate import refuse

__all__ = ["TLS", "check_verify"]

_Checked: TypeAlias = "bool | str | ssl.SSLContext"


def check_verify(value: object) -> _Checked:
    """``value`` as a ``verify=`` option: a bool, an existing path's text, or a context.

    Raises:
        ConfigurationError: Another type, or a path to nothing.
    """
    if isinstance(value, (bool, ssl.SSLContext)):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        refuse(
            "verify",
            "must be True, False, a path to a CA bundle, or an ssl.SSLContext; not "
            f"{type(value).__name__}",
        )
    if not value or not os.path.exists(value):
        refuse("verify", f"names no CA bundle file or directory: {value[:200]!r}")
    return value


def _from_path(path: str) -> ssl.SSLContext:
    """A verifying context trusting the CA bundle at ``path`` (a file, or a directory)."""
    try:
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        refuse("verify", f"names a file that holds no CA certificate it can read ({reason})")


class TLS:
    """A client's TLS settings, and the one context made from them when first needed.

    Args:
        verify: The checked ``verify=`` option (see :func:`check_verify`).
        trust_env: Whether ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` may replace the default
            trust (as in httpx).

    Raises:
        ConfigurationError: A path to a file that is no CA bundle (read at once, so that
            the mistake shows before any call).
    """

    __slots__ = ("_context", "trust_env", "verify")

    def __init__(self, verify: _Checked = True, *, trust_env: bool = True) -> None:
        self.verify = verify
        self.trust_env = trust_env
        self._context: ssl.SSLContext | None = None
        if isinstance(verify, ssl.SSLContext):
            self._context = verify
        elif isinstance(verify, str):
            self._context = _from_path(verify)

    def __repr__(self) -> str:
        shown = "SSLContext" if isinstance(self.verify, ssl.SSLContext) else repr(self.verify)
        return f"TLS(verify={shown}, trust_env={self.trust_env})"

    def context(self) -> ssl.SSLContext:
        """The one ``ssl.SSLContext`` of these settings (made on the first call)."""
        if self._context is None:
            assert isinstance(self.verify, bool)  # a path or a context was set at __init__
            variables = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            self._context = _default(self.verify, self.trust_env, *variables)
        return self._context


@functools.lru_cache(maxsize=8)
def _default(verify: bool, trust_env: bool, *variables: str | None) -> ssl.SSLContext:
    """The context httpx makes for ``verify=True`` or ``False``, made once and shared.

    Making one reads certifi's bundle, which costs milliseconds a client. The environment's
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (``variables``, which httpx reads) are part of the
    key, so that a new value makes a new context.
    """
    import httpx  # httpx's default trust: certifi, or SSL_CERT_FILE / SSL_CERT_DIR

    return httpx.create_ssl_context(verify=verify, trust_env=trust_env)
