"""The package's logger, and the filter that keeps secrets out of the HTTP libraries' logs.

What counts as a secret is decided by the one redactor, :mod:`mpt_async._redact`.

httpx logs every request at INFO with its full URL, and a Qianfan URL carries the access
token (``?access_token=``) or, on the token endpoint, the Secret Key (``client_secret=``);
httpcore and aiohttp log beneath it. The filter goes on every logger they log on.
"""

from __future__ import annotations

import logging

from mpt_async._redact import redact

__all__ = ["install_redaction", "logger", "redact"]

logger = logging.getLogger("mpt_async")


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message shows a token or secret, so that none is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops the record.

        The message is redacted once formatted: a secret may straddle the format string and
        its arguments (``"access_token=%s"``), and masking the format string alone could eat
        a placeholder and break the record.
        """
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record: logging reports msg and args
            record.msg = redact(str(record.msg))
            if isinstance(record.args, dict):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
            elif record.args:
                record.args = tuple(_redact_arg(a) for a in record.args)
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _redact_arg(value: object) -> object:
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


_FILTER = RedactSecrets()

#: The families of loggers that HTTP libraries under the client log on.
_FAMILIES = ("httpx", "httpcore", "aiohttp")
#: Their members known to log: a logger's filters see only the records logged on that very
#: logger, never its children's, and httpcore logs on "httpcore.http11" and its siblings,
#: never on "httpcore" itself. Named here so that the filter is there before they log.
_MEMBERS = (
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "aiohttp.client",
    "aiohttp.internal",
)


def install_redaction() -> None:
    """Attach the filter to every logger of httpx, httpcore and aiohttp (idempotent).

    That is each of them by name, the members known to log, and any other member already
    created (a library's modules create their loggers when imported).
    """
    prefixes = tuple(family + "." for family in _FAMILIES)
    existing = [name for name in logging.Logger.manager.loggerDict if name.startswith(prefixes)]
    for name in {*_FAMILIES, *_MEMBERS, *existing}:
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
