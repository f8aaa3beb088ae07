"""ASGI plumbing shared by the emulator's endpoints: decode a request, send an answer.

A raw ASGI layer with no framework, so it stays cheap per request: benchmarks push
thousands of requests per second through the emulator and it must not be what they
measure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from mpt_async.testing._records import RecordedRequest

__all__ = [
    "JSON",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "drop_connection",
    "dumps",
    "loads",
    "parse_query",
    "read_body",
    "respond",
    "stall",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
# Bodies beyond this are read but not kept (the documented limit is 4800 characters).
MAX_BODY = 4 * 1024 * 1024

# One encoder for every answer: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact UTF-8 JSON."""
    return _ENCODER.encode(obj).encode()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and Baidu) does not.
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def loads(raw: bytes) -> Any:
    """Decode strict JSON (no ``NaN``/``Infinity``).

    Raises:
        ValueError: Not JSON.
        RecursionError: Nested too deep.
    """
    return json.loads(raw, parse_constant=_reject_constant)


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    """Split a query string (or a form body) into its pairs, blank values kept."""
    # Like web servers (and Baidu's gateway, as far as one can tell), '+' means a space;
    # a client that means a plus sign must send %2B. Blank values are kept: they are signed.
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


class Request:
    """What the handlers need from one request, decoded once.

    Args:
        scope: The ASGI scope.
        raw_body: The body read so far (at most :data:`MAX_BODY` bytes of it).
        receive: The ASGI receive channel (to notice a client that hangs up).
    """

    __slots__ = ("client", "headers", "method", "path", "query", "raw_body", "receive", "server")

    def __init__(self, scope: Scope, raw_body: bytes, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = parse_query(scope["query_string"])
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.raw_body = raw_body
        self.client: object = scope.get("client")
        #: The (host, port) the server listens on, when the server says.
        self.server: object = scope.get("server")
        self.receive = receive

    def record(self, kind: str, body: Any) -> RecordedRequest:
        """This request as a :class:`RecordedRequest` of ``kind``."""
        return RecordedRequest(
            kind=kind,
            method=self.method,
            path=self.path,
            query=dict(self.query),
            headers=self.headers,
            body=body,
            raw_body=self.raw_body,
            time=time.time(),
        )


async def read_body(receive: Receive) -> bytes | None:
    """Read the whole request body, keeping at most :data:`MAX_BODY` bytes of it.

    Returns:
        The body, or ``None`` when the client went away before sending all of it.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        if size < MAX_BODY:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response with a ``Content-Length``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def drop_connection(send: Send) -> None:
    """Close the client's TCP connection without sending (the rest of) a response.

    ASGI has no message for this, so reach the transport through the server's
    request cycle (uvicorn's ``send`` is a bound method of it). ``abort`` closes the
    socket at once; yielding to the loop lets the server see the connection lost, so
    it neither answers 500 nor logs a complaint about an unfinished response.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        for _ in range(10):
            await asyncio.sleep(0)
            if getattr(cycle, "disconnected", True):
                break
        return
    # Another server: promise a body that never comes, then fail, which makes any
    # server close the connection (the client sees an incomplete response).
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", JSON), (b"content-length", b"1048576")],
        }
    )
    msg = "connection dropped by an injected fault"
    raise ConnectionAbortedError(msg)


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stall(receive: Receive, seconds: float) -> bool:
    """Sleep ``seconds``, but stop early if the client hangs up; ``True`` if it did.

    A client that timed out is not waiting any more; ending the stall then keeps
    abandoned requests from piling up on the server, and keeps ``stop()`` quick. Its
    request is then answered no further: it takes no scripted reply and no quota.
    """
    try:
        await asyncio.wait_for(_until_disconnected(receive), seconds)
    except asyncio.TimeoutError:
        return False
    return True
