"""The clients under test, each behind the same small interface.

Every adapter makes the same two calls against the emulator: a non-stream chat whose body
is decoded, and a stream read to its end with every ``data:`` line decoded. The raw ones do
by hand what a careful user of httpx or aiohttp would write: one token fetched once, one
pooled session, ``json.dumps`` of the body and ``json.loads`` of the answer per call.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
from typing import Any

API_KEY = "emulator-api-key"
SECRET_KEY = "emulator-secret-key"
ENDPOINT = "mpt-30b-instruct"
CHAT_PATH = f"/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{ENDPOINT}"
TOKEN_PATH = "/oauth/2.0/token"
MESSAGES = [{"role": "user", "content": "Please introduce The Great Wall"}]
JSON_HEADERS = {"Content-Type": "application/json"}
TOKEN_PARAMS = {
    "grant_type": "client_credentials",
    "client_id": API_KEY,
    "client_secret": SECRET_KEY,
}


class BenchError(RuntimeError):
    """A call answered something other than a good reply."""


def _check_reply(data: dict[str, Any]) -> None:
    if "error_code" in data or not data.get("result"):
        raise BenchError(f"bad reply: {str(data)[:200]}")


def _check_end(last: dict[str, Any] | None) -> None:
    if last is None or last.get("is_end") is not True:
        raise BenchError(f"stream did not end with is_end: {str(last)[:200]}")


def find_aiohttp_transport() -> type | None:
    """The aiohttp-backed httpx transport mpt_async ships (the ``speed`` extra), if any.

    Looks, without assuming a name, for an ``httpx.AsyncBaseTransport`` subclass with
    "aiohttp" in its name in any ``mpt_async`` module with "aiohttp" in its name.
    """
    if importlib.util.find_spec("aiohttp") is None:
        return None
    try:
        import httpx

        import mpt_async
    except ImportError:
        return None
    for info in pkgutil.iter_modules(mpt_async.__path__, "mpt_async."):
        if "aiohttp" not in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, httpx.AsyncBaseTransport)
                and obj.__module__ == module.__name__
                and "aiohttp" in obj.__name__.lower()
            ):
                return obj
    return None


def make_aiohttp_transport(pool: int) -> Any:
    """An instance of :func:`find_aiohttp_transport`'s class with a pool of ``pool``."""
    cls = find_aiohttp_transport()
    if cls is None:
        raise BenchError("mpt_async has no aiohttp-backed httpx transport")
    if "max_connections" in inspect.signature(cls).parameters:
        return cls(max_connections=pool)
    return cls()


def _httpx_client(transport: str, pool: int) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    wire = None
    if transport == "aiohttp":
        wire = make_aiohttp_transport(pool)
    elif transport == "pool":
        from mpt_async._pool import PoolTransport

        wire = PoolTransport(limits=limits)
    return httpx.AsyncClient(limits=limits, transport=wire, timeout=120)


def _json_loads() -> Any:
    """orjson's ``loads`` when installed (the raw aiohttp floor is the fastest loop)."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


class Adapter:
    """One client: ``open``, then ``chat`` / ``stream`` any number of times, then ``close``."""

    runtime = "asyncio"

    async def open(self, base_url: str, pool: int) -> None:
        raise NotImplementedError

    async def chat(self) -> None:
        raise NotImplementedError

    async def stream(self) -> int:
        """Read one stream to its end; return the number of chunks."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """What actually carries the bytes (for the report)."""
        return ""


class MptAsync(Adapter):
    """``mpt_async.Client``; ``http`` picks its own default, or forces httpx or aiohttp.

    ``api="v2"`` speaks the v2 interface with the emulator's API key instead.
    """

    def __init__(self, runtime: str = "asyncio", http: str = "default", api: str = "v1") -> None:
        self.runtime = runtime
        self.http_kind = http
        self.api = api
        self.client: Any = None
        self.http: Any = None

    async def open(self, base_url: str, pool: int) -> None:
        import mpt_async

        if self.http_kind != "default":
            self.http = _httpx_client(self.http_kind, pool)
        if self.api == "v2":
            from mpt_async.testing._emulator import DEFAULT_V2_API_KEY

            auth: Any = mpt_async.APIKeyAuth(DEFAULT_V2_API_KEY)
        else:
            auth = mpt_async.AccessTokenAuth(API_KEY, SECRET_KEY)
        self.client = mpt_async.Client(
            auth=auth,
            base_url=base_url,
            max_connections=pool,
            http_client=self.http,
        )

    async def chat(self) -> None:
        reply = await self.client.chat(MESSAGES)
        if not reply.result:
            raise BenchError("empty reply")

    async def stream(self) -> int:
        count = 0
        async with self.client.chat_stream(MESSAGES) as stream:
            async for _chunk in stream:
                count += 1
        return count

    async def close(self) -> None:
        await self.client.aclose()
        if self.http is not None:
            await self.http.aclose()

    def describe(self) -> str:
        # Best effort, through private attributes: which transport carried the calls.
        try:
            loop = self.client._request_loop
            inner = getattr(loop, "http", None) or loop._http
            wire = inner._transport
            if getattr(wire, "_aiohttp", None) is not None:
                return "aiohttp transport (auto)"
            if getattr(wire, "_httpx", None) is not None:
                return f"{type(wire._httpx).__name__} (auto)"
            return type(wire).__name__
        except AttributeError:
            return "unknown"


class RawHttpx(Adapter):
    """A bare ``httpx.AsyncClient`` (its own transport, or mpt_async's aiohttp or pool one)."""

    def __init__(self, transport: str = "httpx", runtime: str = "asyncio") -> None:
        self.transport = transport
        self.runtime = runtime
        self.http: Any = None
        self.url = ""

    async def open(self, base_url: str, pool: int) -> None:
        self.http = _httpx_client(self.transport, pool)
        response = await self.http.post(base_url + TOKEN_PATH, params=TOKEN_PARAMS)
        token = json.loads(response.content)["access_token"]
        self.url = f"{base_url}{CHAT_PATH}?access_token={token}"

    async def chat(self) -> None:
        body = json.dumps({"messages": MESSAGES}).encode()
        response = await self.http.post(self.url, content=body, headers=JSON_HEADERS)
        _check_reply(json.loads(response.content))

    async def stream(self) -> int:
        body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
        count, last = 0, None
        async with self.http.stream("POST", self.url, content=body, headers=JSON_HEADERS) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    last = json.loads(line[5:])
                    count += 1
        _check_end(last)
        return count

    async def close(self) -> None:
        await self.http.aclose()

    def describe(self) -> str:
        return type(self.http._transport).__name__


class RawAiohttp(Adapter):
    """A bare ``aiohttp.ClientSession``, decoding with orjson when it is installed."""

    def __init__(self) -> None:
        self.session: Any = None
        self.url = ""
        self.loads = _json_loads()

    async def open(self, base_url: str, pool: int) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))
        async with self.session.post(base_url + TOKEN_PATH, params=TOKEN_PARAMS) as response:
            token = json.loads(await response.read())["access_token"]
        self.url = f"{base_url}{CHAT_PATH}?access_token={token}"

    async def chat(self) -> None:
        body = json.dumps({"messages": MESSAGES}).encode()
        async with self.session.post(self.url, data=body, headers=JSON_HEADERS) as response:
            _check_reply(self.loads(await response.read()))

    async def stream(self) -> int:
        body = json.dumps({"messages": MESSAGES, "stream": True}).encode()
        count, last = 0, None
        async with self.session.post(self.url, data=body, headers=JSON_HEADERS) as response:
            async for line in response.content:
                if line.startswith(b"data:"):
                    last = self.loads(line[5:])
                    count += 1
        _check_end(last)
        return count

    async def close(self) -> None:
        await self.session.close()

    def describe(self) -> str:
        return "orjson" if self.loads is not json.loads else "json"


class Qianfan(Adapter):
    """The official SDK: ``ChatCompletion(endpoint=...).ado``, configured by environment."""

    def __init__(self) -> None:
        self.completion: Any = None

    async def open(self, base_url: str, pool: int) -> None:
        os.environ.update(
            QIANFAN_AK=API_KEY,
            QIANFAN_SK=SECRET_KEY,
            QIANFAN_BASE_URL=base_url,
            QIANFAN_LLM_API_RETRY_COUNT="1",  # one attempt: no retry machinery at work
            QIANFAN_QPS_LIMIT="0",  # no client-side rate limiting (the default, made sure)
            QIANFAN_RPM_LIMIT="0",
            QIANFAN_TPM_LIMIT="0",
        )
        import qianfan

        qianfan.disable_log()
        self.completion = qianfan.ChatCompletion(endpoint=ENDPOINT)

    async def chat(self) -> None:
        response = await self.completion.ado(messages=MESSAGES)
        _check_reply(response.body)

    async def stream(self) -> int:
        count, last = 0, None
        async for response in await self.completion.ado(messages=MESSAGES, stream=True):
            last = response.body
            count += 1
        _check_end(last)
        return count

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "aiohttp, a new session per call"


#: name -> a factory of its adapter.
CLIENTS: dict[str, Any] = {
    "mpt_async": lambda: MptAsync("asyncio"),
    "mpt_async[httpx]": lambda: MptAsync("asyncio", http="httpx"),
    "mpt_async[aiohttp]": lambda: MptAsync("asyncio", http="aiohttp"),
    "mpt_async/trio": lambda: MptAsync("trio"),
    "mpt_async[pool]": lambda: MptAsync("asyncio", http="pool"),
    "mpt_async/v2": lambda: MptAsync("asyncio", api="v2"),
    "httpx": lambda: RawHttpx("httpx"),
    "httpx+aiohttp": lambda: RawHttpx("aiohttp"),
    "httpx+pool/trio": lambda: RawHttpx("pool", runtime="trio"),
    "aiohttp": RawAiohttp,
    "qianfan": Qianfan,
}

#: What each row is, for the report.
DESCRIPTIONS = {
    "mpt_async": "mpt_async.Client on asyncio, default transport",
    "mpt_async[httpx]": "mpt_async.Client on asyncio over a plain httpx.AsyncClient (info)",
    "mpt_async[aiohttp]": "mpt_async.Client over httpx + mpt_async's aiohttp transport",
    "mpt_async/trio": "mpt_async.Client on trio, default transport",
    "mpt_async/v2": "mpt_async.Client on asyncio, v2 interface (an API key; the v2 section)",
    "mpt_async[pool]": "mpt_async.Client on asyncio over httpx + mpt_async's pool "
    "(what asyncio uses without aiohttp; info)",
    "httpx": "raw httpx.AsyncClient, default transport",
    "httpx+aiohttp": "raw httpx.AsyncClient over mpt_async's aiohttp transport",
    "httpx+pool/trio": "raw httpx.AsyncClient on trio over mpt_async's pool "
    "(the httpx floor on trio)",
    "aiohttp": "raw aiohttp.ClientSession (the floor: no httpx at all)",
    "qianfan": "official qianfan SDK, ChatCompletion.ado",
}

#: The raw httpx-based rows whose minimum is the floor mpt_async is held to.
HTTPX_FLOOR = ("httpx", "httpx+aiohttp")
