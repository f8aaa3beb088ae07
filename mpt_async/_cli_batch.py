"""The ``batch`` command: ``python -m mpt_async batch prompts.jsonl -o replies.jsonl``.

Input, JSON Lines: each line a prompt string (one user message), a list of messages, or an
object with ``messages`` and any of ``temperature``, ``top_k``, ``top_p``,
``penalty_score``, ``stop``, ``user_id``, ``metadata`` (overriding the command line's
options). Blank lines are ignored.

Output, JSON Lines appended and flushed as each answer completes (in completion order)::

    {"line": 3, "result": "...", "usage": {...}, "id": "...", "is_truncated": false,
     "need_clear_history": false}
    {"line": 4, "error": {"code": 336003, "message": "..."}}

``line`` is the input's line number from 1; ``code`` is the API's ``error_code``, else
``invalid_json``, ``invalid_request``, ``connection``, ``timeout``, ``rate_limit``,
``server_error``, ``malformed_response`` or ``http_error``.

A rerun with the same output resumes: lines with a result or a permanent error are skipped;
lines whose error was transient (connection, timeout, rate limit, server error: see
:func:`is_transient`) are tried again, their old error record removed first; a partial
last record (a run killed mid-write) is dropped. So each input line has at most one record.

Errors that would fail every line (refused credentials, no permission, no such endpoint,
the daily or total quota) stop the run with one error line; a rerun resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

import attrs

from mpt_async._batch import BatchInput
from mpt_async._cli import (
    EXIT_API,
    EXIT_OK,
    PROG,
    UsageError,
    add_sampling_options,
    add_service_options,
    client_options,
    int_at_least,
    redact,
    run_service_command,
    sampling_params,
)
from mpt_async._client import Client
from mpt_async._codes import Action, classify_code
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
    MalformedResponseError,
    MPTError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestValidationError,
    StreamError,
)
from mpt_async._models import ChatRequest, ChatResponse, Message

__all__ = ["add_batch_parser", "error_code", "is_transient", "run_batch_command"]

_DEFAULT_CONCURRENCY = 8
#: Codes written for failures without an API ``error_code`` that a later run may cure.
_TRANSIENT_NAMES = frozenset(
    {"connection", "timeout", "rate_limit", "server_error", "malformed_response", "stream"}
)
#: Errors that are no fault of the line: every other line would fail the same way.
_FATAL = (AuthenticationError, PermissionDeniedError, NotFoundError, ConfigurationError)
_QUOTA_CODES = frozenset({17, 19})  # daily and total request limits
_TODO, _ANSWERED, _FAILED = 0, 1, 2  # a line's status, ordered: the highest record wins
_DENSE_LINES = 1 << 26
_BAR_WIDTH = 24
_PROGRESS_EVERY = 0.1  # seconds between two redraws of the progress bar


# -- the parser ---------------------------------------------------------------------------


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
        description=(
            "Answer every line of PROMPTS (JSON Lines: a prompt string, a list of messages, "
            "or an object with 'messages' and sampling fields), several at once, appending "
            "one JSON line per answer or error to OUTPUT as each completes. Rerun the same "
            "command to resume: answered lines and permanent errors are skipped, transient "
            "errors (connection, timeout, rate limit, server error) are tried again. "
            "Credentials as for chat; with none set, the embedded emulator answers. Exit 0 "
            "when every line has an answer, 1 if any failed."
        ),
    )
    parser.add_argument("input", metavar="PROMPTS", help="the JSON Lines file of prompts")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="the JSON Lines file of answers (appended to; an earlier run's is resumed)",
    )
    parser.add_argument(
        "--concurrency",
        type=int_at_least(1),
        default=_DEFAULT_CONCURRENCY,
        metavar="N",
        help="calls in flight at once (default: %(default)s)",
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
    add_service_options(parser)
    parser.set_defaults(func=run_batch_command)
    return parser


# -- errors -------------------------------------------------------------------------------


def error_code(exc: MPTError) -> int | str:
    """The ``code`` written for a failed line: the API's error_code, else a short name.

    Args:
        exc: Why the line failed.
    """
    if isinstance(exc, RequestValidationError):
        return "invalid_request"
    if isinstance(exc, APIError):
        if exc.error_code is not None:
            return exc.error_code
        if isinstance(exc, RateLimitError):
            return "rate_limit"
        if isinstance(exc, InternalServerError):
            return "server_error"
        if isinstance(exc, MalformedResponseError):
            return "malformed_response"
        return "http_error"
    if isinstance(exc, APITimeoutError):
        return "timeout"
    if isinstance(exc, APIConnectionError):
        return "connection"
    if isinstance(exc, StreamError):
        return "stream"
    return "error"


def is_transient(code: object) -> bool:
    """Whether a line that failed with ``code`` is worth trying again in a later run.

    True for the failures that are not the line's fault: connection, timeout, rate limits
    and quotas, server errors, malformed replies, and the codes the client retries or
    that refuse the credentials. False for a request the API refused (or would refuse).

    Args:
        code: The ``code`` of an output record's ``error``.
    """
    if isinstance(code, int) and not isinstance(code, bool):
        action, cls = classify_code(code)
        return action is not Action.RAISE or issubclass(cls, (RateLimitError, *_FATAL))
    return code in _TRANSIENT_NAMES


def _is_fatal(exc: MPTError) -> bool:
    if isinstance(exc, _FATAL):
        return True
    return isinstance(exc, RateLimitError) and exc.error_code in _QUOTA_CODES


# -- the output file ----------------------------------------------------------------------


def _record_status(raw: bytes) -> tuple[int, int] | None:
    """``(line, status)`` of one output record, or ``None`` if it is not one."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    line = record.get("line")
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        return None
    if isinstance(record.get("result"), str):
        return line, _ANSWERED
    error = record.get("error")
    if isinstance(error, dict) and "code" in error:
        return line, _TODO if is_transient(error["code"]) else _FAILED
    return None


@attrs.define
class _Resume:
    """What an earlier run left in the output: each line's status, and what to repair.

    A byte per line number keeps a million lines in a megabyte; absurdly large numbers
    (a hand-edited file) go to a dict instead of a huge array.
    """

    status: bytearray = attrs.Factory(bytearray)
    sparse: dict[int, int] = attrs.Factory(dict)
    records: int = 0
    retried: int = 0
    keep_until: int | None = None  # drop a partial last record from here
    add_newline: bool = False  # the last record lacks its newline

    def get(self, line: int) -> int:
        return self.status[line] if line < len(self.status) else self.sparse.get(line, _TODO)

    def set(self, line: int, value: int) -> None:
        # A final record wins over a transient one, whatever their order.
        if line >= _DENSE_LINES:
            self.sparse[line] = max(self.sparse.get(line, _TODO), value)
            return
        if line >= len(self.status):
            self.status.extend(bytes(line + 1 - len(self.status)))
        self.status[line] = max(self.status[line], value)


def _read_output(path: str) -> _Resume:
    """Read an earlier run's output.

    Raises:
        UsageError: The file holds a line that is not a record of this command.
    """
    resume = _Resume()
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; a missing file is fine
    except FileNotFoundError:
        return resume
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    with file:
        offset = 0
        for number, raw in enumerate(file, 1):
            complete = raw.endswith(b"\n")
            if raw.strip():
                found = _record_status(raw)
                if found is None:
                    if complete:
                        msg = (
                            f"{path}, line {number}, is not an answer of mpt_async batch; "
                            "choose another output file"
                        )
                        raise UsageError(msg)
                    resume.keep_until = offset  # killed mid-write: drop the partial tail
                else:
                    line, status = found
                    resume.records += 1
                    resume.retried += status == _TODO
                    resume.set(line, status)
                    resume.add_newline = not complete
            offset += len(raw)
    return resume


def _repair_output(path: str, resume: _Resume) -> None:
    """Drop transient errors and a partial last record; end the file with a newline."""
    if resume.retried:
        _rewrite_without_retried(path)
    elif resume.keep_until is not None:
        os.truncate(path, resume.keep_until)
    elif resume.add_newline:
        with open(path, "ab") as file:
            file.write(b"\n")


def _rewrite_without_retried(path: str) -> None:
    """Rewrite the output without the records of lines to try again (atomically)."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".mpt_async-batch-")
    try:
        with open(handle, "wb") as out, open(path, "rb") as source:
            for raw in source:
                found = _record_status(raw) if raw.strip() else None
                if found is not None and found[1] != _TODO:
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class _Writer:
    """Appends one record per line to the output, each written whole and at once."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def _append(self, record: dict[str, Any]) -> None:
        try:
            text = json.dumps(record, ensure_ascii=False) + "\n"
            data = memoryview(text.encode())
        except UnicodeEncodeError:  # a lone surrogate: escaped, the line is still JSON
            data = memoryview((json.dumps(record) + "\n").encode())
        while data:  # an unbuffered write may take only part of the bytes
            written = self._file.write(data)
            data = data[written or 0 :]

    def result(self, line: int, response: ChatResponse) -> None:
        usage = response.usage
        record: dict[str, Any] = {
            "line": line,
            "result": response.result,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
            "id": response.id,
            "is_truncated": response.is_truncated,
            "need_clear_history": response.need_clear_history,
        }
        if response.ban_round is not None:
            record["ban_round"] = response.ban_round
        self._append(record)

    def error(self, line: int, code: int | str, message: str) -> None:
        self._append({"line": line, "error": {"code": code, "message": message}})


# -- progress -----------------------------------------------------------------------------


@attrs.define
class _Counts:
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    failed_before: int = 0  # skipped lines whose record is a permanent error


class _Progress:
    """A one-line progress bar on standard error, redrawn in place (carriage returns)."""

    def __init__(self, stream: IO[str], total: int | None) -> None:
        self._stream = stream
        self._total = total
        self._width = 0
        self._last = 0.0
        self.shown = total is not None

    def update(self, counts: _Counts, *, force: bool = False) -> None:
        if self._total is None:
            return
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_EVERY:
            return
        self._last = now
        done = counts.answered + counts.failed
        share = done / self._total if self._total else 1.0
        filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
        text = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{self._total}"
        text += f" {int(share * 100)}%"
        if counts.failed:
            text += f", {counts.failed} failed"
        # Pad with blanks over what a longer previous line left behind.
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def close(self, counts: _Counts) -> None:
        if self._total is not None:
            self.update(counts, force=True)
            self._stream.write("\n")
            self._stream.flush()


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _summary(counts: _Counts, stopped: bool) -> str:
    text = f"{counts.answered} answered, {counts.failed} failed, {counts.skipped} skipped"
    if counts.failed_before:
        text += f" ({counts.failed_before} of them failed in an earlier run)"
    if stopped:
        text += "; stopped early: run the same command again to resume"
    return text


# -- running ------------------------------------------------------------------------------


@attrs.frozen
class _Plan:
    """The checked files, and what an earlier run already did."""

    input: str
    output: str
    resume: _Resume


def _prepare(args: argparse.Namespace) -> _Plan:
    """Check the options and files, and repair the output, before any network I/O."""
    # Check the command line's sampling options against the API's rules now.
    ChatRequest(messages=[Message("user", "?")], **sampling_params(args))
    try:
        with open(args.input, "rb"):
            pass
    except OSError as exc:
        msg = f"cannot read {args.input}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    if os.path.exists(args.output) and os.path.samefile(args.input, args.output):
        msg = "the output file must not be the input file"
        raise UsageError(msg)
    resume = _read_output(args.output)
    try:
        _repair_output(args.output, resume)
        with open(args.output, "ab"):
            pass
    except OSError as exc:
        msg = f"cannot write {args.output}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    if resume.records:
        again = f", {resume.retried} to try again after a transient error" if resume.retried else ""
        done = resume.records - resume.retried
        _note(f"resuming {args.output}: {done} lines done by an earlier run{again}")
    return _Plan(args.input, args.output, resume)


def _with_defaults(value: object, defaults: dict[str, Any]) -> Any:
    """A line's request, with the command line's options where the line sets none."""
    if isinstance(value, str):
        return {"messages": [{"role": "user", "content": value}], **defaults}
    if isinstance(value, list):
        return {"messages": value, **defaults}
    if isinstance(value, dict):
        return {**defaults, **value}
    return value  # the batch reports its wrong shape


def _is_unicode(value: object) -> bool:
    """Whether every string in a decoded JSON value is valid Unicode (no lone surrogate)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _count_to_do(path: str, resume: _Resume) -> int:
    with open(path, "rb") as source:
        return sum(
            1 for number, raw in enumerate(source, 1) if raw.strip() and resume.get(number) == _TODO
        )


def _show_progress(args: argparse.Namespace) -> bool:
    forced: bool | None = args.progress
    return sys.stderr.isatty() if forced is None else forced


async def _run(args: argparse.Namespace, plan: _Plan, connection: dict[str, Any]) -> int:
    defaults = sampling_params(args)
    counts = _Counts()
    total = _count_to_do(plan.input, plan.resume) if _show_progress(args) else None
    progress = _Progress(sys.stderr, total)
    lines: dict[int, int] = {}  # batch index -> input line number, for the calls in flight
    options = client_options(args, connection)
    options["max_connections"] = max(100, args.concurrency)
    # Local files, used synchronously on purpose: each record is written whole, before the
    # next, so a run killed at any moment keeps every answer it has printed.
    with (
        open(plan.output, "ab", buffering=0) as out,  # noqa: ASYNC230
        open(plan.input, "rb") as source,  # noqa: ASYNC230
    ):
        writer = _Writer(out)

        def requests() -> Iterator[BatchInput]:
            indexes = itertools.count()
            for number, raw in enumerate(source, 1):
                if not raw.strip():
                    continue
                status = plan.resume.get(number)
                if status != _TODO:
                    counts.skipped += 1
                    counts.failed_before += status == _FAILED
                    continue
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    writer.error(number, "invalid_json", f"not a JSON value: {exc}")
                    counts.failed += 1
                    progress.update(counts)
                    continue
                if b"\\u" in raw and not _is_unicode(value):
                    writer.error(number, "invalid_request", "text holds a lone surrogate")
                    counts.failed += 1
                    progress.update(counts)
                    continue
                lines[next(indexes)] = number
                yield _with_defaults(value, defaults)

        async with Client(**options) as client:
            stopped = True
            try:
                progress.update(counts, force=True)
                async with client.batch(requests(), concurrency=args.concurrency) as results:
                    async for item in results:
                        number = lines.pop(item.index)
                        if item.response is not None:
                            writer.result(number, item.response)
                            counts.answered += 1
                        elif item.error is not None:
                            if _is_fatal(item.error):
                                raise item.error
                            writer.error(number, error_code(item.error), redact(str(item.error)))
                            counts.failed += 1
                        progress.update(counts)
                stopped = False
            finally:
                progress.close(counts)
                _note(_summary(counts, stopped))
    return EXIT_OK if counts.failed == counts.failed_before == 0 else EXIT_API


def run_batch_command(args: argparse.Namespace) -> int:
    """Run the ``batch`` command.

    Args:
        args: Parsed by a parser built with :func:`add_batch_parser`.

    Returns:
        The exit status: 0 when every line has an answer, 1 if any failed (or the service
        or the network stopped the run), 2 for bad options or files, 130 after Ctrl-C.
    """
    return run_service_command(args, _prepare, _run)
