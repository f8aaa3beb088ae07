"""What every command of ``python -m mpt_async`` shares: exit statuses and error lines.

Exit statuses: 0 on success, 1 when the service or the network failed, 2 for a usage,
configuration or validation error, 130 after Ctrl-C. Every error is one line on standard
error, never a traceback, and never a secret.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from mpt_async import _redact
from mpt_async._cli.outcome import Outcome, outcome_of
from mpt_async._exceptions import ConfigurationError

__all__ = [
    "CREDENTIAL_VARS",
    "EXIT_API",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "error_line",
    "exit_code",
    "note",
    "redact",
]

#: The name used in messages.
PROG = "mpt_async"
EXIT_OK = 0
#: The service refused, the network failed, or a stream broke.
EXIT_API = 1
#: A bad option, missing configuration, or a request the API would refuse.
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: Any of these set means "talk to the real service" (half a pair is reported as an error).
CREDENTIAL_VARS = (
    "QIANFAN_API_KEY",
    "QIANFAN_ACCESS_TOKEN",
    "QIANFAN_AK",
    "QIANFAN_SK",
    "QIANFAN_ACCESS_KEY",
    "QIANFAN_SECRET_KEY",
)
_SECRET_VARS = ("QIANFAN_API_KEY", "QIANFAN_ACCESS_TOKEN", "QIANFAN_SK", "QIANFAN_SECRET_KEY")


class UsageError(ConfigurationError):
    """A mistake on the command line that argparse could not catch (exit status 2)."""


def note(text: str) -> None:
    """Print ``mpt_async: <text>`` on standard error.

    Args:
        text: What to tell the user.
    """
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the environment's secrets (and ``secrets``) masked, by the one redactor.

    Args:
        text: What is about to be printed or written.
        secrets: Extra strings to mask.
    """
    return _redact.redact(text, (*(os.environ.get(name, "") for name in _SECRET_VARS), *secrets))


#: The words before the message, by kind of failure (none: the message says it all).
_PREFIXES = {
    Outcome.INVALID_REQUEST: "invalid request",
    Outcome.AUTHENTICATION: "authentication failed",
    Outcome.QUOTA: "rate limited",
    Outcome.RATE_LIMIT: "rate limited",
    Outcome.PERMISSION: "the service refused the request",
    Outcome.NOT_FOUND: "the service refused the request",
    Outcome.SERVER_ERROR: "the service refused the request",
    Outcome.MALFORMED_RESPONSE: "the service refused the request",
    Outcome.HTTP_ERROR: "the service refused the request",
    Outcome.TIMEOUT: "timed out",
}


def _describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    failure = outcome_of(exc)
    if failure is Outcome.UNEXPECTED:
        kind = type(exc).__name__
        return f"unexpected {kind}: {message}" if message else f"unexpected {kind}"
    prefix = _PREFIXES.get(failure)
    if prefix is None or message.startswith(prefix):
        return message or type(exc).__name__
    return f"{prefix}: {message}"


def error_line(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """The one line printed for ``exc``: ``mpt_async: error: <message>``, secrets masked.

    Args:
        exc: The error.
        secrets: Extra strings to mask (the environment's secrets are always masked).
    """
    return f"{PROG}: error: {redact(_describe(exc), secrets)}"


def exit_code(exc: BaseException) -> int:
    """The exit status for an error: 2 for usage, configuration and validation, else 1.

    Args:
        exc: The error.
    """
    return EXIT_USAGE if outcome_of(exc).callers_fault else EXIT_API
