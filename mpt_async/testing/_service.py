"""The service's endpoints, as Baidu serves them: chat, token, and the console's list.

Each checks a request the way Baidu's servers do (with the emulator's own rule table,
never the client's models), applies any queued fault, and answers.
"""

from __future__ import annotations

import hmac
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from mpt_async.testing import _auth, _errors, _replies, _rules
from mpt_async.testing._answers import Answer, derived_reply, send_stream, send_whole
from mpt_async.testing._asgi import (
    Request,
    Send,
    drop_connection,
    dumps,
    loads,
    parse_query,
    respond,
    stall,
)
from mpt_async.testing._faults import Fault, FaultKind, Phase, Target
from mpt_async.testing._state import EmulatorState

__all__ = ["CHAT_PREFIX", "DEFAULT_ENDPOINT", "SERVICE_LIST_PATH", "TOKEN_PATH", "Service"]

CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
TOKEN_PATH = "/oauth/2.0/token"
#: The console API the qianfan SDK lists services from when it has IAM AK/SK.
SERVICE_LIST_PATH = "/wenxinworkshop/service/list"
DEFAULT_ENDPOINT = "mpt-30b-instruct"
_SCOPE = "public brain_all_scope wenxinworkshop_mgr ai_custom_yiyan_com"


class Service:
    """Baidu's endpoints over one :class:`EmulatorState`.

    Args:
        state: The shared state (tokens, faults, replies, counters, settings).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # -- shared pieces ---------------------------------------------------------------

    async def error(
        self,
        send: Send,
        code: int,
        msg: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer HTTP 200 with an ``error_code`` body, as Baidu does."""
        self.state.count("error_responses")
        body = {
            "error_code": code,
            "error_msg": _errors.error_message(code) if msg is None else msg,
            "id": _replies.new_id(),
        }
        await respond(send, 200, dumps(body), headers=headers)

    async def _token_error(self, send: Send, status: int, error: str, description: str) -> None:
        self.state.count("error_responses")
        await respond(send, status, dumps({"error": error, "error_description": description}))

    async def _arrival_fault(self, fault: Fault, request: Request, send: Send) -> bool:
        """Apply a fault that acts before anything else; ``True`` if the request is done.

        A request is done once answered, and also once its client hung up during a stall:
        an abandoned request must not take the scripted reply due to the next one.
        """
        if fault.kind is FaultKind.ERROR:
            assert fault.code is not None
            await self.error(send, fault.code, fault.msg)
        elif fault.kind is FaultKind.HTTP:
            assert fault.status is not None
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fault.headers]
            await respond(
                send,
                fault.status,
                (fault.body or "").encode(),
                (fault.content_type or "text/html").encode("latin-1"),
                headers,
            )
        elif fault.kind is FaultKind.DROP:
            await drop_connection(send)
        else:  # a stall: wait, then answer as usual, unless the client has gone
            return await stall(request.receive, fault.seconds or 0.0)
        return True

    def _authenticate(self, request: Request) -> int | None:
        """``None`` if the request carries valid credentials, else the error code."""
        token = next((v for k, v in request.query if k == "access_token"), None)
        if token is not None:
            return self.state.check_token(token)
        authorization = request.headers.get("authorization")
        if authorization is None:
            return _errors.NO_CREDENTIALS
        valid = self._signed_by_known_key(request, authorization)
        return None if valid else _errors.IAM_CERTIFICATION_FAILED

    def _signed_by_known_key(self, request: Request, authorization: str) -> bool:
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

    def _refusal(self, request: Request, parsed: bool) -> int | None:
        """The error code for a request refused before its body's rules, if any."""
        if request.method != "POST":
            return _errors.INVALID_HTTP_METHOD
        code = self._authenticate(request)
        if code is not None:
            return code
        endpoint = request.path[len(CHAT_PREFIX) :]
        endpoints = self.state.endpoints
        if not endpoint or "/" in endpoint or (endpoints is not None and endpoint not in endpoints):
            return _errors.API_NAME_NOT_EXIST
        return None if parsed else _errors.INVALID_JSON

    async def chat(self, request: Request, send: Send) -> None:
        """The chat endpoint: faults, auth, endpoint name, body rules, then the answer."""
        state = self.state
        try:
            body: Any = loads(request.raw_body)
            parsed = True
        except (ValueError, RecursionError):
            body, parsed = request.raw_body, False
        state.record(request.record("chat", body), request.client)
        fault = state.take_fault(Target.CHAT, (Phase.ARRIVAL,))
        if fault is not None and await self._arrival_fault(fault, request, send):
            return
        code = self._refusal(request, parsed)
        if code is not None:
            await self.error(send, code)
            return
        violation = _rules.validate(body)
        if violation is not None:
            await self.error(send, violation.code, violation.message)
            return
        await self._answer(body, request, send)

    def accept(
        self, messages: list[dict[str, Any]], stream: bool
    ) -> tuple[Answer | int, Sequence[tuple[bytes, bytes]]]:
        """A valid call's answer, or the v1 code of the quota that refuses it; and its headers.

        The headers are the ``X-Ratelimit-*`` ones to send. Both interfaces answer through here.
        """
        state = self.state
        question = messages[-1]["content"]
        prompt_tokens = _replies.count_tokens(m["content"] for m in messages)
        rate_headers: Sequence[tuple[bytes, bytes]] = ()
        if state.rate_limited:
            # A call counts against the quotas only once it is valid; a refused one keeps
            # any queued fault (and scripted reply) for the next call.
            code, rate_headers = state.admit(prompt_tokens + derived_reply(question)[1])
            if code is not None:
                return code, rate_headers
        phases = (Phase.ANSWER, Phase.STREAM) if stream else (Phase.ANSWER,)
        fault = state.take_fault(Target.CHAT, phases)
        if stream:
            state.count("stream_requests")
        return Answer(question, prompt_tokens, fault, state.take_reply()), rate_headers

    async def _answer(self, body: dict[str, Any], request: Request, send: Send) -> None:
        stream = body.get("stream", False)
        answer, rate_headers = self.accept(body["messages"], stream)
        if isinstance(answer, int):
            await self.error(send, answer, headers=rate_headers)
        elif stream:
            await send_stream(send, request.receive, answer, self.state.config, rate_headers)
        else:
            await send_whole(send, answer, rate_headers)

    # -- token -----------------------------------------------------------------------

    async def token(self, request: Request, send: Send) -> None:
        """The OAuth token endpoint (client credentials)."""
        state = self.state
        try:
            body: Any = loads(request.raw_body) if request.raw_body else None
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
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            # Some clients send the parameters as a form instead of the query.
            params.update(parse_query(request.raw_body))
        refusal = self._client_refusal(params)
        if refusal is not None:
            await self._token_error(send, *refusal)
            return
        reply = {
            "refresh_token": "25." + uuid.uuid4().hex,
            "expires_in": math.ceil(state.token_ttl),
            "session_key": uuid.uuid4().hex,
            "access_token": state.issue_token(),
            "scope": _SCOPE,
            "session_secret": uuid.uuid4().hex,
        }
        await respond(send, 200, dumps(reply))

    def _client_refusal(self, params: dict[str, str]) -> tuple[int, str, str] | None:
        """Why the token endpoint refuses these parameters (status, error, text), if it does."""
        if params.get("grant_type") != "client_credentials":
            return 400, "unsupported_grant_type", "The authorization grant type is not supported"
        secret = self.state.api_keys.get(params.get("client_id", ""))
        if secret is None:
            return 401, "invalid_client", "unknown client id"
        if not hmac.compare_digest(secret.encode(), params.get("client_secret", "").encode()):
            return 401, "invalid_client", "Client authentication failed"
        return None

    # -- console (qianfan SDK with IAM keys) -----------------------------------------

    async def service_list(self, request: Request, send: Send) -> None:
        """The console's service list, which the qianfan SDK reads with IAM keys."""
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
            await respond(send, 403, dumps(denied))
            return
        base = "http://" + request.headers.get("host", "127.0.0.1")
        names = sorted(self.state.endpoints or (DEFAULT_ENDPOINT,))
        services = [
            {
                "name": "MPT-30B-instruct" if name == DEFAULT_ENDPOINT else name,
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
        await respond(send, 200, dumps(reply))
