"""Helpers shared by the client's tests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import anyio
import pytest

import mpt_async
from mpt_async._cli import common as cli_common
from mpt_async.testing import Emulator

#: Retries in tests wait milliseconds, not seconds.
FAST = mpt_async.Backoff(initial=0.01, maximum=0.02, max_retry_after=0.5)
HI = [{"role": "user", "content": "Please introduce The Great Wall"}]


def token_client(emu: Emulator, **kwargs: Any) -> mpt_async.Client:
    """A client using the emulator's API Key / Secret Key (token flow)."""
    kwargs.setdefault("backoff", FAST)
    return mpt_async.Client(
        auth=mpt_async.AccessTokenAuth(emu.api_key, emu.secret_key),
        base_url=emu.base_url,
        **kwargs,
    )


def aksk_client(emu: Emulator, **kwargs: Any) -> mpt_async.Client:
    """A v1 client signing every request with the emulator's IAM AK/SK."""
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("api", "v1")
    return mpt_async.Client(
        auth=mpt_async.AKSKAuth(emu.access_key, emu.secret_access_key),
        base_url=emu.base_url,
        **kwargs,
    )


def scrubbed_env(**extra: str) -> dict[str, str]:
    """This process's environment without any QIANFAN_* variable, for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def clear_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every credential and base-URL variable the client or CLI would read."""
    for name in (*cli_common.CREDENTIAL_VARS, "QIANFAN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def chat_requests(emu: Emulator) -> list[Any]:
    """The chat requests the emulator has recorded, oldest first."""
    return [r for r in emu.requests if r.kind == "chat"]


async def until(predicate: Callable[[], object], limit: float = 30.0) -> None:
    """Poll until ``predicate()`` holds, failing after ``limit`` seconds (generous: busy cores).

    For state another thread or process changes (the emulator's, redis-server's), which no
    event announces.
    """
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 (the state changes in another thread)
            await anyio.sleep(0.01)


async def cancel_when(scope: anyio.CancelScope, ready: Callable[[], bool]) -> None:
    """Cancel ``scope`` once ``ready()`` holds: event ordering, not a guess at timing."""
    await until(ready)
    scope.cancel()


async def wait_no_connections(emu: Emulator, limit: float = 10.0) -> int:
    """Poll until the emulator holds no open connection; return the last count seen."""
    deadline = time.monotonic() + limit
    while True:
        count = emu.stats.open_connections
        if count == 0 or time.monotonic() > deadline:
            return count
        await anyio.sleep(0.02)


class Cancelled(NamedTuple):
    """What :func:`cancel_the_first_waiter` saw."""

    #: The limiter's waiting calls with both held, then once the first was cancelled.
    waiting: tuple[int, int]
    #: What the limiter then told a new call to wait (its store's grant).
    next_wait: float
    #: Whether the first waiter ended by its cancellation.
    cancelled: bool


async def cancel_the_first_waiter(
    client: mpt_async.Client, first: dict[str, Any], second: dict[str, Any]
) -> Cancelled:
    """Cancel the first of two calls waiting behind one that took the only slot (qps=1).

    The waiting calls take the options ``first``, then ``second``. Tasks are ordered with ``anyio.wait_all_tasks_blocked()``, not sleeps.
    """
    limiter = client._request_loop.limiter
    await client.chat(HI)  # takes the first slot
    scope = anyio.CancelScope()

    async def waiting() -> None:
        with scope:
            await client.chat(HI, **first)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(partial(client.chat, HI, **second))
        await anyio.wait_all_tasks_blocked()
        held = limiter.waiting
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        left = limiter.waiting
        next_wait = (await limiter.store.take(limiter.model, 10)).wait
    return Cancelled((held, left), next_wait, scope.cancelled_caught)


def blocks_sigint(pid: int | str, tid: int) -> bool:
    """Whether thread ``tid`` of process ``pid`` (or ``"self"``) blocks SIGINT, from /proc.

    The test is skipped where there is no /proc to read a thread's signal mask from.
    """
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            line = next(line for line in status if line.startswith("SigBlk:"))
    except OSError:
        pytest.skip("no /proc to read a thread's signal mask from")
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
