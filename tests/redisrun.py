"""Real ``redis-server`` processes for the tests: one server, or a three-node cluster.

A test module against Redis takes the module's server, a key prefix per test, and the
clean-up of coredis's leftovers by naming them (``ruff --fix`` keeps these; it would drop
an import that looks unused)::

    from . import redisrun

    pytestmark = redisrun.COREDIS_LEFTOVERS
    _collect_coredis_leftovers = redisrun.collect_coredis_leftovers
    redis = redisrun.redis
    prefix = redisrun.prefix
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")

#: When a server dies, coredis (6.9) may try one new connection, and leaves the anyio memory
#: streams of that failed connection unclosed: a ResourceWarning when they are collected.
#: It is coredis's, not a leak of ours: a module's ``pytestmark`` lets these warnings pass,
#: and :func:`collect_coredis_leftovers` collects the streams within its tests.
COREDIS_LEFTOVERS = [
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject(Send|Receive)Stream:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <function MemoryObject(Send|Receive)Stream.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]


def require_redis() -> None:
    """Skip (naming the Debian package) without redis-server; fail instead under CI."""
    if REDIS_SERVER and REDIS_CLI:
        return
    reason = "needs redis-server and redis-cli (Debian packages redis-server, redis-tools)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = random.randint(20_000, 50_000)
        if _is_free(port) and _is_free(port + 10_000):
            return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, maybe with a password
    except OSError:
        return False


class RedisServer:
    """One redis-server on a loopback port, that a test can stop, pause and start again."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.extra = extra
        self.directory = tempfile.mkdtemp(prefix="mpt-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's redis:// URL."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.directory, *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Kill the server (like a crash: no goodbye to clients)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server; its output."""
        assert REDIS_CLI is not None
        command = [REDIS_CLI, "-p", str(self.port), *args]
        return subprocess.run(command, capture_output=True, check=True, text=True).stdout


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for the block."""
    require_redis()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def redis_cluster() -> Iterator[list[RedisServer]]:
    """A three-node Redis Cluster (no replicas) on loopback, for the block."""
    require_redis()
    options = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
    nodes = [RedisServer(cluster_port(), *options) for _ in range(3)]
    for node in nodes:
        node.extra += ("--cluster-config-file", os.path.join(node.directory, "nodes.conf"))
        node.start()
    try:
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        nodes[0].cli("--cluster", "create", *addresses, "--cluster-yes")
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in node.cli("cluster", "info") for node in nodes):
            if time.monotonic() > deadline:
                pytest.fail("the Redis cluster did not come up")
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(autouse=True)
def collect_coredis_leftovers() -> Iterator[None]:
    """Collect what coredis left behind before the test ends (see ``COREDIS_LEFTOVERS``)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """One redis-server for the module's tests (each test uses its own key prefix)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, so tests never share a budget."""
    return "t" + str(abs(hash(request.node.nodeid)))
