"""The v2 interface, as Baidu serves it: ``/v2/chat/completions`` and IAM's bearer tokens.

The chat route checks a request with its own rule table (:data:`RULES`), never the
client's models, answers with the same :class:`~mpt_async.testing._answers.Answer` as v1
(scripted replies, faults and quotas included), and refuses in v2's shape: a real HTTP
status and ``{"error": {"code", "message", "type"}, "id"}``. The IAM route issues bearer
tokens to a request signed (bce-auth-v1) with known IAM keys.

Public sources: https://cloud.baidu.com/doc/qianfan-api/s/3m7of64lb (chat),
https://cloud.baidu.com/doc/qianfan-api/s/Om9b4yj3w (errors),
https://cloud.baidu.com/doc/IAM/s/Mlwqxxjdf (bearer tokens).
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from mpt_async.testing._answers import Answer
from mpt_async.testing._asgi import Request, Send, drop_connection, dumps, loads, respond, stall
from mpt_async.testing._faults import Fault, FaultKind, Phase, Target

__all__ = ["CHAT_PATH", "IAM_TOKEN_PATH", "RULES", "V2Service"]

CHAT_PATH = "/v2/chat/completions"
IAM_TOKEN_PATH = "/v1/BCE-BEARER/token"
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
#: IAM's bounds on a bearer token's lifetime, and its default.
_LIFETIME = (300, 2_592_000, 1800)


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if type(value) not in (int, float):
            return False
        above = low < value if low_open else low <= value
        return bool(above and value <= high)

    return check


def _stop(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= 4
        and all(isinstance(s, str) and len(s) <= 20 for s in value)
    )


def _int(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and low <= value <= high


#: field -> (check, what the service says when it fails). ``model`` and ``messages`` are
#: checked on their own; fields not listed are passed over, as the service does.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stream": (lambda v: type(v) is bool, "stream must be a boolean"),
    "stream_options": (
        lambda v: isinstance(v, dict) and type(v.get("include_usage", False)) is bool,
        "stream_options must be an object with a boolean include_usage",
    ),
    "temperature": (_number(0, 2, low_open=True), "temperature range is (0, 2]"),
    "top_p": (_number(0, 1), "top_p range is [0, 1]"),
    "penalty_score": (_number(1, 2), "penalty_score range is [1, 2]"),
    "frequency_penalty": (_number(-2, 2), "frequency_penalty range is [-2, 2]"),
    "presence_penalty": (_number(-2, 2), "presence_penalty range is [-2, 2]"),
    "max_completion_tokens": (_int(1, 12288), "max_completion_tokens range is [1, 12288]"),
    "seed": (_int(1, 2_147_483_646), "seed range is (0, 2147483647)"),
    "stop": (_stop, "stop must be a list of at most 4 strings of at most 20 characters"),
    "user": (lambda v: isinstance(v, str), "user must be a string"),
    "web_search": (lambda v: isinstance(v, dict), "web_search must be an object"),
    "metadata": (
        lambda v: (
            isinstance(v, dict) and len(v) <= 16 and all(isinstance(x, str) for x in v.values())
        ),
        "metadata must map at most 16 names to strings",
    ),
}
_ROLES = ("system", "user", "assistant")
#: v1 error codes (faults, quotas) in v2's words: code -> (status, v2 code, type).
_FROM_V1: dict[int, tuple[int, str, str]] = {
    4: (429, "user_rate_limit_exceeded", "rate_limit_exceeded"),
    18: (429, "user_rate_limit_exceeded", "rate_limit_exceeded"),
    336501: (429, "rpm_rate_limit_exceeded", "rate_limit_exceeded"),
    336502: (429, "tpm_rate_limit_exceeded", "rate_limit_exceeded"),
    110: (401, "invalid_iam_token", "invalid_request_error"),
    111: (401, "invalid_iam_token", "invalid_request_error"),
    336005: (401, "invalid_model", "invalid_request_error"),
    6: (403, "account_overdue", "access_denied"),
    1: (500, "internal_error", "Internal_error"),
    2: (500, "internal_error", "Internal_error"),
    336000: (500, "internal_error", "Internal_error"),
    336100: (500, "internal_error", "Internal_error"),
}


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages cannot be empty"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return f"messages[{i}] must have a role of system, user or assistant"
        content = message.get("content")
        if not isinstance(content, str) or not content:
            return f"messages[{i}].content must be a non-empty string"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns or any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(turns)):
        return "roles must alternate user, assistant, ..., user after an optional system message"
    if len(turns) % 2 == 0:
        return "the last message must be the user's"
    return None


def _problem(body: Any) -> tuple[int, str, str] | None:
    """Why the service refuses this body: (status, code, message); ``None`` if it accepts it."""
    if not isinstance(body, dict):
        return 400, "malformed_json", "the body must be a JSON object"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "invalid_argument", "you must provide a model parameter"
    problem = _messages_problem(body.get("messages"))
    if problem is not None:
        return 400, "invalid_messages", problem
    for name, (check, message) in RULES.items():
        if name in body and not check(body[name]):
            return 400, "invalid_argument", message
    return None


class V2Service:
    """The v2 chat route and IAM's token route over a v1 :class:`Service`'s state."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.state = service.state

    async def error(
        self,
        send: Send,
        status: int,
        code: str,
        message: str,
        *,
        kind: str = "invalid_request_error",
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer ``status`` with v2's error envelope."""
        self.state.count("error_responses")
        body = {"error": {"code": code, "message": message, "type": kind}, "id": _id()}
        await respond(send, status, dumps(body), headers=headers)

    async def _v1_error(
        self, send: Send, code: int, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        status, v2_code, kind = _FROM_V1.get(
            code, (400, "invalid_argument", "invalid_request_error")
        )
        await self.error(send, status, v2_code, v2_code, kind=kind, headers=headers)

    def _bearer_refused(self, request: Request) -> bool:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return True
        key = authorization[7:]
        return (
            key not in self.state.bearer_keys
            and self.state.check_token(key, bearer=True) is not None
        )

    async def chat(self, request: Request, send: Send) -> None:
        """``POST /v2/chat/completions``: faults, method, Bearer, body rules, model, answer."""
        state = self.state
        try:
            body: Any = loads(request.raw_body)
        except (ValueError, RecursionError):
            body = None
        state.record(request.record("chat", body), request.client)
        fault = state.take_fault(Target.CHAT, (Phase.ARRIVAL,))
        if fault is not None and fault.kind is FaultKind.ERROR:
            assert fault.code is not None
            await self._v1_error(send, fault.code)
            return
        if fault is not None and await self._service._arrival_fault(fault, request, send):
            return
        if request.method != "POST":
            await self.error(send, 405, "method_not_supported", "only POST is supported")
            return
        if self._bearer_refused(request):
            await self.error(send, 401, "invalid_iam_token", "invalid_iam_token")
            return
        problem = _problem(body)
        if problem is not None:
            await self.error(send, *problem)
            return
        endpoints = state.endpoints
        if endpoints is not None and body["model"] not in endpoints:
            message = "The model does not exist or you do not have access to it."
            await self.error(send, 401, "invalid_model", message)
            return
        await self._answer(body, request, send)

    async def _answer(self, body: dict[str, Any], request: Request, send: Send) -> None:
        stream = body.get("stream", False)
        answer, headers = self._service.accept(body["messages"], stream)
        if isinstance(answer, int):
            await self._v1_error(send, answer, headers)
            return
        answer.head["id"] = _id()
        model = body["model"]
        if stream:
            usage = bool(body.get("stream_options", {}).get("include_usage", False))
            await self._stream(send, request, answer, model, usage, headers)
        else:
            await self._whole(send, answer, model, headers)

    @staticmethod
    def _choice(answer: Answer, payload: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, **payload, "finish_reason": finish}
        if answer.flagged:
            choice["flag"] = 1
            choice["ban_round"] = answer.ban_round
        return choice

    async def _whole(
        self, send: Send, answer: Answer, model: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        fault = answer.fault
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            await respond(send, 200, dumps(answer.head)[:-1] + b',"choices":[{"mess')
            return
        message = {"message": {"role": "assistant", "content": answer.text}}
        reply = {
            **answer.head,
            "object": "chat.completion",
            "model": model,
            "choices": [self._choice(answer, message, "stop")],
            "usage": answer.usage(),
        }
        await respond(send, 200, dumps(reply), headers=headers)

    async def _stream(
        self,
        send: Send,
        request: Request,
        answer: Answer,
        model: str,
        include_usage: bool,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        fault = answer.fault
        pieces = answer.pieces(self.state.config.stream_chunks)
        after = fault.after if fault is not None else None
        delay = self.state.config.chunk_delay
        head = {**answer.head, "object": "chat.completion.chunk", "model": model}
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *headers]})
        for index, piece in enumerate(pieces):
            if index == after and fault is not None and await self._fault(send, request, fault):
                return
            if index and delay:
                await asyncio.sleep(delay)
            last = index == len(pieces) - 1
            ends = last and (fault is None or fault.kind is not FaultKind.NO_END)
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            chunk = {
                **head,
                "choices": [self._choice(answer, {"delta": delta}, "stop" if ends else None)],
                "usage": None,
            }
            await send({"type": "http.response.body", "body": _event(chunk), "more_body": True})
        if fault is not None and after == len(pieces) and await self._fault(send, request, fault):
            return
        tail = b""
        if fault is None or fault.kind is not FaultKind.NO_END:
            if include_usage:
                tail += _event({**head, "choices": [], "usage": answer.usage()})
            tail += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    @staticmethod
    async def _fault(send: Send, request: Request, fault: Fault) -> bool:
        """A fault due mid-stream; ``True`` if the stream ends here."""
        if fault.kind is FaultKind.DROP_AFTER:
            await drop_connection(send)
            return True
        if fault.kind is FaultKind.MALFORMED:
            line = b'data: {"id":"as-broken","choices":[{"delta":\n\n'
            await send({"type": "http.response.body", "body": line, "more_body": False})
            return True
        if fault.kind is FaultKind.STALL:
            await stall(request.receive, fault.seconds or 0.0)
        return False

    # -- IAM ---------------------------------------------------------------------------

    async def iam_token(self, request: Request, send: Send) -> None:
        """``GET /v1/BCE-BEARER/token?expireInSeconds=N``, signed with known IAM keys."""
        state = self.state
        state.record(request.record("token", None), request.client)
        fault = state.take_fault(Target.TOKEN, (Phase.ARRIVAL,))
        if fault is not None and await self._service._arrival_fault(fault, request, send):
            return
        authorization = request.headers.get("authorization", "")
        if request.method != "GET" or not self._service._signed_by_known_key(
            request, authorization
        ):
            await self._iam_error(send, 403, "AccessDenied", "Access denied.")
            return
        asked = dict(request.query).get("expireInSeconds", str(_LIFETIME[2]))
        low, high, _ = _LIFETIME
        if not asked.isdigit() or not low <= int(asked) <= high:
            await self._iam_error(send, 400, "InvalidParameter", "expireInSeconds out of range")
            return
        lifetime = min(int(asked), state.token_ttl)
        now = time.time()
        reply = {
            "userId": uuid.uuid4().hex,
            "token": state.issue_token(lifetime, bearer=True),
            "status": "enable",
            "createTime": _iso(now),
            "expireTime": _iso(now + lifetime),
        }
        await respond(send, 200, dumps(reply))

    async def _iam_error(self, send: Send, status: int, code: str, message: str) -> None:
        self.state.count("error_responses")
        body = {"code": code, "message": message, "requestId": str(uuid.uuid4())}
        await respond(send, status, dumps(body))


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + dumps(data) + b"\n\n"


def _id() -> str:
    return "as-" + uuid.uuid4().hex[:10]


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
