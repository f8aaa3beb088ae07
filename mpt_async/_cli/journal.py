"""The ``batch`` command's output file: one JSON record per input line, and resuming it.

A record is ``{"line": N, "result": ..., "service": ..., "model": ...}`` or ``{"line": N,
"error": {"code": ..., "message": ...}}``. A rerun skips the lines with a result or a
permanent error, tries again those whose error was transient
(:func:`mpt_async._cli.outcome.is_transient`) and those answered by another service or model (the
embedded emulator's answers are not the real service's), after removing their old record,
and drops a partial last record (a run killed mid-write). A result written before records
named their service is kept as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import IO, Any

import attrs

from mpt_async._cli.common import UsageError
from mpt_async._cli.outcome import is_transient
from mpt_async._models import ChatResponse
from mpt_async._validate import is_int

__all__ = [
    "ANSWERED",
    "FAILED",
    "TODO",
    "AnsweredBy",
    "Resume",
    "Writer",
    "read_output",
    "remove_stale_copies",
    "repair_output",
]

TODO, ANSWERED, FAILED = 0, 1, 2  # a line's status, ordered: the highest record wins
_DENSE_LINES = 1 << 26


@attrs.frozen
class AnsweredBy:
    """The service and model a run asks: an answer from any other is not this run's."""

    service: str
    model: str

    def gave(self, record: dict[str, Any]) -> bool:
        """Whether ``record``'s answer came from here (a record that does not say: yes)."""
        service, model = record.get("service"), record.get("model")
        if service is None and model is None:
            return True
        return service == self.service and model == self.model


def _record_status(raw: bytes, answered_by: AnsweredBy | None = None) -> tuple[int, int] | None:
    """``(line, status)`` of one output record, or ``None`` if it is not one."""
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    line = record.get("line")
    if not is_int(line) or line < 1:
        return None
    if isinstance(record.get("result"), str):
        ours = answered_by is None or answered_by.gave(record)
        return line, ANSWERED if ours else TODO
    error = record.get("error")
    if isinstance(error, dict) and "code" in error:
        return line, TODO if is_transient(error["code"]) else FAILED
    return None


@attrs.define
class Resume:
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
        return self.status[line] if line < len(self.status) else self.sparse.get(line, TODO)

    def set(self, line: int, value: int) -> None:
        # A final record wins over a transient one, whatever their order.
        if line >= _DENSE_LINES:
            self.sparse[line] = max(self.sparse.get(line, TODO), value)
            return
        if line >= len(self.status):
            self.status.extend(bytes(line + 1 - len(self.status)))
        self.status[line] = max(self.status[line], value)


def read_output(path: str, answered_by: AnsweredBy | None = None) -> Resume:
    """Read an earlier run's output (answers from another service or model are to redo).

    Raises:
        UsageError: The file holds a line that is not a record of this command.
    """
    resume = Resume()
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
                found = _record_status(raw, answered_by)
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
                    resume.retried += status == TODO
                    resume.set(line, status)
                    resume.add_newline = not complete
            offset += len(raw)
    return resume


def repair_output(path: str, resume: Resume, answered_by: AnsweredBy | None = None) -> None:
    """Drop the records to redo and a partial last record; end the file with a newline."""
    if resume.retried:
        _rewrite_without_retried(path, answered_by)
    elif resume.keep_until is not None:
        os.truncate(path, resume.keep_until)
    elif resume.add_newline:
        with open(path, "ab") as file:
            file.write(b"\n")


def _rewrite_without_retried(path: str, answered_by: AnsweredBy | None) -> None:
    """Rewrite the output without the records of lines to try again (atomically).

    Through a symbolic link, the file it points to is rewritten; the link stays.
    """
    path = os.path.realpath(path)
    folder, name = os.path.split(path)
    remove_stale_copies(folder, name)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=_copy_prefix(name, os.getpid()))
    try:
        with open(handle, "wb") as out, open(path, "rb") as source:
            for raw in source:
                found = _record_status(raw, answered_by) if raw.strip() else None
                if found is not None and found[1] != TODO:
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


def _copy_prefix(name: str, pid: int) -> str:
    return f".mpt_async-batch-{name}.{pid}."


def remove_stale_copies(folder: str, name: str) -> None:
    """Delete the half-written copies of ``name`` left by runs killed mid-rewrite.

    A copy's name holds its run's process id; a copy of a process that still runs (another
    run rewriting the same file now) is left alone.
    """
    prefix = f".mpt_async-batch-{name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            pid = entry.name[len(prefix) :].split(".", 1)[0]
            if not entry.name.startswith(prefix) or not pid.isdigit():
                continue
            if not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class Writer:
    """Appends one record per line to the output, each written whole and at once.

    Args:
        file: The output, opened for appending.
        answered_by: The service and model named in each answer's record.
    """

    def __init__(self, file: IO[bytes], answered_by: AnsweredBy | None = None) -> None:
        self._file = file
        self._answered_by = answered_by

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
        if self._answered_by is not None:
            record["service"] = self._answered_by.service
            record["model"] = self._answered_by.model
        self._append(record)

    def error(self, line: int, code: int | str, message: str) -> None:
        self._append({"line": line, "error": {"code": code, "message": message}})
