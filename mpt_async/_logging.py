"""The package's logger, and the filter that keeps secrets out of httpx's log lines.

What counts as a secret is decided by the one redactor, :mod:`mpt_async._redact`.

httpx logs every request at INFO with its full URL, and a Qianfan URL carries the access
token (``?access_token=``) or, on the token endpoint, the Secret Key (``client_secret=``).
"""

from __future__ import annotations

import logging

from mpt_async._redact import redact

__all__ = ["install_redaction", "logger", "redact"]

logger = logging.getLogger("mpt_async")


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and arguments so that no token or secret is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops the record."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            if isinstance(record.args, dict):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_redact_arg(a) for a in record.args)
        return True


def _redact_arg(value: object) -> object:
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Attach the filter to httpx's and httpcore's loggers (once)."""
    for name in ("httpx", "httpcore"):
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
