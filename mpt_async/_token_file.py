"""The file-backed token store: one token per application, shared by this user's processes.

Kept apart from :mod:`mpt_async._token_store` so that clients that never use a file
(the default) do not pay for importing it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import anyio

from mpt_async._exceptions import ConfigurationError
from mpt_async._logging import logger
from mpt_async._token_store import StoredToken, stored_token
from mpt_async._validate import check_number

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to an O_EXCL lock file
    _HAVE_FLOCK = False
else:
    _HAVE_FLOCK = True

T = TypeVar("T")


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking file work in a worker thread (anyio's thread module, loaded on first use)."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)


__all__ = ["FileTokenStore", "default_token_path"]

_FORMAT_VERSION = 1
#: Polling for a lock held elsewhere starts fast and settles at this interval.
_MAX_POLL = 0.05
#: The largest token file read; a bigger one is ignored (and replaced by the next save).
MAX_FILE_SIZE = 1 << 20
#: Open without following a symbolic link, and without waiting on a FIFO.
_SAFE_OPEN = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC


def _shared_directory(directory: Path) -> bool:
    """Whether other users can write ``directory`` and it is not the user's own."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # pragma: no cover - Windows has no such modes
        return False
    try:
        info = os.stat(directory)
    except OSError:
        return False  # missing: this store will create it, private
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return bool(writable) and info.st_uid != getuid()


def _read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most :data:`MAX_FILE_SIZE`.

    ``None`` when it is missing. A symbolic link, a FIFO or device, or a file too big
    raises ``OSError``, without following, blocking or reading it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _SAFE_OPEN)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file (mode {stat.filemode(info.st_mode)})")
        if info.st_size > MAX_FILE_SIZE:
            raise OSError(f"{info.st_size} bytes, over the {MAX_FILE_SIZE} allowed")
        data = file.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise OSError(f"over the {MAX_FILE_SIZE} bytes allowed")
    return data


def default_token_path() -> Path:
    """The default token file: ``mpt_async/tokens.json`` in the user's cache directory.

    ``$XDG_CACHE_HOME`` when set, else ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches``
    on macOS and ``~/.cache`` elsewhere.

    Raises:
        ConfigurationError: If there is no home directory to put it in.
    """
    try:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if xdg and os.path.isabs(xdg):
            base = Path(xdg)
        elif sys.platform == "win32":
            local = os.environ.get("LOCALAPPDATA", "")
            base = Path(local) if local else Path.home() / "AppData" / "Local"
        elif sys.platform == "darwin":
            base = Path.home() / "Library" / "Caches"
        else:
            base = Path.home() / ".cache"
    except RuntimeError as exc:
        msg = f"no cache directory for the token store ({exc}); pass FileTokenStore(path=...)"
        raise ConfigurationError(msg) from None
    return base / "mpt_async" / "tokens.json"


class _Held:
    """What a lock attempt got hold of, recorded where cancellation cannot lose it."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.created = False


class FileTokenStore:
    """Tokens in a JSON file, shared by every process of the user that uses the same path.

    The file and its directory (when this store creates it) are readable by their owner
    only, and the file is always replaced whole, so a reader never sees half of it. A file
    that cannot be read or parsed counts as empty and is overwritten by the next save; so
    does anything that is not a regular file of at most 1 MiB (a symbolic link, a FIFO),
    which is never followed, waited on or read whole. In a directory that other users can
    write and that belongs to someone else (``/tmp``, say), the store is not used at all:
    it warns once, and clients fetch their own tokens.
    Fetching is coordinated with ``flock`` on ``<path>.lock`` (where there is no ``flock``,
    by creating that file exclusively), so processes starting at once fetch one token.
    File access runs in worker threads, and waiting for the lock never blocks the event
    loop and can be cancelled.

    Args:
        path: The token file; ``None`` uses :func:`default_token_path`.
        lock_timeout: How many seconds to wait for another process's fetch before going
            ahead without the lock (and, without ``flock``, the age after which a lock
            file is taken to be left behind by a crashed process).

    Raises:
        ConfigurationError: For a bad ``path`` or ``lock_timeout``, or no default path.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, lock_timeout: float = 60.0
    ) -> None:
        if path is None:
            self._path = default_token_path()
        elif isinstance(path, (str, os.PathLike)) and os.fspath(path):
            self._path = Path(path)
        else:
            msg = f"FileTokenStore path must be a file path, not {path!r}"
            raise ConfigurationError(msg)
        self._lock_timeout = check_number(
            lock_timeout, "lock_timeout", low=0, low_open=True, unit=" of seconds"
        )
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._warned = False

    def __repr__(self) -> str:
        return f"FileTokenStore(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    # -- reading and writing ------------------------------------------------------------

    def _usable(self) -> bool:
        """``False`` (with one warning) when the directory is open to other users."""
        if not _shared_directory(self._path.parent):
            return True
        if not self._warned:
            self._warned = True
            logger.warning(
                "not using the token store %s: other users can write its directory",
                self._path,
            )
        return False

    async def load(self, key: str) -> StoredToken | None:
        """The token saved under ``key``, or ``None`` (also when the file is unreadable)."""
        tokens = await _in_thread(self._read)
        return tokens.get(key)

    async def save(self, key: str, token: StoredToken) -> None:
        """Keep ``token`` under ``key``, dropping tokens that have run out.

        Call it while holding :meth:`lock` (any key), or a concurrent save from another
        process may be lost.

        Raises:
            OSError: If the file cannot be written.
        """
        await _in_thread(self._write, key, token)

    def _read(self) -> dict[str, StoredToken]:
        if not self._usable():
            return {}
        try:
            raw = _read_regular(self._path)
        except OSError as exc:
            logger.warning("cannot read the token store %s (%s); ignoring it", self._path, exc)
            return {}
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            logger.debug("the token store %s is not valid JSON; treating it as empty", self._path)
            return {}
        return _parse(data)

    def _write(self, key: str, token: StoredToken) -> None:
        if not self._usable():
            return
        self._ensure_dir()
        now = time.time()
        tokens = {k: t for k, t in self._read().items() if t.expires_at > now}
        tokens[key] = token
        document = {
            "version": _FORMAT_VERSION,
            "tokens": {
                k: {
                    "access_token": t.value,
                    "expires_at": t.expires_at,
                    "obtained_at": t.obtained_at,
                    "seal": t.seal,
                }
                for k, t in tokens.items()
            },
        }
        payload = json.dumps(document, indent=1, sort_keys=True).encode()
        # A temporary file in the same directory (mkstemp makes it 0600), then one rename:
        # readers see the old file or the new one, never a partial write.
        import tempfile  # only a writer needs it, not every importer of the package

        fd, temp = tempfile.mkstemp(prefix=".tokens-", suffix=".tmp", dir=self._path.parent)
        replaced = False
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, self._path)
            replaced = True
        finally:
            if not replaced:
                with suppress(OSError):
                    os.unlink(temp)

    def _ensure_dir(self) -> None:
        parent = self._path.parent
        if not parent.is_dir():
            # Only a directory made here is made private; an existing one is left alone.
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the fetch lock -----------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the store's fetch lock (one lock for every key of the file).

        Waits without blocking the event loop; after ``lock_timeout`` seconds it goes ahead
        without the lock (at worst, a second token is fetched).
        """
        held = _Held()
        try:
            if not await _in_thread(self._usable):
                pass  # no shared file, so nothing to coordinate
            elif _HAVE_FLOCK:
                await self._acquire_flock(held)
            else:
                await self._acquire_lock_file(held)
            yield
        finally:
            if held.fd is not None:
                os.close(held.fd)  # closing the descriptor releases the flock
            if held.created:
                with anyio.CancelScope(shield=True):
                    await _in_thread(self._remove_lock_file)

    async def _acquire_flock(self, held: _Held) -> None:
        try:
            await _in_thread(self._open_lock_file, held)
        except OSError as exc:
            logger.warning("cannot open %s (%s); fetching without it", self._lock_path, exc)
            return
        fd = held.fd
        assert fd is not None

        async def attempt() -> bool:
            try:
                # Non-blocking, so it can run on the event loop; waiting is done by polling.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError as exc:
                logger.warning("cannot lock %s (%s); fetching without it", self._lock_path, exc)
            return True

        await self._poll(attempt)

    def _open_lock_file(self, held: _Held) -> None:
        self._ensure_dir()
        # Never through a symbolic link (a dangling one would create its target).
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | _SAFE_OPEN, 0o600)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError("not a regular file")
        held.fd = fd

    async def _acquire_lock_file(self, held: _Held) -> None:
        async def attempt() -> bool:
            return await _in_thread(self._create_lock_file, held)

        await self._poll(attempt)

    def _create_lock_file(self, held: _Held) -> bool:
        try:
            self._ensure_dir()
            fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                age = time.time() - os.stat(self._lock_path).st_mtime
            except FileNotFoundError:
                return False  # just released: try again at once
            if age > self._lock_timeout:
                # Left behind by a process that died holding it. (Two waiters breaking the
                # same stale lock at once may both go ahead: one extra fetch, no harm.)
                logger.warning("removing the stale lock file %s", self._lock_path)
                with suppress(FileNotFoundError):
                    os.unlink(self._lock_path)
            return False
        except OSError as exc:
            logger.warning("cannot create %s (%s); fetching without it", self._lock_path, exc)
            return True
        held.created = True
        with suppress(OSError):
            os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True

    def _remove_lock_file(self) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self._lock_path)

    async def _poll(self, attempt: Callable[[], Awaitable[bool]]) -> None:
        """Call ``attempt`` until it succeeds or ``lock_timeout`` has passed."""
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.002
        while not await attempt():
            if time.monotonic() >= deadline:
                logger.warning(
                    "waited %.0fs for the token store's lock %s; going ahead without it",
                    self._lock_timeout,
                    self._lock_path,
                )
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)


def _parse(data: Any) -> dict[str, StoredToken]:
    """The well-formed entries of a token file; anything else is skipped."""
    if not isinstance(data, dict) or data.get("version") != _FORMAT_VERSION:
        return {}
    entries = data.get("tokens")
    if not isinstance(entries, dict):
        return {}
    tokens: dict[str, StoredToken] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        token = stored_token(
            entry.get("access_token"),
            entry.get("expires_at"),
            entry.get("obtained_at"),
            entry.get("seal", ""),
        )
        if token is not None:
            tokens[key] = token
    return tokens
