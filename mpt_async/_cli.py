"""The ``chat`` command: ``python -m mpt_async chat "Please introduce The Great Wall"``.

It streams the answer to standard output as it arrives. Without a prompt it holds a
multi-round conversation over standard input; with ``-`` it reads one prompt from there.
With no credentials in the environment (or with ``--emulator``) it starts the embedded
emulator from :mod:`mpt_async.testing` and talks to that.

Exit statuses: 0 on success, 1 when the service or the network failed, 2 for a usage,
configuration or validation error, 130 after Ctrl-C. Every error is one line on standard
error, never a traceback, and never a secret.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from mpt_async._auth import AccessTokenAuth, base_url_from_env
from mpt_async._client import DEFAULT_ENDPOINT, Client
from mpt_async._conversation import Conversation
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    MPTError,
    RateLimitError,
    RequestValidationError,
    StreamError,
)
from mpt_async._models import ChatRequest, Message, Usage
from mpt_async._token_store import TokenStore

__all__ = [
    "CREDENTIAL_VARS",
    "EXIT_API",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "add_chat_parser",
    "add_sampling_options",
    "add_service_options",
    "add_token_cache_options",
    "client_options",
    "error_line",
    "exit_code",
    "int_at_least",
    "redact",
    "run_chat",
    "run_service_command",
    "sampling_params",
    "token_store_from_args",
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
    "QIANFAN_ACCESS_TOKEN",
    "QIANFAN_AK",
    "QIANFAN_SK",
    "QIANFAN_ACCESS_KEY",
    "QIANFAN_SECRET_KEY",
)
_SECRET_VARS = ("QIANFAN_ACCESS_TOKEN", "QIANFAN_SK", "QIANFAN_SECRET_KEY")
_SECRET_PARAMS = re.compile(r"(?i)\b(access_token|client_secret|client_id)=[^&\s]+")
_INSTALL_HINT = "pip install 'mpt-async[emulator]'"
_EXIT_WORDS = frozenset({"/exit", "/quit"})
_T = TypeVar("_T")


class UsageError(Exception):
    """A mistake on the command line that argparse could not catch (exit status 2)."""


# -- the parser ---------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not value > 0 or value == float("inf"):
        msg = f"must be a positive number of seconds, not {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            msg = f"not an integer: {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < minimum:
            msg = f"must be {minimum} or more, not {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def add_chat_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``chat`` sub-command to a parser's sub-commands.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The new sub-parser (its ``func`` default is :func:`run_chat`).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chat",
        help="ask MPT-30B-instruct a question (or chat over standard input)",
        description=(
            "Ask MPT-30B-instruct a question and print the answer as it arrives. Without "
            "PROMPT, chat over standard input, one question per line, keeping the history, "
            "until end of input, an empty line or /exit. Credentials come from "
            "QIANFAN_AK/QIANFAN_SK, QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY or "
            "QIANFAN_ACCESS_TOKEN (and QIANFAN_BASE_URL); with none set, the embedded "
            "emulator answers instead."
        ),
    )
    parser.add_argument(
        "prompt",
        nargs="?",
        help="the question; '-' reads it from standard input; omit it to chat interactively",
    )
    parser.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="wait for the whole answer instead of streaming it",
    )
    add_sampling_options(parser)
    add_service_options(parser)
    parser.add_argument(
        "--usage", action="store_true", help="print the token usage on standard error"
    )
    parser.set_defaults(func=run_chat)
    return parser


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Add the ``sampling`` options, ``--temperature`` to ``--user-id`` (:func:`sampling_params`).

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
        type=_positive_float,
        metavar="SECONDS",
        help="bound every wait (connect, send, idle gap while reading) to SECONDS",
    )
    service.add_argument(
        "--max-retries",
        type=int_at_least(0),
        default=2,
        metavar="N",
        help="retries of a failed call before giving up (default: %(default)s)",
    )
    service.add_argument(
        "--emulator",
        action="store_true",
        help="talk to the embedded emulator even when credentials are set",
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


# -- small pure helpers -------------------------------------------------------------------


def _secrets(extra: Sequence[str] = ()) -> list[str]:
    values = [os.environ.get(name, "") for name in _SECRET_VARS]
    return sorted({v for v in (*values, *extra) if len(v) >= 4}, key=len, reverse=True)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=***", text)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the environment's secrets (and ``secrets``) masked as ``***``.

    Args:
        text: What is about to be printed or written.
        secrets: Extra strings to mask.
    """
    return _redact(text, _secrets(secrets))


def _describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if isinstance(exc, RequestValidationError):
        return f"invalid request: {message}"
    if isinstance(exc, (ConfigurationError, UsageError)):
        return message
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {message}"
    if isinstance(exc, RateLimitError):
        return f"rate limited: {message}"
    if isinstance(exc, APIError):
        return f"the service refused the request: {message}"
    if isinstance(exc, APITimeoutError):
        return f"timed out: {message}" if not message.startswith("timed out") else message
    if isinstance(exc, (APIConnectionError, StreamError)):
        return message or type(exc).__name__
    kind = type(exc).__name__
    return f"unexpected {kind}: {message}" if message else f"unexpected {kind}"


def error_line(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """The one line printed for ``exc``: ``mpt_async: error: <message>``, secrets masked.

    Args:
        exc: The error.
        secrets: Extra strings to mask (the environment's secrets are always masked).
    """
    return f"{PROG}: error: {_redact(_describe(exc), _secrets(secrets))}"


def exit_code(exc: BaseException) -> int:
    """The exit status for an error: 2 for usage, configuration and validation, else 1.

    Args:
        exc: The error.
    """
    if isinstance(exc, (RequestValidationError, ConfigurationError, UsageError)):
        return EXIT_USAGE
    return EXIT_API


# -- output -------------------------------------------------------------------------------


class _Output:
    """Standard output, flushed after every write, tracking whether a line is open."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.line_open = False

    def write(self, text: str) -> None:
        if not text:
            return
        try:
            self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            self._stream.write(text.encode(encoding, "replace").decode(encoding))
        self._stream.flush()
        self.line_open = not text.endswith("\n")

    def end_line(self) -> None:
        if self.line_open:
            self.write("\n")


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _print_usage(usage: Usage | None) -> None:
    if usage is None:
        return
    print(
        f"usage: prompt_tokens={usage.prompt_tokens} "
        f"completion_tokens={usage.completion_tokens} total_tokens={usage.total_tokens}",
        file=sys.stderr,
        flush=True,
    )


# -- one round ----------------------------------------------------------------------------


class _Answer:
    """What one round produced: the raw text, its usage, and whether it was flagged."""

    def __init__(self, text: str, usage: Usage | None, flagged: bool, truncated: bool) -> None:
        self.text = text
        self.usage = usage
        self.flagged = flagged
        self.truncated = truncated


async def _ask(
    conv: Conversation, question: str, args: argparse.Namespace, out: _Output
) -> _Answer:
    """Ask one question and print the answer (leading blanks trimmed, newline added).

    The conversation keeps the round (and trims its history) only once it is answered.
    """
    started = False

    def show(text: str) -> None:
        nonlocal started
        if not started:
            text = text.lstrip()
            started = bool(text)
        out.write(text)

    if not args.stream:
        response = await conv.ask(question)
        show(response.result)
        out.write("\n")
        return _Answer(
            response.result, response.usage, response.need_clear_history, response.is_truncated
        )
    flagged = truncated = False
    async with conv.ask_stream(question) as stream:
        async for chunk in stream:
            show(chunk.result)
            flagged = flagged or chunk.need_clear_history
            truncated = truncated or chunk.is_truncated
        out.write("\n")
        return _Answer(stream.text, stream.usage, flagged, truncated)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    names = ("temperature", "top_k", "top_p", "penalty_score", "stop", "user_id")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line, as ``Client.chat`` keywords.

    Args:
        args: Parsed by a parser given :func:`add_sampling_options`.
    """
    return _params(args)


def _report(answer: _Answer, args: argparse.Namespace) -> None:
    if answer.truncated:
        _note("note: the answer was truncated by the service")
    if args.usage:
        _print_usage(answer.usage)


# -- reading standard input ---------------------------------------------------------------


async def _read_line(portal: BlockingPortal) -> str:
    """Read one line of standard input without blocking the event loop.

    The read runs in a daemon thread, so Ctrl-C (which cancels the main task) never
    waits for the user to press Enter, and exiting never waits for that thread.
    """
    done = anyio.Event()
    box: list[str] = []

    def deliver(line: str) -> None:
        box.append(line)
        done.set()

    def read() -> None:
        try:
            line = sys.stdin.readline()
        except (OSError, ValueError, UnicodeDecodeError):
            line = ""
        with contextlib.suppress(Exception):
            portal.call(deliver, line)

    threading.Thread(target=read, name="mpt_async stdin", daemon=True).start()
    await done.wait()
    return box[0]


async def _converse(client: Client, args: argparse.Namespace, out: _Output) -> int:
    """Chat round after round over standard input; the worst exit status of the rounds."""
    tty = sys.stdin.isatty()
    if tty:
        _note("chatting; an empty line, /exit or end of input (Ctrl-D) ends it")
    # The conversation drops the oldest rounds past 4,800 characters; a flagged answer ends
    # the session's history altogether, as the service advises.
    conv = Conversation(client, clear_on_flag=True, **_params(args))
    status = EXIT_OK
    async with BlockingPortal() as portal:
        while True:
            if tty:
                print("> ", end="", file=sys.stderr, flush=True)
            line = await _read_line(portal)
            question = line.strip()
            if not question or question in _EXIT_WORDS:
                if tty and not line:
                    print(file=sys.stderr)
                break
            try:
                answer = await _ask(conv, question, args, out)
            except (AuthenticationError, ConfigurationError):
                raise
            except MPTError as exc:
                out.end_line()
                print(error_line(exc), file=sys.stderr, flush=True)
                status = max(status, exit_code(exc))
                continue
            _report(answer, args)
            if answer.flagged:
                _note("note: the service flagged the conversation; its history is cleared")
    return status


# -- running ------------------------------------------------------------------------------


def _use_emulator(args: argparse.Namespace) -> bool:
    return bool(args.emulator) or not any(os.environ.get(name) for name in CREDENTIAL_VARS)


@contextlib.contextmanager
def _embedded_emulator(forced: bool) -> Iterator[dict[str, Any]]:
    """Start the emulator; yield the client's ``auth`` and ``base_url`` for it."""
    try:
        from mpt_async.testing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Emulator

        emulator = Emulator(api_key=DEFAULT_API_KEY, secret_key=DEFAULT_SECRET_KEY)
        emulator.start()
    except ImportError as exc:
        why = "--emulator was given" if forced else "no credentials in the environment"
        msg = (
            f"{why}, and the embedded emulator is not installed ({exc}): run "
            f"{_INSTALL_HINT}, or set QIANFAN_AK and QIANFAN_SK (or QIANFAN_ACCESS_KEY and "
            "QIANFAN_SECRET_KEY, or QIANFAN_ACCESS_TOKEN)"
        )
        raise ConfigurationError(msg) from None
    except (OSError, RuntimeError, ValueError) as exc:
        msg = f"cannot start the embedded emulator: {exc}"
        raise APIConnectionError(msg) from None
    try:
        why = "--emulator" if forced else "no credentials in the environment"
        _note(f"{why}; using the embedded emulator at {emulator.base_url}")
        yield {
            "auth": AccessTokenAuth(emulator.api_key, emulator.secret_key),
            "base_url": emulator.base_url,
        }
    finally:
        emulator.stop()


def _read_prompt(args: argparse.Namespace) -> str | None:
    """The one-shot question (``None`` for interactive mode), checked before any I/O."""
    prompt: str | None = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read().strip()
        if not prompt:
            msg = "no prompt on standard input"
            raise UsageError(msg)
    elif prompt is not None and not prompt.strip():
        msg = "the prompt is empty"
        raise UsageError(msg)
    # Check every option against the API's rules now, before starting anything.
    ChatRequest(messages=[Message("user", prompt or "?")], **_params(args))
    return prompt


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


async def _chat(args: argparse.Namespace, prompt: str | None, connection: dict[str, Any]) -> int:
    out = _Output(sys.stdout)
    try:
        async with Client(**client_options(args, connection)) as client:
            if prompt is None:
                return await _converse(client, args, out)
            answer = await _ask(Conversation(client, **_params(args)), prompt, args, out)
            _report(answer, args)
            if answer.flagged:
                _note("note: the service flagged this input (need_clear_history)")
            return EXIT_OK
    finally:
        out.end_line()


def run_chat(args: argparse.Namespace) -> int:
    """Run the ``chat`` command.

    Args:
        args: Parsed by a parser built with :func:`add_chat_parser`.

    Returns:
        The exit status: 0, 1 (service or network), 2 (usage or validation), 130 (Ctrl-C).
    """
    return run_service_command(args, _read_prompt, _chat)


def run_service_command(
    args: argparse.Namespace,
    prepare: Callable[[argparse.Namespace], _T],
    command: Callable[[argparse.Namespace, _T, dict[str, Any]], Awaitable[int]],
) -> int:
    """Run a command that talks to the service, with ``chat``'s credentials and errors.

    ``prepare(args)`` checks the command's input first, before any network I/O. Then the
    service is chosen as for ``chat`` (the embedded emulator without credentials or with
    ``--emulator``; else the environment's credentials, ``--base-url`` and the token
    cache), and ``command(args, prepared, connection)`` runs under anyio; it makes its
    client with ``Client(**client_options(args, connection))``.

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
                connection = stack.enter_context(_embedded_emulator(bool(args.emulator)))
                extra_secrets.append(connection["auth"].secret_key)
            else:
                if args.base_url:
                    connection["base_url"] = args.base_url
                # Not for the embedded emulator: its tokens end with it.
                if (store := token_store_from_args(args, args.base_url)) is not None:
                    connection["token_store"] = store
            return anyio.run(command, args, prepared, connection)
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # leave the shell's prompt on a line of its own
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the caller silences stdout
    except Exception as exc:  # noqa: BLE001 - the CLI's promise: one line, no traceback
        print(error_line(exc, extra_secrets), file=sys.stderr, flush=True)
        return exit_code(exc)
