"""The options and set-up shared by the commands that call the service (chat, batch).

:func:`run_service_command` chooses the service (the embedded emulator with
``--emulator`` only; else the environment's credentials, ``--base-url`` and the token
cache), runs the command under anyio, and turns every error into one line
and an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mpt_async._auth import APIKeyAuth, auth_from_env, base_url_from_env, default_api
from mpt_async._cli.argtypes import add_count_option, positive_number
from mpt_async._cli.common import (
    CREDENTIAL_VARS,
    EXIT_INTERRUPTED,
    UsageError,
    error_line,
    exit_code,
    note,
)
from mpt_async._client import DEFAULT_ENDPOINT
from mpt_async._exceptions import APIConnectionError, ConfigurationError
from mpt_async._token_store import TokenStore

__all__ = [
    "add_sampling_options",
    "service_name",
    "add_service_options",
    "add_token_cache_options",
    "client_options",
    "run_service_command",
    "token_store_from_args",
]

_INSTALL_HINT = "pip install 'mpt-async[emulator]'"
_T = TypeVar("_T")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``sampling`` options, ``--temperature`` to ``--user-id``.

    They are read (and checked) by :func:`mpt_async._options.options_from`.

    Args:
        parser: The sub-command's parser.
    """
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--temperature", type=float, help="randomness, in (0, 1]")
    sampling.add_argument("--top-k", type=int, help="sample from the K likeliest tokens (K >= 1)")
    sampling.add_argument("--top-p", type=float, help="nucleus sampling mass, in [0, 1]")
    sampling.add_argument(
        "--penalty-score", type=float, help="penalty for repeated tokens, in [1, 2]"
    )
    sampling.add_argument(
        "--stop",
        action="append",
        metavar="WORD",
        help="stop generating at WORD (repeatable; at most 4 of at most 20 characters)",
    )
    sampling.add_argument("--user-id", help="the end user's id, passed to the service")
    sampling.add_argument("--system", help="a system prompt (the v2 interface only)")


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``service`` options (``--endpoint``, ``--base-url``, ``--timeout``, ...).

    They are read by :func:`run_service_command` and :func:`client_options`.

    Args:
        parser: The sub-command's parser.
    """
    service = parser.add_argument_group("service")
    service.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help="the service's API name (default: %(default)s)",
    )
    service.add_argument(
        "--base-url", help="the service's address (default: QIANFAN_BASE_URL, else Baidu's)"
    )
    service.add_argument(
        "--timeout",
        type=positive_number,
        metavar="SECONDS",
        help="bound every wait (connect, send, idle gap while reading) to SECONDS",
    )
    add_count_option(
        service,
        "--max-retries",
        minimum=0,
        default=2,
        metavar="N",
        help="retries of a failed call before giving up",
    )
    service.add_argument(
        "--emulator",
        action="store_true",
        help="talk to the embedded emulator (a local stand-in for the service), not Baidu",
    )
    add_token_cache_options(service)


def add_token_cache_options(group: Any) -> None:
    """Add ``--token-cache PATH`` and ``--no-token-cache`` (read by :func:`token_store_from_args`).

    Args:
        group: A parser or argument group.
    """
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--token-cache",
        metavar="PATH",
        help=(
            "keep the access token in PATH between runs (default for an https service: "
            "mpt_async/tokens.json in the user's cache directory)"
        ),
    )
    choice.add_argument(
        "--no-token-cache",
        action="store_true",
        help="fetch a new access token for this run; do not read or write the token cache",
    )


def token_store_from_args(
    args: argparse.Namespace, base_url: str | None = None
) -> TokenStore | None:
    """The token store the command line asks for, or ``None``.

    ``--no-token-cache``: none. ``--token-cache PATH``: that file. Otherwise the default
    file, but only for an ``https://`` service: a plain-http one is most likely an emulator,
    whose tokens die with it. Only used with API Key / Secret Key credentials.

    Args:
        args: Parsed options (from a parser given :func:`add_token_cache_options`).
        base_url: The service's address (``None``: ``QIANFAN_BASE_URL``, else Baidu's).
    """
    if getattr(args, "no_token_cache", False):
        return None
    from mpt_async._token_file import FileTokenStore

    if path := getattr(args, "token_cache", None):
        return FileTokenStore(path)
    if not (base_url or base_url_from_env()).startswith("https://"):
        return None
    try:
        return FileTokenStore()
    except ConfigurationError:
        return None  # no home directory: run without the cache


def service_name(args: argparse.Namespace) -> str:
    """Which service a run talks to, as its records name it: ``emulator``, or an address.

    Known before any network I/O, so that a resumed batch can tell its earlier answers'
    service from this run's.
    """
    if args.emulator:
        return "emulator"
    if args.base_url or os.environ.get("QIANFAN_BASE_URL"):
        return str(args.base_url or os.environ["QIANFAN_BASE_URL"]).rstrip("/")
    try:
        api = default_api(auth_from_env())
    except ConfigurationError:
        api = "v2"
    return base_url_from_env(api)


def _use_emulator(args: argparse.Namespace) -> bool:
    """Only when asked: answers made up locally must never pass for the service's."""
    if args.emulator:
        return True
    if not any(os.environ.get(name) for name in CREDENTIAL_VARS):
        msg = (
            "no credentials: set QIANFAN_API_KEY (a v2 API key), or QIANFAN_ACCESS_KEY and "
            "QIANFAN_SECRET_KEY, QIANFAN_AK and QIANFAN_SK, or QIANFAN_ACCESS_TOKEN; or pass "
            "--emulator to try the local emulator"
        )
        raise UsageError(msg)
    return False


@contextlib.contextmanager
def _embedded_emulator() -> Iterator[dict[str, Any]]:
    """Start the emulator; yield the client's ``auth`` and ``base_url`` for it."""
    try:
        from mpt_async.testing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Emulator

        # It speaks v2, as Baidu does today, and accepts QIANFAN_API_KEY's key if set.
        emulator = Emulator(api_key=DEFAULT_API_KEY, secret_key=DEFAULT_SECRET_KEY)
        emulator.start()
    except ImportError as exc:
        msg = (
            f"--emulator was given, and the embedded emulator is not installed ({exc}): run "
            f"{_INSTALL_HINT}, or set QIANFAN_API_KEY (or QIANFAN_ACCESS_KEY and "
            "QIANFAN_SECRET_KEY, QIANFAN_AK and QIANFAN_SK, or QIANFAN_ACCESS_TOKEN)"
        )
        raise ConfigurationError(msg) from None
    except (OSError, RuntimeError, ValueError) as exc:
        msg = f"cannot start the embedded emulator: {exc}"
        raise APIConnectionError(msg) from None
    try:
        note(f"--emulator; using the embedded emulator at {emulator.base_url}")
        yield {
            "auth": APIKeyAuth(emulator.v2_api_key),
            "base_url": emulator.base_url,
        }
    finally:
        emulator.stop()


def client_options(args: argparse.Namespace, connection: dict[str, Any]) -> dict[str, Any]:
    """The ``Client`` keyword arguments for the service options and the chosen service.

    Args:
        args: Parsed by a parser given :func:`add_service_options`.
        connection: What :func:`run_service_command` passed to the command.
    """
    options: dict[str, Any] = {
        "endpoint": args.endpoint,
        "max_retries": args.max_retries,
        **connection,
    }
    if args.timeout is not None:
        options["timeout"] = args.timeout
    return options


def run_service_command(
    args: argparse.Namespace,
    prepare: Callable[[argparse.Namespace], _T],
    command: Callable[[argparse.Namespace, _T, dict[str, Any]], int],
) -> int:
    """Run a command that talks to the service, with ``chat``'s credentials and errors.

    ``prepare(args)`` checks the command's input first, before any network I/O. Then the
    service is chosen as for ``chat`` (the embedded emulator with ``--emulator`` only;
    else the environment's credentials, ``--base-url`` and the token
    cache), and ``command(args, prepared, connection)`` runs (its calls under anyio, with
    ``anyio.run`` or a blocking portal); it makes its client with
    ``Client(**client_options(args, connection))``.

    Args:
        args: Parsed by a parser given :func:`add_service_options`.
        prepare: Checks the input and returns what ``command`` needs.
        command: The command itself; returns the exit status.

    Returns:
        ``command``'s status; 1 (service or network) or 2 (usage or validation) after an
        error, printed as one line; 130 after Ctrl-C.
    """
    extra_secrets: list[str] = []
    try:
        prepared = prepare(args)
        with contextlib.ExitStack() as stack:
            connection: dict[str, Any] = {}
            if _use_emulator(args):
                connection = stack.enter_context(_embedded_emulator())
                extra_secrets.append(connection["auth"].api_key)
            else:
                if args.base_url:
                    connection["base_url"] = args.base_url
                # Not for the embedded emulator: its tokens end with it.
                if (store := token_store_from_args(args, args.base_url)) is not None:
                    connection["token_store"] = store
            return command(args, prepared, connection)
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # leave the shell's prompt on a line of its own
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the caller silences stdout
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, no traceback
        print(error_line(exc, extra_secrets), file=sys.stderr, flush=True)
        return exit_code(exc)
