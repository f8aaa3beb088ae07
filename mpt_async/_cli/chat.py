"""The ``chat`` command: ``python -m mpt_async chat "Please introduce The Great Wall"``.

It streams the answer to standard output as it arrives. Without a prompt it holds a
multi-round conversation over standard input; with ``-`` it reads one prompt from there.
With no credentials in the environment (or with ``--emulator``) it starts the embedded
emulator from :mod:`mpt_async.testing` and talks to that.

Exit statuses: 0 on success, 1 when the service or the network failed, 2 for a usage,
configuration or validation error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import Any, TextIO

import anyio
from anyio.from_thread import BlockingPortal

from mpt_async._cli.common import EXIT_OK, UsageError, error_line, exit_code, note
from mpt_async._cli.service import (
    add_sampling_options,
    add_service_options,
    client_options,
    run_service_command,
    sampling_params,
)
from mpt_async._client import Client
from mpt_async._conversation import Conversation
from mpt_async._exceptions import AuthenticationError, ConfigurationError, MPTError
from mpt_async._models import ChatRequest, Message, Usage

__all__ = ["add_chat_parser", "run_chat"]

_EXIT_WORDS = frozenset({"/exit", "/quit"})


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


def _print_usage(usage: Usage | None) -> None:
    if usage is None:
        return
    print(
        f"usage: prompt_tokens={usage.prompt_tokens} "
        f"completion_tokens={usage.completion_tokens} total_tokens={usage.total_tokens}",
        file=sys.stderr,
        flush=True,
    )


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


def _report(answer: _Answer, args: argparse.Namespace) -> None:
    if answer.truncated:
        note("note: the answer was truncated by the service")
    if args.usage:
        _print_usage(answer.usage)


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
        note("chatting; an empty line, /exit or end of input (Ctrl-D) ends it")
    # The conversation drops the oldest rounds past 4,800 characters; a flagged answer ends
    # the session's history altogether, as the service advises.
    conv = Conversation(client, clear_on_flag=True, **sampling_params(args))
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
                note("note: the service flagged the conversation; its history is cleared")
    return status


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
    ChatRequest(messages=[Message("user", prompt or "?")], **sampling_params(args))
    return prompt


async def _chat(args: argparse.Namespace, prompt: str | None, connection: dict[str, Any]) -> int:
    out = _Output(sys.stdout)
    try:
        async with Client(**client_options(args, connection)) as client:
            if prompt is None:
                return await _converse(client, args, out)
            answer = await _ask(Conversation(client, **sampling_params(args)), prompt, args, out)
            _report(answer, args)
            if answer.flagged:
                note("note: the service flagged this input (need_clear_history)")
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
