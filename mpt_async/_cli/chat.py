"""The ``chat`` command: ``python -m mpt_async chat "Please introduce The Great Wall"``.

It streams the answer to standard output as it arrives. Without a prompt it holds a
multi-round conversation over standard input (:mod:`.terminal` reads the lines, with line
editing and history on a terminal); Ctrl-C during an answer stops that answer only, and the
conversation goes on without that round. With ``-`` it reads one prompt from there.
With ``--emulator`` (and only then) it starts the embedded emulator from
:mod:`mpt_async.testing` and talks to that.

Exit statuses: 0 on success, 1 when the service or the network failed, 2 for a usage,
configuration or validation error, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

import anyio
import attrs
from anyio.from_thread import BlockingPortal, start_blocking_portal

from mpt_async._cli.common import EXIT_OK, UsageError, error_line, exit_code, note
from mpt_async._cli.service import (
    add_sampling_options,
    add_service_options,
    client_options,
    run_service_command,
)
from mpt_async._cli.terminal import LineReader
from mpt_async._client import Client
from mpt_async._conversation import Conversation
from mpt_async._exceptions import AuthenticationError, ConfigurationError, MPTError
from mpt_async._models import ChatRequest, Message, Usage
from mpt_async._options import ChatOptions, options_from
from mpt_async._signals import sigint_blocked

__all__ = ["add_chat_parser", "run_chat"]

#: How long a stopped answer may take to close its stream (a second Ctrl-C cuts it short).
_STOP_WAIT = 10.0


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
            "until end of input (Ctrl-D), an empty line or /exit; on a terminal, lines can "
            "be edited, the up arrow recalls earlier questions, and Ctrl-C stops the answer "
            "in progress. Credentials come from QIANFAN_API_KEY (v2), "
            "QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY, QIANFAN_AK/QIANFAN_SK or "
            "QIANFAN_ACCESS_TOKEN (and QIANFAN_BASE_URL); --emulator asks the embedded "
            "emulator instead."
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


def _round(
    portal: BlockingPortal,
    conv: Conversation,
    question: str,
    args: argparse.Namespace,
    out: _Output,
) -> int:
    """Ask one question in the event loop's thread; Ctrl-C here stops this answer only."""
    finished = threading.Event()

    async def ask() -> _Answer:
        try:
            return await _ask(conv, question, args, out)
        finally:
            finished.set()

    future = portal.start_task_soon(ask)
    try:
        answer = future.result()
    except KeyboardInterrupt:
        future.cancel()  # the conversation keeps nothing of a cancelled round
        finished.wait(_STOP_WAIT)  # a second Ctrl-C ends the session
        out.end_line()
        note("answer stopped; ask again, or end with an empty line or Ctrl-D")
        return EXIT_OK
    except (AuthenticationError, ConfigurationError):
        raise
    except MPTError as exc:
        out.end_line()
        print(error_line(exc), file=sys.stderr, flush=True)
        return exit_code(exc)
    _report(answer, args)
    if answer.flagged:
        note("note: the service flagged the conversation; its history is cleared")
    return EXIT_OK


@contextlib.contextmanager
def _event_loop_thread() -> Iterator[BlockingPortal]:
    """An event loop in another thread that (like the threads it starts) never takes Ctrl-C.

    Were the kernel to hand SIGINT to that thread, the prompt's ``input()`` in this thread
    would not wake, and the chat would hang at the prompt instead of ending.
    """
    with contextlib.ExitStack() as stack:
        with sigint_blocked():
            portal = stack.enter_context(start_blocking_portal())
        yield portal


def _converse(args: argparse.Namespace, options: ChatOptions, connection: dict[str, Any]) -> int:
    """Chat round after round over standard input; the worst exit status of the rounds.

    Questions are read in this (the main) thread, where Ctrl-C lands; the calls run in an
    event loop in another thread, so Ctrl-C during an answer can stop just that answer.
    """
    reader = LineReader(sys.stdin, sys.stdout, sys.stderr)
    if reader.interactive:
        note("chatting; Ctrl-C stops an answer; an empty line, /exit or Ctrl-D ends the chat")
    out = _Output(sys.stdout)
    status = EXIT_OK
    try:
        with (
            _event_loop_thread() as portal,
            portal.wrap_async_context_manager(Client(**client_options(args, connection))) as client,
        ):
            # The conversation drops the oldest rounds past 4,800 characters; a flagged
            # answer ends the session's history altogether, as the service advises.
            conv = portal.call(
                functools.partial(Conversation, client, clear_on_flag=True, **options)
            )
            while (question := reader.question()) is not None:
                status = max(status, _round(portal, conv, question, args, out))
    finally:
        out.end_line()
    return status


@attrs.frozen
class _Plan:
    """The one-shot question (``None`` for a conversation) and the checked options."""

    prompt: str | None
    options: ChatOptions


def _prepare(args: argparse.Namespace) -> _Plan:
    """Read and check the question and the options, before any I/O."""
    prompt: str | None = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read().strip()
        if not prompt:
            msg = "no prompt on standard input"
            raise UsageError(msg)
    elif prompt is not None and not prompt.strip():
        msg = "the prompt is empty"
        raise UsageError(msg)
    options = options_from(args)
    if prompt is not None:
        ChatRequest(messages=[Message("user", prompt)], **options)
    return _Plan(prompt, options)


def _chat(args: argparse.Namespace, plan: _Plan, connection: dict[str, Any]) -> int:
    if plan.prompt is None:
        return _converse(args, plan.options, connection)
    return anyio.run(_answer_once, args, plan.prompt, plan.options, connection)


async def _answer_once(
    args: argparse.Namespace, prompt: str, options: ChatOptions, connection: dict[str, Any]
) -> int:
    out = _Output(sys.stdout)
    try:
        async with Client(**client_options(args, connection)) as client:
            answer = await _ask(Conversation(client, **options), prompt, args, out)
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
    return run_service_command(args, _prepare, _chat)
