"""The ``/_emulator/`` control API: the test-side methods of ``Emulator``, over HTTP.

Each control takes the state and the decoded JSON body (or ``None``) and returns the
JSON answer; ``ValueError``/``TypeError`` (bad input, out of range) become HTTP 400.

The controls answer tests, not web pages: a request with a foreign ``Host`` (DNS
rebinding), a foreign ``Origin``, or a body not declared ``application/json`` (a
cross-site form or ``text/plain`` POST) is refused with 403 before it acts.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mpt_async._validate import is_number
from mpt_async.testing._asgi import Request, Send, dumps, loads, respond
from mpt_async.testing._config import RATE_KEYS
from mpt_async.testing._faults import Fault
from mpt_async.testing._script import ScriptedReply
from mpt_async.testing._state import EmulatorState

__all__ = ["CONTROL_PREFIX", "control"]

CONTROL_PREFIX = "/_emulator/"
# The most entries one POST to /faults or /replies may queue (each with its own times).
_MAX_BATCH = 1000


async def control(state: EmulatorState, request: Request, send: Send) -> None:
    """Serve one control request (never recorded, never counted).

    Args:
        state: The emulator's state.
        request: The request, its path under :data:`CONTROL_PREFIX`.
        send: The ASGI send channel.
    """
    refusal = _foreign(request)
    if refusal is not None:
        await respond(send, 403, dumps({"error": refusal}))
        return
    route = (request.method, request.path[len(CONTROL_PREFIX) :].strip("/"))
    handler = _CONTROLS.get(route)
    if handler is None:
        known = any(path == route[1] for _, path in _CONTROLS)
        status, error = (405, "method not allowed") if known else (404, "no such control")
        await respond(send, status, dumps({"error": error}))
        return
    try:
        data = loads(request.raw_body) if request.raw_body.strip() else None
        answer = handler(state, data)
    except (ValueError, TypeError, RecursionError) as exc:
        await respond(send, 400, dumps({"error": str(exc)}))
        return
    await respond(send, 200, dumps(answer))


def _is_local(host: str | None, request: Request) -> bool:
    """Whether ``host`` names this machine's loopback, or the address the server listens on."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    server = request.server
    if isinstance(server, (tuple, list)) and server and str(server[0]).lower() == host:
        return True  # an emulator listening on another address, on purpose
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _foreign(request: Request) -> str | None:
    """Why a control request may come from a web page rather than a test; ``None`` if not.

    A page the user opens can send a ``text/plain`` POST to any address, and a host name it
    controls can resolve to 127.0.0.1 (DNS rebinding). So the controls answer only a
    request whose ``Host`` is this machine's loopback (or the server's own address), with
    no foreign ``Origin``, and whose body, if any, is declared JSON.
    """
    headers = request.headers
    host = headers.get("host")
    if host is None or not _is_local(urlsplit(f"//{host}").hostname, request):
        return "the controls answer requests for a loopback Host only"
    origin = headers.get("origin")
    if origin is not None and not _is_local(urlsplit(origin).hostname, request):
        return "the controls refuse requests from web pages of other sites"
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "the controls refuse cross-site requests"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    sends_body = request.method != "GET" and (request.raw_body.strip() or content_type)
    if sends_body and content_type != "application/json":
        return "a control's body must be sent as application/json"
    return None


def _objects(data: Any, example: str) -> list[dict[str, Any]]:
    """One JSON object or a list of them (at most ``_MAX_BATCH``)."""
    items = data if isinstance(data, list) else [data]
    if len(items) > _MAX_BATCH:
        msg = f"at most {_MAX_BATCH} entries per request"
        raise ValueError(msg)
    for item in items:
        if not isinstance(item, dict):
            msg = f"expected a JSON object such as {example}"
            raise TypeError(msg)
    return items


def _stats(state: EmulatorState, _: Any) -> Any:
    return state.stats().to_dict()


def _list_requests(state: EmulatorState, _: Any) -> Any:
    return [r.to_dict() for r in state.requests()]


def _reset(state: EmulatorState, _: Any) -> Any:
    state.reset()
    return {"ok": True}


def _add_faults(state: EmulatorState, data: Any) -> Any:
    queued = []
    for item in _objects(data, '{"kind": "drop"}'):
        spec = dict(item)
        times = spec.pop("times", 1)
        queued.append((Fault.from_dict(spec), times))
    for fault, times in queued:
        state.inject(fault, times)
    return {"ok": True, "pending_faults": state.stats().pending_faults}


def _list_faults(state: EmulatorState, _: Any) -> Any:
    return [{**fault.to_dict(), "times": times} for fault, times in state.pending_faults()]


def _clear_faults(state: EmulatorState, _: Any) -> Any:
    state.clear_faults()
    return {"ok": True}


def _add_replies(state: EmulatorState, data: Any) -> Any:
    queued = [ScriptedReply.from_dict(item) for item in _objects(data, '{"text": "yes"}')]
    for reply, times in queued:
        state.add_reply(reply, times)
    return {"ok": True, "pending_replies": sum(t for _, t in state.pending_replies())}


def _list_replies(state: EmulatorState, _: Any) -> Any:
    return [{**reply.to_dict(), "times": times} for reply, times in state.pending_replies()]


def _clear_replies(state: EmulatorState, _: Any) -> Any:
    state.clear_replies()
    return {"ok": True}


def _issue_token(state: EmulatorState, data: Any) -> Any:
    ttl = data.get("ttl") if isinstance(data, dict) else None
    if ttl is not None and not is_number(ttl):
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
    ("GET", "faults"): _list_faults,
    ("POST", "faults"): _add_faults,
    ("DELETE", "faults"): _clear_faults,
    ("GET", "replies"): _list_replies,
    ("POST", "replies"): _add_replies,
    ("DELETE", "replies"): _clear_replies,
    ("POST", "tokens"): _issue_token,
    ("POST", "tokens/expire"): _expire_tokens,
    ("POST", "tokens/revoke"): _revoke_tokens,
    ("GET", "config"): _get_config,
    ("POST", "config"): _set_config,
}
