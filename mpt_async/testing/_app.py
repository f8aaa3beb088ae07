"""The emulator's ASGI application: Baidu's endpoints plus the ``/_emulator/`` controls.

A raw ASGI callable with no framework, so it stays cheap per request: benchmarks push
thousands of requests per second through it and it must not be what they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from mpt_async.testing import _auth, _errors, _replies, _rules
from mpt_async.testing._faults import Fault, FaultKind, Phase, Target
from mpt_async.testing._state import RATE_KEYS, EmulatorState, RecordedRequest

__all__ = ["CHAT_PREFIX", "CONTROL_PREFIX", "SERVICE_LIST_PATH", "TOKEN_PATH", "EmulatorApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
TOKEN_PATH = "/oauth/2.0/token"
#: The console API the qianfan SDK lists services from when it has IAM AK/SK.
SERVICE_LIST_PATH = "/wenxinworkshop/service/list"
CONTROL_PREFIX = "/_emulator/"
_DEFAULT_ENDPOINT = "mpt-30b-instruct"
# Bodies beyond this are not kept in memory (the documented limit is 4800 characters).
_MAX_BODY = 4 * 1024 * 1024

_JSON = b"application/json"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


# One encoder for every answer: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and Baidu) does not.
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _loads(raw: bytes) -> Any:
    return json.loads(raw, parse_constant=_reject_constant)


def _parse_query(raw: bytes) -> list[tuple[str, str]]:
    # Like web servers (and Baidu's gateway, as far as one can tell), '+' means a space;
    # a client that means a plus sign must send %2B. Blank values are kept: they are signed.
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


@functools.lru_cache(maxsize=4096)
def _reply(question: str) -> tuple[str, int]:
    text = _replies.reply_text(question)
    return text, _replies.count_tokens((text,))


class _Request:
    """What the handlers need from one request, decoded once."""

    __slots__ = ("client", "headers", "method", "path", "query", "raw_body", "receive")

    def __init__(self, scope: Scope, raw_body: bytes, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = _parse_query(scope["query_string"])
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.raw_body = raw_body
        self.client: object = scope.get("client")
        self.receive = receive

    def record(self, kind: str, body: Any) -> RecordedRequest:
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


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        if size < _MAX_BODY:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
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


async def _drop_connection(send: Send) -> None:
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
            "headers": [(b"content-type", _JSON), (b"content-length", b"1048576")],
        }
    )
    msg = "connection dropped by an injected fault"
    raise ConnectionAbortedError(msg)


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stall(receive: Receive, seconds: float) -> None:
    """Sleep ``seconds``, but stop early if the client hangs up.

    A client that timed out is not waiting any more; ending the stall then keeps
    abandoned requests from piling up on the server, and keeps ``stop()`` quick.
    """
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_until_disconnected(receive), seconds)


class EmulatorApp:
    """The ASGI application serving one :class:`EmulatorState`.

    Args:
        state: The shared state (tokens, faults, counters, settings).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request (other scope types are ignored).

        Args:
            scope: The ASGI connection scope.
            receive: The ASGI receive channel.
            send: The ASGI send channel.
        """
        if scope["type"] != "http":
            return
        request = _Request(scope, await _read_body(receive), receive)
        path = request.path
        if path.startswith(CHAT_PREFIX):
            await self._chat(request, send)
        elif path == TOKEN_PATH:
            await self._token(request, send)
        elif path.startswith(CONTROL_PREFIX):
            await self._control(request, send)
        elif path == SERVICE_LIST_PATH:
            await self._service_list(request, send)
        else:
            self.state.record(request.record("other", None), request.client)
            await self._error(send, _errors.UNSUPPORTED_METHOD)

    # -- shared pieces ---------------------------------------------------------------

    async def _error(
        self,
        send: Send,
        code: int,
        msg: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.state.count("error_responses")
        body = {
            "error_code": code,
            "error_msg": _errors.error_message(code) if msg is None else msg,
            "id": _replies.new_id(),
        }
        await _respond(send, 200, _dumps(body), headers=headers)

    async def _token_error(self, send: Send, status: int, error: str, description: str) -> None:
        self.state.count("error_responses")
        await _respond(send, status, _dumps({"error": error, "error_description": description}))

    async def _arrival_fault(self, fault: Fault, request: _Request, send: Send) -> bool:
        """Apply a fault that acts before anything else; ``True`` if it answered."""
        if fault.kind is FaultKind.ERROR:
            assert fault.code is not None
            await self._error(send, fault.code, fault.msg)
        elif fault.kind is FaultKind.HTTP:
            assert fault.status is not None
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fault.headers]
            await _respond(
                send,
                fault.status,
                (fault.body or "").encode(),
                (fault.content_type or "text/html").encode("latin-1"),
                headers,
            )
        elif fault.kind is FaultKind.DROP:
            await _drop_connection(send)
        else:  # a stall: wait, then answer as usual
            await _stall(request.receive, fault.seconds or 0.0)
            return False
        return True

    def _authenticate(self, request: _Request) -> int | None:
        """``None`` if the request carries valid credentials, else the error code."""
        token = next((v for k, v in request.query if k == "access_token"), None)
        if token is not None:
            return self.state.check_token(token)
        authorization = request.headers.get("authorization")
        if authorization is None:
            return _errors.NO_CREDENTIALS
        valid = self._signed_by_known_key(request, authorization)
        return None if valid else _errors.IAM_CERTIFICATION_FAILED

    def _signed_by_known_key(self, request: _Request, authorization: str) -> bool:
        return _auth.verify_signature(
            authorization,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            keys=self.state.access_keys,
            now=time.time(),
        )

    # -- chat ------------------------------------------------------------------------

    async def _chat(self, request: _Request, send: Send) -> None:
        state = self.state
        try:
            body: Any = _loads(request.raw_body)
            parsed = True
        except (ValueError, RecursionError):
            body, parsed = request.raw_body, False
        state.record(request.record("chat", body), request.client)
        fault = state.take_fault(Target.CHAT, (Phase.ARRIVAL,))
        if fault is not None and await self._arrival_fault(fault, request, send):
            return
        if request.method != "POST":
            await self._error(send, _errors.INVALID_HTTP_METHOD)
            return
        code = self._authenticate(request)
        if code is not None:
            await self._error(send, code)
            return
        endpoint = request.path[len(CHAT_PREFIX) :]
        if (
            not endpoint
            or "/" in endpoint
            or (state.endpoints is not None and endpoint not in state.endpoints)
        ):
            await self._error(send, _errors.API_NAME_NOT_EXIST)
            return
        if not parsed:
            await self._error(send, _errors.INVALID_JSON)
            return
        violation = _rules.validate(body)
        if violation is not None:
            await self._error(send, violation.code, violation.message)
            return
        await self._answer(body, request, send)

    async def _answer(self, body: dict[str, Any], request: _Request, send: Send) -> None:
        state = self.state
        messages = body["messages"]
        prompt_tokens = _replies.count_tokens(m["content"] for m in messages)
        rate_headers: Sequence[tuple[bytes, bytes]] = ()
        if state.rate_limited:
            # A call counts against the quotas only once it is valid; a refused one keeps
            # any queued fault for the next call.
            code, rate_headers = state.admit(prompt_tokens + _reply(messages[-1]["content"])[1])
            if code is not None:
                await self._error(send, code, headers=rate_headers)
                return
        stream = body.get("stream", False)
        phases = (Phase.ANSWER, Phase.STREAM) if stream else (Phase.ANSWER,)
        fault = state.take_fault(Target.CHAT, phases)
        flagged = fault is not None and fault.kind is FaultKind.FLAG
        if flagged:
            result, completion_tokens = "", 0
        else:
            result, completion_tokens = _reply(messages[-1]["content"])
        head = {"id": _replies.new_id(), "object": "chat.completion", "created": int(time.time())}
        if stream:
            state.count("stream_requests")
            usage = (prompt_tokens, completion_tokens)
            await self._stream(send, request.receive, head, result, usage, fault, rate_headers)
            return
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            await _respond(send, 200, _dumps(head)[:-1] + b',"result":"' + result[:20].encode())
            return
        reply = {**head, "result": result, "is_truncated": False, "need_clear_history": flagged}
        if flagged:
            reply["ban_round"] = fault.ban_round if fault is not None else -1
        reply["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        await _respond(send, 200, _dumps(reply), headers=rate_headers)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        head: dict[str, Any],
        result: str,
        usage: tuple[int, int],
        fault: Fault | None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        prompt_tokens, completion_tokens = usage
        kind = fault.kind if fault is not None else None
        config = self.state.config
        # A flagged answer is one empty chunk; id faults need two chunks to show.
        if kind is FaultKind.FLAG:
            count = 1
        elif kind in (FaultKind.SKIP_ID, FaultKind.REPEAT_ID):
            count = max(2, config.stream_chunks)
        else:
            count = config.stream_chunks
        pieces = _replies.split_text(result, count)
        ids = list(range(count))
        if kind is FaultKind.SKIP_ID:
            ids = [0, *range(2, count + 1)]
        elif kind is FaultKind.REPEAT_ID:
            ids = [0, *range(count - 1)]
        after = fault.after if fault is not None else None
        delay = config.chunk_delay
        partial = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "total_tokens": prompt_tokens,
        }
        final = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        start = [*_SSE_HEADERS, *headers] if headers else _SSE_HEADERS
        await send({"type": "http.response.start", "status": 200, "headers": start})
        for index in range(count + 1):
            if index == after:
                assert fault is not None
                if kind is FaultKind.DROP_AFTER:
                    await _drop_connection(send)
                    return
                if kind is FaultKind.MALFORMED:
                    line = b"data: " + _dumps(head)[:-1] + b',"sentence_id":' + b"\n\n"
                    await send({"type": "http.response.body", "body": line, "more_body": True})
                    break
                await _stall(receive, fault.seconds or 0.0)  # a stall mid-stream
            if index == count:
                break
            if index and delay:
                await asyncio.sleep(delay)
            last = index == count - 1
            chunk = {
                "id": head["id"],
                "object": "chat.completion",
                "created": int(time.time()),
                "sentence_id": ids[index],
                "is_end": last and kind is not FaultKind.NO_END,
                "is_truncated": False,
                "result": pieces[index],
                "need_clear_history": kind is FaultKind.FLAG,
            }
            if kind is FaultKind.FLAG:
                assert fault is not None
                chunk["ban_round"] = fault.ban_round
            chunk["usage"] = final if last else partial
            line = b"data: " + _dumps(chunk) + b"\n\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- token -----------------------------------------------------------------------

    async def _token(self, request: _Request, send: Send) -> None:
        state = self.state
        try:
            body: Any = _loads(request.raw_body) if request.raw_body else None
        except (ValueError, RecursionError):
            body = request.raw_body
        state.record(request.record("token", body), request.client)
        fault = state.take_fault(Target.TOKEN, (Phase.ARRIVAL,))
        if fault is not None and await self._arrival_fault(fault, request, send):
            return
        if request.method not in ("GET", "POST"):
            await self._token_error(send, 405, "invalid_request", "unsupported HTTP method")
            return
        params = dict(request.query)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            # Some clients send the parameters as a form instead of the query.
            params.update(_parse_query(request.raw_body))
        if params.get("grant_type") != "client_credentials":
            await self._token_error(
                send, 400, "unsupported_grant_type", "The authorization grant type is not supported"
            )
            return
        secret = state.api_keys.get(params.get("client_id", ""))
        if secret is None:
            await self._token_error(send, 401, "invalid_client", "unknown client id")
            return
        if not hmac.compare_digest(secret.encode(), params.get("client_secret", "").encode()):
            await self._token_error(send, 401, "invalid_client", "Client authentication failed")
            return
        token = state.issue_token()
        reply = {
            "refresh_token": "25." + uuid.uuid4().hex,
            "expires_in": math.ceil(state.token_ttl),
            "session_key": uuid.uuid4().hex,
            "access_token": token,
            "scope": "public brain_all_scope wenxinworkshop_mgr ai_custom_yiyan_com",
            "session_secret": uuid.uuid4().hex,
        }
        await _respond(send, 200, _dumps(reply))

    # -- console (qianfan SDK with IAM keys) -----------------------------------------

    async def _service_list(self, request: _Request, send: Send) -> None:
        self.state.record(request.record("console", None), request.client)
        authorization = request.headers.get("authorization", "")
        valid = request.method == "POST" and self._signed_by_known_key(request, authorization)
        if not valid:
            self.state.count("error_responses")
            denied = {
                "requestId": str(uuid.uuid4()),
                "code": "AccessDenied",
                "message": "Access denied.",
            }
            await _respond(send, 403, _dumps(denied))
            return
        base = "http://" + request.headers.get("host", "127.0.0.1")
        names = sorted(self.state.endpoints or (_DEFAULT_ENDPOINT,))
        services = [
            {
                "name": "MPT-30B-instruct" if name == _DEFAULT_ENDPOINT else name,
                "url": base + CHAT_PREFIX + name,
                "apiType": "chat",
                "chargeStatus": "RUNNING",
                "versionList": [{"trainType": "mpt-30b", "serviceStatus": "Done"}],
            }
            for name in names
        ]
        reply = {
            "log_id": uuid.uuid4().hex,
            "success": True,
            "result": {"common": services, "custom": []},
        }
        await _respond(send, 200, _dumps(reply))

    # -- controls --------------------------------------------------------------------

    async def _control(self, request: _Request, send: Send) -> None:
        route = (request.method, request.path[len(CONTROL_PREFIX) :].strip("/"))
        handler = _CONTROLS.get(route)
        if handler is None:
            known = any(path == route[1] for _, path in _CONTROLS)
            status, error = (405, "method not allowed") if known else (404, "no such control")
            await _respond(send, status, _dumps({"error": error}))
            return
        try:
            data = _loads(request.raw_body) if request.raw_body.strip() else None
            answer = handler(self.state, data)
        except (ValueError, TypeError, RecursionError) as exc:
            await _respond(send, 400, _dumps({"error": str(exc)}))
            return
        await _respond(send, 200, _dumps(answer))


# Each control takes the state and the decoded JSON body (or None) and returns the
# JSON answer; ValueError/TypeError become HTTP 400.


def _stats(state: EmulatorState, _: Any) -> Any:
    return state.stats().to_dict()


def _list_requests(state: EmulatorState, _: Any) -> Any:
    return [r.to_dict() for r in state.requests()]


def _reset(state: EmulatorState, _: Any) -> Any:
    state.reset()
    return {"ok": True}


def _add_faults(state: EmulatorState, data: Any) -> Any:
    items = data if isinstance(data, list) else [data]
    queued = []
    for item in items:
        if not isinstance(item, dict):
            msg = 'a fault must be a JSON object such as {"kind": "drop"}'
            raise TypeError(msg)
        spec = dict(item)
        times = spec.pop("times", 1)
        queued.append((Fault.from_dict(spec), times))
    for fault, times in queued:
        state.inject(fault, times)
    return {"ok": True, "pending_faults": state.stats().pending_faults}


def _clear_faults(state: EmulatorState, _: Any) -> Any:
    state.clear_faults()
    return {"ok": True}


def _issue_token(state: EmulatorState, data: Any) -> Any:
    ttl = data.get("ttl") if isinstance(data, dict) else None
    if ttl is not None and (not isinstance(ttl, (int, float)) or isinstance(ttl, bool)):
        msg = "ttl must be a number of seconds"
        raise TypeError(msg)
    token = state.issue_token(ttl)
    return {"access_token": token, "expires_in": math.ceil(state.token_ttl if ttl is None else ttl)}


def _expire_tokens(state: EmulatorState, _: Any) -> Any:
    state.expire_tokens()
    return {"ok": True}


def _revoke_tokens(state: EmulatorState, _: Any) -> Any:
    state.revoke_tokens()
    return {"ok": True}


def _get_config(state: EmulatorState, _: Any) -> Any:
    config = state.config
    answer: dict[str, Any] = {
        "stream_chunks": config.stream_chunks,
        "chunk_delay": config.chunk_delay,
    }
    if state.rate_limited:  # the rate settings show once a limit is set
        answer.update({key: getattr(config, key) for key in RATE_KEYS})
    return answer


_CONFIG_KEYS = frozenset({"stream_chunks", "chunk_delay", *RATE_KEYS})


def _set_config(state: EmulatorState, data: Any) -> Any:
    if not isinstance(data, dict) or not data.keys() <= _CONFIG_KEYS:
        msg = (
            "expected a JSON object with some of stream_chunks, chunk_delay, qps, rpm, tpm"
            " and rate_window"
        )
        raise ValueError(msg)
    state.configure(
        stream_chunks=data.get("stream_chunks"),
        chunk_delay=data.get("chunk_delay"),
        rates={key: data[key] for key in RATE_KEYS if key in data},
    )
    return _get_config(state, None)


_CONTROLS: dict[tuple[str, str], Callable[[EmulatorState, Any], Any]] = {
    ("GET", "stats"): _stats,
    ("GET", "requests"): _list_requests,
    ("POST", "reset"): _reset,
    ("POST", "faults"): _add_faults,
    ("DELETE", "faults"): _clear_faults,
    ("POST", "tokens"): _issue_token,
    ("POST", "tokens/expire"): _expire_tokens,
    ("POST", "tokens/revoke"): _revoke_tokens,
    ("GET", "config"): _get_config,
    ("POST", "config"): _set_config,
}
