"""Stream decoding alone: the same recorded answer replayed from memory to both parsers.

Over loopback, how many events arrive per read depends on whether the server or the
client is ahead, and that changes the cost per chunk more than parsing does. Here the
body of one real 500-chunk answer from the emulator is replayed by an in-memory httpx
transport, one event per read (as a slow network delivers it), to mpt_async's stream and
to a bare ``aiter_lines()`` + ``json.loads`` loop, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from benchmarks._clients import (
    API_KEY,
    CHAT_PATH,
    JSON_HEADERS,
    MESSAGES,
    SECRET_KEY,
    TOKEN_PARAMS,
    TOKEN_PATH,
)


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers the token request, and every chat request with the recorded stream."""

    def __init__(self, pieces: list[bytes], token: bytes) -> None:
        self._pieces = pieces
        self._token = token

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            # Streamed, as a real transport's body is (not read before it is handed over).
            return httpx.Response(200, headers=JSON_HEADERS, stream=_Pieces([self._token]))
        return httpx.Response(
            200, headers={"Content-Type": "text/event-stream"}, stream=_Pieces(self._pieces)
        )


async def record(base_url: str) -> tuple[list[bytes], bytes]:
    """One streamed answer from the emulator, split into events, and a token reply."""
    async with httpx.AsyncClient(timeout=60) as http:
        token = (await http.post(base_url + TOKEN_PATH, params=TOKEN_PARAMS)).content
        url = f"{base_url}{CHAT_PATH}?access_token={json.loads(token)['access_token']}"
        body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
        response = await http.post(url, content=body, headers=JSON_HEADERS)
    events = response.content.split(b"\n\n")
    pieces = [event + b"\n\n" for event in events if event.strip()]
    return pieces, token


async def _timed(call: Callable[[], Awaitable[int]], streams: int) -> tuple[float, int]:
    gc.collect()
    chunks = 0
    cpu0 = time.process_time()
    for _ in range(streams):
        chunks += await call()
    return time.process_time() - cpu0, chunks


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """CPU microseconds per chunk for both parsers, median of alternating rounds."""
    import mpt_async

    pieces, token = await record(spec["base_url"])
    base = "http://replay.invalid"
    client = mpt_async.Client(
        auth=mpt_async.AccessTokenAuth(API_KEY, SECRET_KEY),
        base_url=base,
        http_client=httpx.AsyncClient(transport=ReplayTransport(pieces, token)),
    )
    bare_http = httpx.AsyncClient(transport=ReplayTransport(pieces, token))
    url = f"{base}{CHAT_PATH}?access_token={json.loads(token)['access_token']}"

    async def ours() -> int:
        count = 0
        async with client.chat_stream(MESSAGES) as stream:
            async for _chunk in stream:
                count += 1
        return count

    async def bare() -> int:
        body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
        count = 0
        async with bare_http.stream("POST", url, content=body, headers=JSON_HEADERS) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    json.loads(line[5:])
                    count += 1
        return count

    samples: dict[str, list[float]] = {"mpt_async": [], "bare": []}
    try:
        for call in (ours, bare):  # warm-up
            await _timed(call, 5)
        for _ in range(spec["rounds"]):
            for name, call in (("mpt_async", ours), ("bare", bare)):
                cpu, chunks = await _timed(call, spec["streams"])
                if chunks != spec["streams"] * len(pieces):
                    raise RuntimeError(f"{name}: {chunks} chunks, expected {len(pieces)} each")
                samples[name].append(cpu / chunks * 1e6)
    finally:
        await client.aclose()
        await bare_http.aclose()
    us = {name: statistics.median(values) for name, values in samples.items()}
    return {"chunks": len(pieces), "us": us, "rounds_us": samples}


def main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`run` on asyncio."""
    return asyncio.run(run(spec))
