"""``mpt_async.RedisStore``: one access token and one quota for many processes, in Redis.

Built on coredis (the ``redis`` extra), which runs on anyio, so on asyncio and on trio.
The store connects on first use. coredis keeps its connections inside a task group, so
the store opens the client in a background task of the event loop that first uses it
(a trio system task, or an asyncio task) and closes it in :meth:`RedisStore.aclose`.

Every Redis round trip has a bound (``timeout``). When Redis does not answer in time, the
store fails open (the default): the token is fetched and the limits are counted in this
process, a warning is logged once, and Redis is tried again a little later. With
``on_error="raise"`` it fails closed with :class:`~mpt_async.SharedStoreError` instead. No
coredis exception ever reaches the caller.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

import anyio
import attrs

from mpt_async._exceptions import ConfigurationError, SharedStoreError
from mpt_async._logging import logger
from mpt_async._token_store import StoredToken, stored_token
from mpt_async._validate import check_number

if sys.version_info < (3, 11):  # pragma: no cover - a dependency of anyio there
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Self

    from mpt_async._redis_quota import RedisQuotaStore

__all__ = ["RedisStore"]

T = TypeVar("T")
_SCHEMES = ("redis", "rediss", "unix")
#: How long a token fetch may hold the shared lock (a dead holder's lock expires then).
_LOCK_TTL = 60.0
#: How long to leave Redis alone after it failed, before trying it again.
_RETRY_AFTER = 1.0
#: The most read of a token entry: a token of MAX_TOKEN_LENGTH, its times and seal fit.
_MAX_ENTRY = 8192
#: The longest Redis reply read (a few bytes to a few KiB are what the store gets).
_MAX_REPLY = 1 << 20
#: Takes the token lock: free, or held by something that is not a lock of this library (no
#: TTL, or a longer one than it ever sets; such a lock would never expire in time).
#: KEYS: the lock. ARGV: the holder's id, the TTL in ms. Returns 1 when taken, else 0.
_TAKE_LOCK = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 or ttl == -1 or ttl > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_URL_FORM = (
    "RedisStore needs a URL like redis://[[user]:password@]host[:port][/db], rediss://..."
    " or unix://[[user]:password@]/path, with a port from 1 to 65535; percent-encode"
    " / # ? @ % and spaces in a user or password (urllib.parse.quote(password, safe=''))"
)


class _Unavailable(Exception):
    """Redis did not answer (never escapes this module and the shared limiter)."""


class _WrongReply(Exception):
    """Redis answered with a reply no command of the store gets: it counts as failing."""

    def __str__(self) -> str:
        return "a reply of the wrong type"


@attrs.frozen
class _Address:
    """Where Redis listens, read from the store's URL (which may hold a password)."""

    url: str = attrs.field(repr=False)
    parts: SplitResult = attrs.field(repr=False)

    @property
    def unix(self) -> bool:
        """Whether it is a Unix socket."""
        return self.parts.scheme == "unix"

    @property
    def host(self) -> str:
        """The host name (a TCP address)."""
        return self.parts.hostname or "localhost"

    @property
    def port(self) -> int:
        """The port (a TCP address)."""
        return self.parts.port or 6379

    @property
    def location(self) -> str:
        """Where Redis is, for messages: host and port, never a password."""
        if self.unix:
            return self.parts.path
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _check_url(url: object) -> _Address:
    """Read the URL, or refuse it without repeating it (it may hold a password).

    A password with ``/ # ?`` not percent-encoded ends the URL's authority early: the rest
    would be taken for a path, a query or a fragment, and the password's start for a host
    or a port. Such a URL is refused as a whole, as is any port out of range.
    """
    if not isinstance(url, str):
        raise ConfigurationError(_URL_FORM)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # its text may hold the password: not even as a chained error
        port = -1
    if port == -1 or port == 0 or parts.scheme not in _SCHEMES or parts.fragment:
        raise ConfigurationError(_URL_FORM)
    if parts.scheme == "unix":
        well_formed = bool(parts.path) and not parts.hostname
    else:
        db = parts.path.strip("/")
        well_formed = bool(parts.hostname) and (not db or (db.isascii() and db.isdigit()))
    if not well_formed:
        raise ConfigurationError(_URL_FORM)
    return _Address(url, parts)


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}\r\n "):
        msg = f"RedisStore prefix must be a non-empty word without braces, not {prefix!r}"
        raise ConfigurationError(msg)
    return prefix


async def _probe(address: _Address) -> None:
    """Connect to the server and hang up (raises ``OSError`` when nothing listens)."""
    if address.unix:
        stream: Any = await anyio.connect_unix(address.parts.path)
    else:
        stream = await anyio.connect_tcp(address.host, address.port)
    await stream.aclose()


def _event_loop() -> object:
    """The running event loop (asyncio) or run (trio), to tie a connection to it."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token()


def _spawn(function: Callable[[], Coroutine[Any, Any, None]], keep: set[Any]) -> None:
    """Run ``function`` in the background of the current event loop, until it returns.

    Nothing but a cancellation escapes it: on trio it is a system task, and an exception
    there ends the whole program with ``TrioInternalError``.
    """
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        trio.lowlevel.spawn_system_task(_contained, function)
        return
    task = loop.create_task(_contained(function))
    keep.add(task)
    task.add_done_callback(keep.discard)


async def _contained(function: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Await ``function()``; log what it raises, and let only a cancellation through.

    coredis ends its task groups with exception groups, which may hold a cancellation and
    an error together (a timeout, say): the cancellation goes on alone.
    """
    try:
        await function()
    except BaseException as exc:
        cancelled = _cancellation(exc)
        if cancelled is None and not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit
        if cancelled is not exc:
            logger.debug("the Redis connection's task failed: %s", type(exc).__name__)
        if cancelled is not None:
            raise cancelled from None


def _cancellation(exc: BaseException) -> BaseException | None:
    """The event loop's cancellation that ``exc`` is or holds, if any."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _cancellation(inner)) is not None:
                return found
    return None


class _Connection:
    """One coredis client held open by a background task of one event loop."""

    def __init__(
        self, address: _Address, timeout: float, flush: Callable[[], Awaitable[None]]
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.flush = flush
        self.loop = _event_loop()
        self.client: Any = None
        self.failed = False
        self.ready = anyio.Event()
        self.stopping = False
        self.wake = anyio.Event()
        self.done = anyio.Event()
        self.scripts: dict[str, Any] = {}

    async def run(self) -> None:
        """Open the client (a cluster client if the server is in a cluster) until stopped."""
        try:
            # A plain socket first: coredis leaks a little for each connection it fails to
            # make, so it only gets to try once the server is known to listen.
            with anyio.fail_after(self.timeout):
                await _probe(self.address)
            import coredis

            timeout, url = self.timeout, self.address.url
            # No retries inside coredis: the store decides what a failure means. Its URL
            # parsing decodes a percent-encoded user, password, host and path.
            options: dict[str, Any] = {
                "stream_timeout": timeout,
                "connect_timeout": timeout,
                "retry_policy": coredis.retry.NoRetryPolicy(),
                "decode_components": True,
            }
            plain = coredis.Redis.from_url(url, **options)
            _bound_replies(plain)
            async with plain:
                with anyio.fail_after(self.timeout):
                    info = await plain.info("cluster")
                if not info.get("cluster_enabled"):
                    await self._serve(plain)
                    return
            with warnings.catch_warnings():  # coredis 6.9 warns about its own from_url
                warnings.simplefilter("ignore", DeprecationWarning)
                cluster = coredis.RedisCluster.from_url(url, **options)
            _bound_replies(cluster)
            async with cluster:
                await self._serve(cluster)
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "unavailable"
            logger.debug("connecting to Redis failed: %s", type(exc).__name__)
            self.failed = True
        finally:
            self.ready.set()
            self.done.set()

    async def _serve(self, client: Any) -> None:
        """Hold the client open; when woken, send what the limiters owe Redis."""
        self.client = client
        self.ready.set()
        while True:
            await self.wake.wait()
            if self.stopping:
                return
            self.wake = anyio.Event()
            await self.flush()

    def stop(self) -> None:
        """End the background task (it closes the client)."""
        self.stopping = True
        self.wake.set()

    def script(self, source: str) -> Any:
        """The registered script for ``source`` (loaded on its first run)."""
        found = self.scripts.get(source)
        if found is None:
            found = self.scripts[source] = self.client.register_script(source)
        return found


def _bound_replies(client: Any) -> None:
    """Make ``client``'s connections drop a reply that grows past :data:`_MAX_REPLY`.

    coredis buffers a reply whole however long it is: a hostile server's endless one would
    fill memory at the socket's speed until the store's timeout (hundreds of MB a second
    on loopback). No reply this library asks for comes near the bound.
    """
    pool = client.connection_pool
    pool.connection_class = _bounded_connection(pool.connection_class)


_BOUNDED: dict[type[Any], type[Any]] = {}


def _bounded_connection(base: type[Any]) -> type[Any]:
    """``base``, a coredis connection class, with replies bounded (made once per class)."""
    found = _BOUNDED.get(base)
    if found is not None:
        return found
    if not hasattr(base, "_data_received"):  # pragma: no cover - another coredis: as it is
        return base

    class Bounded(base):  # type: ignore[misc]
        def _data_received(self, data: bytes) -> None:
            super()._data_received(data)
            parser = self._parser
            if parser.bytes_written - parser.bytes_read > _MAX_REPLY:
                from coredis.exceptions import ConnectionError as Dropped

                msg = f"a Redis reply grew past {_MAX_REPLY} bytes"
                raise Dropped(msg)

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{base.__name__}"
    _BOUNDED[base] = Bounded
    return Bounded


class RedisStore:
    """A :class:`TokenStore` and a shared rate-limit budget, kept in Redis.

    Give it to clients as ``token_store=store`` to share one access token, and as
    ``RateLimits(..., shared=store)`` to share one QPS/RPM/TPM budget among every client,
    process and host that uses the same Redis, credentials and endpoint. It connects on
    first use; close it with :meth:`aclose` or ``async with store:``. A plain Redis or a
    Redis Cluster (found out on connecting) both work: one application's keys share one
    hash slot.

    Redis holds the shared access token itself (that is what sharing it means: protect
    Redis like the token), sealed with a key derived from the Secret Key (a token written
    by anyone else is not used), hashes of the credentials in the key names, and the
    limits' bookkeeping. Never the Secret Key.

    Args:
        url: Where Redis listens: ``redis://[:password@]host:port/db``, ``rediss://``
            (TLS) or ``unix://``. Percent-encode ``/ # ? @ %`` and spaces in a user or
            password (``urllib.parse.quote(password, safe="")``); Redis gets them decoded.
        prefix: The first part of every key name.
        on_error: ``"open"``: when Redis does not answer, go on per process (limits counted
            in each process, tokens fetched by each) and log a warning once. ``"raise"``:
            calls fail with :class:`SharedStoreError`.
        timeout: The bound, in seconds, on each Redis round trip.

    Raises:
        ConfigurationError: A bad argument, or coredis is not installed
            (``pip install 'mpt-async[redis]'``).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mpt_async",
        on_error: Literal["open", "raise"] = "open",
        timeout: float = 1.0,
    ) -> None:
        self._address = _check_url(url)
        self._prefix = _check_prefix(prefix)
        if on_error not in ("open", "raise"):
            msg = f"RedisStore on_error must be 'open' or 'raise', not {on_error!r}"
            raise ConfigurationError(msg)
        self._fail_open = on_error == "open"
        self._timeout = check_number(
            timeout, "RedisStore timeout", low=0, low_open=True, unit=" of seconds"
        )
        try:
            import coredis  # noqa: F401 - only to fail early when it is missing
        except ImportError:
            msg = "RedisStore needs coredis: pip install 'mpt-async[redis]'"
            raise ConfigurationError(msg) from None
        self._connection: _Connection | None = None
        self._tasks: set[Any] = set()
        self._down_until = -math.inf
        self._warned = False
        self._closed = False
        self._limiters: weakref.WeakSet[RedisQuotaStore] = weakref.WeakSet()
        self._local_locks: dict[str, anyio.Lock] = {}

    def __repr__(self) -> str:
        return f"<RedisStore {self._address.location} prefix={self._prefix!r}>"

    @property
    def fails_open(self) -> bool:
        """Whether calls go on per process when Redis does not answer."""
        return self._fail_open

    def key(self, application: str, name: str) -> str:
        """The Redis key ``name`` of one application (hash-tagged: one cluster slot).

        Args:
            application: A string naming the application (it is only hashed).
            name: The key's own name.
        """
        tag = hashlib.sha256(f"mpt_async app\0{application}".encode()).hexdigest()[:24]
        return f"{self._prefix}:{{{tag}}}:{name}"

    # -- the connection --------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is None or connection.done.is_set() or connection.loop != _event_loop():
            if self._closed:
                raise _Unavailable
            connection = _Connection(self._address, self._timeout, self._flush)
            self._connection = connection
            _spawn(connection.run, self._tasks)
        if not connection.ready.is_set():  # (waiting on a set event still yields once)
            with anyio.move_on_after(self._timeout):
                await connection.ready.wait()
        if connection.client is None:
            raise _Unavailable
        return connection

    async def run(self, operation: Callable[[_Connection], Awaitable[T]]) -> T:
        """Run ``operation`` against Redis within the bound.

        Raises:
            _Unavailable: Redis did not answer and the store fails open.
            SharedStoreError: Redis did not answer and the store fails closed.
        """
        failure: str | None = None
        if self._fail_open and time.monotonic() < self._down_until:
            raise _Unavailable
        try:
            with anyio.fail_after(self._timeout):
                result = await operation(await self._connect())
        except _Unavailable:
            failure = "no connection"
        except _WrongReply as exc:
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - coredis, socket and timeout errors alike
            failure = type(exc).__name__
        if failure is None:
            self._recovered()
            return result
        self._failed(failure)
        if self._connection is not None:  # start afresh next time
            self._connection.stop()
            self._connection = None
        if self._fail_open:
            raise _Unavailable
        msg = f"Redis at {self._address.location} did not answer ({failure})"
        raise SharedStoreError(msg)

    def _failed(self, why: str) -> None:
        # Not the event loop's clock: trio starts each run's clock at a random offset, and
        # a store may outlive a run.
        self._down_until = time.monotonic() + _RETRY_AFTER
        if self._fail_open and not self._warned:
            self._warned = True
            logger.warning(
                "Redis at %s did not answer (%s): tokens and rate limits are per process"
                " until it does",
                self._address.location,
                why,
            )

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            logger.warning(
                "Redis at %s answers again: shared limits resume", self._address.location
            )

    # -- closing ---------------------------------------------------------------------------

    async def _flush(self) -> None:
        for limiter in list(self._limiters):
            await limiter.flush()

    def nudge(self) -> None:
        """Have the background task send what the limiters owe Redis, soon."""
        connection = self._connection
        if connection is not None and connection.client is not None:
            connection.wake.set()

    async def aclose(self) -> None:
        """Send what the limiters still owe Redis, then close the connection."""
        await self._flush()
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None and connection.loop == _event_loop():
            connection.stop()
            with anyio.move_on_after(self._timeout):
                await connection.done.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def register(self, limiter: RedisQuotaStore) -> None:
        """Remember a quota store whose owed corrections :meth:`aclose` sends."""
        self._limiters.add(limiter)

    # -- the TokenStore protocol -----------------------------------------------------------

    async def load(self, key: str) -> StoredToken | None:
        """The token shared under ``key``, or ``None`` (also when Redis fails open).

        At most :data:`_MAX_ENTRY` bytes are read: a longer entry is no token of this
        library's (the next save replaces it), nor is a key of another type.
        """
        from coredis.exceptions import WrongTypeError

        name = self.key(key, "token")

        async def read(connection: _Connection) -> object:
            try:
                return await connection.client.getrange(name, 0, _MAX_ENTRY - 1)
            except WrongTypeError:
                return None  # an answer all the same: Redis is up

        try:
            raw = await self.run(read)
        except _Unavailable:
            return None
        return _parse_token(raw)

    async def save(self, key: str, token: StoredToken) -> None:
        """Share ``token`` under ``key`` until it expires (skipped when Redis fails open)."""
        ttl = max(1, math.ceil((token.expires_at - time.time()) * 1000))
        value = json.dumps(
            {
                "value": token.value,
                "expires_at": token.expires_at,
                "obtained_at": token.obtained_at,
                "seal": token.seal,
            }
        )
        try:
            await self.run(lambda c: c.client.set(self.key(key, "token"), value, px=ttl))
        except _Unavailable:
            return

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the fetch lock for ``key`` in Redis (a dead holder's lock expires by itself).

        When Redis fails open, a lock of this process stands in for it.
        """
        local = self._local_locks.get(key)
        if local is None:
            local = self._local_locks[key] = anyio.Lock()
        async with local:  # one waiter per process polls Redis
            name, holder = self.key(key, "token-lock"), os.urandom(16).hex()
            try:
                # Inside the try: cancelled while its SET was on the wire, the lock may be
                # held all the same. Releasing one not held is harmless (UNLOCK checks the
                # holder), and costs nothing while Redis is down.
                await self._take_lock(name, holder)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release_lock(name, holder)

    async def _take_lock(self, name: str, holder: str) -> bool:
        """Wait for the shared lock; ``False``: Redis failed open, go on without it.

        A lock this library did not set (one without a TTL would stall every fetch for the
        whole wait) is taken over at once.
        """
        ttl = int(_LOCK_TTL * 1000)

        async def take(connection: _Connection) -> bool:
            got = await connection.script(_TAKE_LOCK)(keys=[name], args=[holder, ttl])
            if type(got) is not int or got not in (0, 1):
                raise _WrongReply
            return got == 1

        delay = 0.01
        with anyio.move_on_after(_LOCK_TTL):
            while True:
                try:
                    got = await self.run(take)
                except _Unavailable:
                    return False
                if got:
                    return True
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
        return False  # the holder outlived its lock's life: go on

    async def _release_lock(self, name: str, holder: str) -> None:
        from mpt_async._redis_scripts import UNLOCK

        try:
            await self.run(lambda c: c.script(UNLOCK)(keys=[name], args=[holder]))
        except (_Unavailable, SharedStoreError):
            return  # it expires by itself


def _parse_token(raw: object) -> StoredToken | None:
    """A stored token, or ``None`` for anything that is not one."""
    if not isinstance(raw, (bytes, str)):
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return stored_token(
        data.get("value"), data.get("expires_at"), data.get("obtained_at"), data.get("seal", "")
    )
