"""The ``batch`` command: ``python -m mpt_async batch prompts.jsonl -o replies.jsonl``.

Input, JSON Lines: each line a prompt string (one user message), a list of messages, or an
object with ``messages`` and any of ``temperature``, ``top_k``, ``top_p``,
``penalty_score``, ``stop``, ``user_id``, ``metadata`` (overriding the command line's
options). Blank lines are ignored. A line that cannot be a request (too long, not UTF-8,
not JSON, nested too deeply, an absurd number: see :mod:`mpt_async._cli.inputs`) gets its
error record, and the run goes on.

Output, JSON Lines appended and flushed as each answer completes (in completion order)::

    {"line": 3, "result": "...", "usage": {...}, "id": "...", "is_truncated": false,
     "need_clear_history": false, "service": "https://qianfan.baidubce.com",
     "model": "mpt-30b-instruct"}
    {"line": 4, "error": {"code": 336003, "message": "..."}}

``line`` is the input's line number from 1; ``code`` is the API's ``error_code``, else the
name of a :class:`~mpt_async._cli.outcome.Outcome`: ``invalid_json``, ``invalid_request``,
``connection``, ``timeout``, ``rate_limit``, ``server_error``, ``malformed_response``,
``stream`` or ``http_error``.

A rerun with the same output resumes (:mod:`mpt_async._cli.journal`): lines with a result
or a permanent error are skipped; lines whose error was transient (connection, timeout,
rate limit, server error: see :func:`mpt_async._cli.outcome.is_transient`), and lines answered by
another service or model (``--emulator``'s made-up answers, another ``--endpoint``), are
tried again, their old record removed first; a partial last record (a run killed
mid-write) is dropped. So each input line has at most one record.

Errors that would fail every line (refused credentials, no permission, no such endpoint,
the daily or total quota) stop the run with one error line; a rerun resumes it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import IO, Any

import anyio
import attrs

from mpt_async._batch import BatchInput
from mpt_async._cli.argtypes import add_count_option
from mpt_async._cli.common import EXIT_API, EXIT_OK, UsageError, note, redact
from mpt_async._cli.inputs import MAX_LINE_BYTES, BadLine, decode, read_lines
from mpt_async._cli.journal import (
    FAILED,
    TODO,
    AnsweredBy,
    Resume,
    Writer,
    read_output,
    remove_stale_copies,
    repair_output,
)
from mpt_async._cli.outcome import Outcome, outcome_of, record_code
from mpt_async._cli.progress import Counts, Progress, summary
from mpt_async._cli.quota import add_quota_options, quota_settings
from mpt_async._cli.service import (
    add_sampling_options,
    add_service_options,
    client_options,
    run_service_command,
    service_name,
)
from mpt_async._client import Client
from mpt_async._options import ChatOptions, options_from

__all__ = ["add_batch_parser", "run_batch_command"]

_DEFAULT_CONCURRENCY = 8
_DESCRIPTION = (
    "Answer every line of PROMPTS (JSON Lines: a prompt string, a list of messages, "
    "or an object with 'messages' and sampling fields), several at once, appending "
    "one JSON line per answer or error to OUTPUT as each completes. Rerun the same "
    "command to resume: answered lines and permanent errors are skipped, transient "
    "errors (connection, timeout, rate limit, server error) are tried again. "
    "Credentials as for chat; --emulator asks the embedded emulator instead. Exit 0 "
    "when every line has an answer, 1 if any failed."
)


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to a parser's sub-commands.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The new sub-parser (its ``func`` default is :func:`run_batch_command`).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="answer every prompt of a JSON Lines file (resumable; see batch --help)",
        description=_DESCRIPTION,
    )
    parser.add_argument("input", metavar="PROMPTS", help="the JSON Lines file of prompts")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="the JSON Lines file of answers (appended to; an earlier run's is resumed)",
    )
    add_count_option(
        parser,
        "--concurrency",
        minimum=1,
        default=_DEFAULT_CONCURRENCY,
        metavar="N",
        help="calls in flight at once",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show a progress bar on standard error even when it is not a terminal",
    )
    shown.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    add_sampling_options(parser)
    add_quota_options(parser)
    add_service_options(parser)
    parser.set_defaults(func=run_batch_command)
    return parser


@attrs.frozen
class _Plan:
    """The checked files and options, and what an earlier run already did."""

    input: str
    output: str
    resume: Resume
    options: ChatOptions
    concurrency: int
    answered_by: AnsweredBy


def _prepare(args: argparse.Namespace) -> _Plan:
    """Check the options and files, and repair the output, before any network I/O."""
    options = options_from(args)  # checked against the API's rules now
    try:
        with open(args.input, "rb"):
            pass
    except OSError as exc:
        msg = f"cannot read {args.input}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    _check_output(args.input, args.output)
    answered_by = AnsweredBy(service_name(args), args.endpoint)
    resume = read_output(args.output, answered_by)
    try:
        target = os.path.realpath(args.output)
        remove_stale_copies(*os.path.split(target))
        repair_output(args.output, resume, answered_by)
        with open(args.output, "ab"):
            pass
    except OSError as exc:
        msg = f"cannot write {args.output}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    if resume.records:
        again = (
            f", {resume.retried} to do again (a transient error, or another service's answer)"
            if resume.retried
            else ""
        )
        done = resume.records - resume.retried
        note(f"resuming {args.output}: {done} lines done by an earlier run{again}")
    return _Plan(args.input, args.output, resume, options, args.concurrency, answered_by)


def _check_output(source: str, output: str) -> None:
    """The output must be a regular file (or not exist yet), and not the input.

    A FIFO would block the run forever, a device could be read without end.
    """
    try:
        mode = os.stat(output).st_mode  # through a symbolic link: its target
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"cannot use {output}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    if not stat.S_ISREG(mode):
        msg = f"the output {output} is not a regular file (a FIFO, a device, a folder?)"
        raise UsageError(msg)
    if os.path.samefile(source, output):
        msg = "the output file must not be the input file"
        raise UsageError(msg)


def _count_to_do(path: str, resume: Resume) -> int:
    with open(path, "rb") as source:
        return sum(
            1
            for number, raw in read_lines(source)
            if (raw is None or raw.strip()) and resume.get(number) == TODO
        )


def _show_progress(args: argparse.Namespace) -> bool:
    forced: bool | None = args.progress
    return sys.stderr.isatty() if forced is None else forced


@attrs.frozen
class _Run:
    """What one run writes to: the output, the counts and the progress line."""

    writer: Writer
    counts: Counts
    progress: Progress


class _Inputs:
    """The input's lines to send, as batch items; bad lines get their error record here."""

    def __init__(self, source: IO[bytes], resume: Resume, state: _Run) -> None:
        self._source = source
        self._resume = resume
        self._state = state
        self.lines: dict[int, int] = {}  # batch index -> input line number, calls in flight

    def _fail(self, number: int, code: str, message: str) -> None:
        self._state.writer.error(number, code, message)
        self._state.counts.failed += 1
        self._state.progress.update(self._state.counts)

    def requests(self) -> Iterator[BatchInput]:
        indexes = itertools.count()
        for number, raw in read_lines(self._source):
            if raw is not None and not raw.strip():
                self._state.counts.blank += 1
                continue
            status = self._resume.get(number)
            if status != TODO:
                self._state.counts.skipped += 1
                self._state.counts.failed_before += status == FAILED
                continue
            try:
                value = _decode(raw)
            except BadLine as bad:
                self._fail(number, bad.code, bad.message)
                continue
            self.lines[next(indexes)] = number
            yield value  # type: ignore[misc] # the batch reports a wrong shape


def _decode(raw: bytes | None) -> object:
    if raw is None:
        msg = f"the line is longer than {MAX_LINE_BYTES:,} bytes, far more than a request"
        raise BadLine(Outcome.INVALID_REQUEST, msg)
    return decode(raw)


async def _send(client: Client, inputs: _Inputs, plan: _Plan, state: _Run) -> None:
    """Send every line and write each answer or error as it completes."""
    batch = client.batch(inputs.requests(), concurrency=plan.concurrency, **plan.options)
    async with batch as results:
        async for item in results:
            number = inputs.lines.pop(item.index)
            if item.response is not None:
                state.writer.result(number, item.response)
                state.counts.answered += 1
            elif item.error is not None:
                if outcome_of(item.error).stops_every_call:
                    raise item.error
                state.writer.error(number, record_code(item.error), redact(str(item.error)))
                state.counts.failed += 1
            state.progress.update(state.counts)


async def _run(args: argparse.Namespace, plan: _Plan, connection: dict[str, Any]) -> int:
    counts = Counts()
    total = _count_to_do(plan.input, plan.resume) if _show_progress(args) else None
    progress = Progress(sys.stderr, total)
    settings = client_options(args, connection)
    settings["max_connections"] = max(100, plan.concurrency)
    # Local files, used synchronously on purpose: each record is written whole, before the
    # next, so a run killed at any moment keeps every answer it has printed.
    with (
        open(plan.output, "ab", buffering=0) as out,  # noqa: ASYNC230
        open(plan.input, "rb") as source,  # noqa: ASYNC230
    ):
        state = _Run(Writer(out, plan.answered_by), counts, progress)
        inputs = _Inputs(source, plan.resume, state)
        async with (
            AsyncExitStack() as stack,
            Client(**{**settings, **await quota_settings(args, stack)}) as client,
        ):
            progress.learned = client.learned_limits
            stopped = True
            try:
                progress.update(counts, force=True)
                await _send(client, inputs, plan, state)
                stopped = False
            finally:
                progress.close(counts)
                note(summary(counts, stopped))
    return EXIT_OK if counts.failed == counts.failed_before == 0 else EXIT_API


def run_batch_command(args: argparse.Namespace) -> int:
    """Run the ``batch`` command.

    Args:
        args: Parsed by a parser built with :func:`add_batch_parser`.

    Returns:
        The exit status: 0 when every line has an answer, 1 if any failed (or the service
        or the network stopped the run), 2 for bad options or files, 130 after Ctrl-C.
    """
    return run_service_command(args, _prepare, _run_to_the_end)


def _run_to_the_end(args: argparse.Namespace, plan: _Plan, connection: dict[str, Any]) -> int:
    return anyio.run(_run, args, plan, connection)
