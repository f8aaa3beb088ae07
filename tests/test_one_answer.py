"""One call, one answer: bytes a server sends beyond an answer never answer another call.

A byte-level server (:mod:`tests.hostile`, keeping connections alive) answers each call with
the call's own mark, then adds bytes no request asked for: a copy of the answer, a stray
interim answer, a body its head did not announce. Every transport the client picks by
itself runs each case (the pool with httptools and with h11, on asyncio and trio; aiohttp
on asyncio), with more calls than connections so that connections are handed straight to
queued calls too. Each call must get its own answer, or a typed error: never another's.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

import mpt_async

from . import routes
from .clientkit import until
from .hostile import ANSWER, TOKEN, HostileServer, Wire, hostile, http_head, json_reply
from .routes import transport

pytestmark = pytest.mark.anyio

# The (event loop, transport) fixtures, shared with the other transport-level tests.
route = routes.route
anyio_backend = routes.anyio_backend

CALLS = 24
CONNECTIONS = 2


@asynccontextmanager
async def client_for(url: str, route: tuple[str, str]) -> AsyncIterator[mpt_async.Client]:
    """A client (no retries) over the route's transport."""
    http = httpx.AsyncClient(transport=transport(route[1], max_connections=CONNECTIONS))
    client = mpt_async.Client(
        auth=mpt_async.FixedTokenAuth(TOKEN),
        base_url=url,
        http_client=http,
        max_retries=0,
        timeout=20,
    )
    async with http, client:
        yield client


def own_answer(wire: Wire, pad_to: int = 0) -> bytes:
    """The whole answer to ``wire``'s call: its result is the call's mark (the prompt).

    ``pad_to``: pad the body with blanks so that the answer is that many bytes on the wire.
    """
    mark = json.loads(wire.request.partition(b"\r\n\r\n")[2])["messages"][-1]["content"]
    body = json.dumps({**ANSWER, "result": mark}).encode()
    reply = json_reply(body)
    if pad_to:  # the head's Content-Length grows with the body: size the body for it
        body += b" " * (pad_to - len(reply) - len(str(pad_to)) + len(str(len(body))))
        reply = json_reply(body)
        assert len(reply) == pad_to
    return reply


def assert_own(outcomes: dict[str, str | Any]) -> None:
    """Each call got its own answer (its mark) or a typed error; never another's."""
    assert len(outcomes) == CALLS
    for mark, outcome in outcomes.items():
        assert outcome == mark or isinstance(outcome, mpt_async.MPTError), (mark, outcome)


async def call(client: mpt_async.Client, mark: str) -> str | mpt_async.MPTError:
    """The result of a call whose prompt is ``mark``, or its typed error."""
    try:
        reply = await client.chat([{"role": "user", "content": mark}])
    except mpt_async.MPTError as exc:
        return exc
    return reply.result


async def calls(client: mpt_async.Client, count: int = CALLS) -> dict[str, str | Any]:
    """``count`` calls, several at once (more than the connections): mark -> outcome."""
    outcomes: dict[str, str | Any] = {}
    limiter = anyio.CapacityLimiter(CONNECTIONS * 3)

    async def one(mark: str) -> None:
        async with limiter:
            outcomes[mark] = await call(client, mark)

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, f"call-{n}")
    return outcomes


Extra = Callable[[Wire, bytes], bytes]


async def calls_to(route: tuple[str, str], extra: Extra) -> tuple[dict[str, Any], HostileServer]:
    """:func:`calls` to a server that writes ``extra(wire, answer)`` for each call's answer."""
    with hostile(lambda wire: wire.send(extra(wire, own_answer(wire))), keep_alive=True) as server:
        async with client_for(server.url, route) as client:
            return await calls(client), server


#: What a server writes, in one write, for an answer ``a`` (a case: the answer must hold).
ANSWERED: dict[str, Extra] = {
    "duplicate": lambda wire, a: a + a,
    "body-longer-than-content-length": lambda wire, a: a + a.partition(b"\r\n\r\n")[2] + a,
    "stray-100-continue-and-copy": lambda wire, a: a + b"HTTP/1.1 100 Continue\r\n\r\n" + a,
    "exactly-64KiB-then-copy": lambda wire, a: own_answer(wire, 64 * 1024) * 2,
}


@pytest.mark.parametrize("case", ANSWERED)
async def test_bytes_after_an_answer_never_answer_another_call(
    route: tuple[str, str], case: str
) -> None:
    """Extra bytes after each answer: every call still gets its own answer."""
    outcomes, server = await calls_to(route, ANSWERED[case])
    assert_own(outcomes)
    if route[1] != "aiohttp":  # aiohttp fails an answer whose read brought junk after it
        assert outcomes == {mark: mark for mark in outcomes}
    assert server.accepted >= CALLS  # each spoiled connection was closed, none reused


#: Answers that are no reply (a 204; an empty 200 after a 199 whose body is a reply): the
#: call fails, typed.
REFUSED: dict[str, Extra] = {
    "204-with-a-content-length": lambda wire, a: (
        http_head("204 No Content", content_length=len(a)) + a
    ),
    "interim-199-with-a-body": lambda wire, a: (
        http_head("199 Odd", content_length=len(a.partition(b"\r\n\r\n")[2]))
        + a.partition(b"\r\n\r\n")[2].replace(b"call-", b"ELSE-")
        + http_head(content_length=0)
    ),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_body_where_none_belongs_never_answers_a_call(
    route: tuple[str, str], case: str
) -> None:
    """A body after a 204 or inside an interim 199: never that body as a result."""
    outcomes, _ = await calls_to(route, REFUSED[case])
    assert_own(outcomes)
    assert all(isinstance(outcome, mpt_async.MPTError) for outcome in outcomes.values())


async def test_a_copy_arriving_while_idle_never_answers_the_next_call(
    route: tuple[str, str],
) -> None:
    """A copy of the answer sent 20 ms later, onto the idle connection: the next call's own."""
    copies = itertools.count(1)
    sent = 0

    def late_copy(wire: Wire) -> None:
        nonlocal sent
        answer = own_answer(wire)
        wire.send(answer)
        wire.wait(0.02)
        wire.send(answer)
        sent = next(copies)

    with hostile(late_copy, keep_alive=True) as server:
        async with client_for(server.url, route) as client:
            outcomes = {}
            for n in range(12):
                mark = f"call-{n}"
                outcomes[mark] = await call(client, mark)
                await until(lambda n=n: sent > n)  # the copy is on its way before the next call
    assert outcomes == {mark: mark for mark in outcomes}
    assert server.accepted == 12
