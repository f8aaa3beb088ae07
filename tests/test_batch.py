"""client.batch() / run_batch(): many chats side by side, over the emulator."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

import mpt_async
from mpt_async.testing import Emulator, Fault

from .clientkit import chat_requests, token_client, until, wait_no_connections

pytestmark = pytest.mark.anyio


def _asked(response: mpt_async.ChatResponse | None) -> str:
    """The question the emulator's deterministic answer quotes back."""
    assert response is not None
    return response.result.split('You asked: "', 1)[1].split('"', 1)[0]


def _task_count() -> int:
    return len(anyio.get_running_tasks())


class _Doorway(httpx.AsyncBaseTransport):
    """Real sockets, counting the chat calls in flight: from sending until the body is closed.

    The first ``gather`` calls are held at the door until all of them are there, so the
    count is sure to reach ``gather`` (a batch that runs fewer at once hangs here).
    """

    def __init__(self, gather: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.gather = gather
        self.arrived = 0
        self.in_flight = 0
        self.most = 0
        self.all_there = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "/chat/" not in request.url.path:
            return await self.inner.handle_async_request(request)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.arrived += 1
        if self.arrived == self.gather:
            self.all_there.set()
        try:
            await self.all_there.wait()
            response = await self.inner.handle_async_request(request)
        except BaseException:
            self.in_flight -= 1
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Counted(response.stream, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Counted(httpx.AsyncByteStream):
    """A response body that counts its call out of flight when closed."""

    def __init__(self, inner: Any, door: _Doorway) -> None:
        self.inner = inner
        self.door: _Doorway | None = door

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.inner:
            yield part

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.door is not None:
            self.door.in_flight -= 1
            self.door = None


async def test_results_carry_their_index_and_every_input_form(emulator: Emulator) -> None:
    """Each result's index is its input's position; strings, lists, mappings and ChatRequests work."""
    inputs: list[mpt_async.BatchInput] = [
        "q0",
        [{"role": "user", "content": "q1"}],
        {"messages": [mpt_async.Message("user", "q2")], "temperature": 0.5, "stop": ["x"]},
        mpt_async.ChatRequest(messages=[{"role": "user", "content": "q3"}], top_k=3),
        *(f"q{i}" for i in range(4, 10)),
    ]
    async with token_client(emulator) as client:
        async with client.batch(inputs, concurrency=3) as results:
            items = [item async for item in results]
    assert sorted(item.index for item in items) == list(range(10))
    for item in items:
        assert item.ok
        assert item.error is None
        assert item.request is inputs[item.index]
        assert _asked(item.response) == f"q{item.index}"
    bodies = {r.body["messages"][0]["content"]: r.body for r in chat_requests(emulator)}
    assert bodies["q2"]["temperature"] == 0.5
    assert bodies["q2"]["stop"] == ["x"]
    assert bodies["q3"]["top_k"] == 3
    assert "stream" not in bodies["q3"]
    assert set(bodies["q0"]) == {"messages"}


async def test_concurrency_bound_is_respected(emulator: Emulator) -> None:
    """With concurrency=3, nine calls are three in flight at once, never four."""
    door = _Doorway(gather=3)
    async with httpx.AsyncClient(transport=door) as http:
        async with token_client(emulator, http_client=http) as client:
            with anyio.fail_after(30):
                async with mpt_async.run_batch(
                    client, [f"q{i}" for i in range(9)], concurrency=3
                ) as results:
                    items = [item async for item in results]
    assert all(item.ok for item in items)
    assert sorted(item.index for item in items) == list(range(9))
    assert door.arrived == 9
    assert door.most == 3
    assert door.in_flight == 0


async def test_failed_items_do_not_stop_the_others(emulator: Emulator) -> None:
    """Two refused calls come back as errors; the other four are answered."""
    emulator.inject(Fault.error(336003), times=2)
    progress: list[tuple[int, int, int | None]] = []
    async with token_client(emulator) as client:
        batch = client.batch(
            [f"q{i}" for i in range(6)],
            concurrency=3,
            on_progress=lambda *counts: progress.append(counts),
        )
        async with batch as results:
            items = [item async for item in results]
    failed = [item for item in items if not item.ok]
    assert len(failed) == 2
    for item in failed:
        assert item.response is None
        assert isinstance(item.error, mpt_async.InvalidRequestError)
        assert item.error.error_code == 336003
    assert sorted(item.index for item in items) == list(range(6))
    assert progress[-1] == (6, 2, 6)
    assert (batch.done, batch.failed, batch.total) == (6, 2, 6)


def test_results_are_successes_or_failures() -> None:
    """A result is a BatchSuccess (ok, with a response) or a BatchFailure (not ok, with an error)."""
    reply = mpt_async.ChatResponse(
        id="1", object="chat.completion", created=0, result="hi", usage=mpt_async.Usage(1, 1, 2)
    )
    success = mpt_async.BatchSuccess(0, "q", response=reply)
    failure = mpt_async.BatchFailure(1, "q", error=mpt_async.MPTError("no"))
    assert (success.ok, success.response, success.error) == (True, reply, None)
    assert (failure.ok, failure.response, str(failure.error)) == (False, None, "no")
    for item in (success, failure):
        assert isinstance(item, mpt_async.BatchResult)


async def test_invalid_items_yield_errors_and_are_never_sent(emulator: Emulator) -> None:
    """Inputs that break a rule or have no valid shape fail alone, before any I/O."""
    even = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    inputs: list[Any] = [
        "fine",
        "",
        {"messages": [{"role": "user", "content": "x"}], "temperature": 0},
        42,
        {"prompt": "x"},
        even,
        {"temperature": 0.5},
        "also fine",
    ]
    async with token_client(emulator) as client:
        async with client.batch(inputs, concurrency=4) as results:
            items = {item.index: item async for item in results}
    assert sorted(items) == list(range(8))
    assert items[0].ok
    assert items[7].ok
    fields = {i: getattr(items[i].error, "field", None) for i in range(1, 7)}
    assert fields == {
        1: "messages[0].content",
        2: "temperature",
        3: "request",
        4: "prompt",
        5: "messages",
        6: "messages",
    }
    for i in range(1, 7):
        assert isinstance(items[i].error, mpt_async.RequestValidationError)
    assert len(chat_requests(emulator)) == 2


async def test_progress_hook_counts_each_result(emulator: Emulator) -> None:
    """The hook sees done go up by one per result, failures counted, total from len()."""
    calls: list[tuple[int, int, int | None]] = []
    inputs = ["a", "", "b", "c", 7]
    async with token_client(emulator) as client:
        async with client.batch(
            inputs, concurrency=2, on_progress=lambda *c: calls.append(c)
        ) as results:
            async for _ in results:
                pass
    assert [done for done, _, _ in calls] == [1, 2, 3, 4, 5]
    assert {total for _, _, total in calls} == {5}
    assert calls[-1] == (5, 2, 5)
    assert all(b[1] - a[1] in (0, 1) for a, b in itertools.pairwise(calls))


async def test_async_input_is_read_lazily_and_closed_on_break(emulator: Emulator) -> None:
    """An async generator is pulled only as far as needed, and closed when the block ends."""
    pulled: list[int] = []
    closed = anyio.Event()

    async def prompts() -> AsyncIterator[str]:
        try:
            for i in range(1_000_000):
                pulled.append(i)
                yield f"q{i}"
        finally:
            closed.set()

    seen: list[tuple[int, int, int | None]] = []
    async with token_client(emulator) as client:
        async with client.batch(
            prompts(), concurrency=2, on_progress=lambda *c: seen.append(c)
        ) as rs:
            async for item in rs:
                assert _asked(item.response) == f"q{item.index}"
                if rs.done == 3:
                    break
    assert closed.is_set()
    assert len(pulled) <= 3 + 2 * 2 + 1  # what was answered, in flight and buffered
    assert seen[-1] == (3, 0, None)


async def test_sync_generator_is_read_lazily(emulator: Emulator) -> None:
    """A plain generator is advanced one input per free worker, not drained up front."""
    pulled: list[int] = []

    def prompts() -> Iterator[str]:
        for i in range(1_000_000):
            pulled.append(i)
            yield f"q{i}"

    async with token_client(emulator) as client:
        async with client.batch(prompts(), concurrency=4) as results:
            async for item in results:
                assert item.ok
                break
    assert len(pulled) <= 1 + 2 * 4 + 1


async def test_early_break_cancels_in_flight_calls(emulator: Emulator) -> None:
    """Breaking out returns at once, cancels the stalled calls, and leaks no task or socket."""
    async with token_client(emulator) as client:
        await client.chat([{"role": "user", "content": "warm up"}])
        emulator.inject(Fault.stall(60), times=3)
        tasks_before = _task_count()
        with anyio.fail_after(20):
            async with client.batch([f"q{i}" for i in range(4)], concurrency=4) as results:
                async for item in results:
                    assert item.ok  # the one call that was not stalled
                    break
        assert _task_count() == tasks_before
        # The three cancelled calls closed their sockets; at most the idle one remains.
        await until(lambda: emulator.stats.open_connections <= 1)
        assert emulator.stats.open_connections <= 1
        assert (await client.chat([{"role": "user", "content": "still usable"}])).result
    assert await wait_no_connections(emulator) == 0


async def test_outer_cancellation_stops_the_batch(emulator: Emulator) -> None:
    """A cancel scope around the batch cancels its stalled calls promptly and cleanly."""
    emulator.inject(Fault.stall(60), times=4)
    async with token_client(emulator) as client:
        tasks_before = _task_count()
        cancelled_at: list[float] = []

        async def cancel_once_stalled() -> None:
            # Once the four calls are stalled at the service, not before.
            await until(lambda: emulator.stats.chat_requests == 4)
            cancelled_at.append(time.monotonic())
            scope.cancel()

        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(cancel_once_stalled)
                async with client.batch(["a", "b", "c", "d"], concurrency=4) as results:
                    async for _ in results:
                        pytest.fail("no call should have finished")
            assert scope.cancelled_caught
            assert time.monotonic() - cancelled_at[0] < 30  # the stalls last 60 s
        assert _task_count() == tasks_before
    assert emulator.stats.chat_requests == 4
    assert await wait_no_connections(emulator) == 0


async def test_failing_input_iterator_is_raised(emulator: Emulator) -> None:
    """An exception from the caller's iterable ends the batch and is raised as itself."""

    def prompts() -> Iterator[str]:
        yield "a"
        yield "b"
        raise LookupError("the input broke")

    async with token_client(emulator) as client:
        tasks_before = _task_count()
        got: list[int] = []
        with pytest.raises(LookupError, match="the input broke"):
            async with client.batch(prompts(), concurrency=1) as results:
                async for item in results:
                    got.append(item.index)
        assert _task_count() == tasks_before
    assert got == [0, 1]


async def test_bad_arguments_raise_before_any_io(emulator: Emulator) -> None:
    """Bad requests or options raise typed errors at once; nothing reaches the server."""
    async with token_client(emulator) as client:
        with pytest.raises(mpt_async.RequestValidationError, match="requests"):
            client.batch("not a list")  # type: ignore[arg-type]
        with pytest.raises(mpt_async.RequestValidationError, match="requests"):
            client.batch({"messages": []})  # type: ignore[arg-type]
        for bad in (0, -1, 2.5, True):
            with pytest.raises(mpt_async.ConfigurationError, match="concurrency"):
                client.batch(["a"], concurrency=bad)  # type: ignore[arg-type]
        with pytest.raises(mpt_async.ConfigurationError, match="on_progress"):
            client.batch(["a"], on_progress=3)  # type: ignore[arg-type]

        async def hook(done: int, failed: int, total: int | None) -> None:
            pass

        with pytest.raises(mpt_async.ConfigurationError, match="never awaited"):
            client.batch(["a"], on_progress=hook)
        with pytest.raises(ValueError, match="total"):
            client.batch(["a"], total=-1)
    assert emulator.stats.chat_requests == 0


async def test_batch_runs_once_and_only_inside_its_block(emulator: Emulator) -> None:
    """Iterating outside the block, or entering twice, raises a RuntimeError that says why."""
    async with token_client(emulator) as client:
        batch = client.batch(["a"])
        with pytest.raises(RuntimeError, match="async with"):
            await batch.__anext__()
        async with batch:
            assert [item.ok async for item in batch] == [True]
        with pytest.raises(RuntimeError, match="runs once"):
            async with batch:
                pass
        with pytest.raises(RuntimeError, match="over"):
            await batch.__anext__()
    assert repr(batch) == "<Batch finished, 1/1 done, 0 failed, concurrency=8>"
