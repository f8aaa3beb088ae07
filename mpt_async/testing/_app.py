"""The emulator's ASGI application: routes a request to Baidu's endpoints or the controls."""

from __future__ import annotations

from mpt_async.testing import _errors
from mpt_async.testing._asgi import Receive, Request, Scope, Send, read_body
from mpt_async.testing._control import CONTROL_PREFIX, control
from mpt_async.testing._service import CHAT_PREFIX, SERVICE_LIST_PATH, TOKEN_PATH, Service
from mpt_async.testing._state import EmulatorState
from mpt_async.testing._v2 import CHAT_PATH as V2_CHAT_PATH
from mpt_async.testing._v2 import IAM_TOKEN_PATH, V2Service

__all__ = ["CHAT_PREFIX", "CONTROL_PREFIX", "SERVICE_LIST_PATH", "TOKEN_PATH", "EmulatorApp"]


class EmulatorApp:
    """The ASGI application serving one :class:`EmulatorState`.

    Args:
        state: The shared state (tokens, faults, replies, counters, settings).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._service = Service(state)
        self._v2 = V2Service(self._service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request (other scope types are ignored).

        Args:
            scope: The ASGI connection scope.
            receive: The ASGI receive channel.
            send: The ASGI send channel.
        """
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body is None:  # a half-sent request: nobody is waiting for an answer
            return
        request = Request(scope, body, receive)
        path = request.path
        service = self._service
        if path.startswith(CHAT_PREFIX):
            await service.chat(request, send)
        elif path == V2_CHAT_PATH:
            await self._v2.chat(request, send)
        elif path == TOKEN_PATH:
            await service.token(request, send)
        elif path == IAM_TOKEN_PATH:
            await self._v2.iam_token(request, send)
        elif path.startswith(CONTROL_PREFIX):
            await control(self.state, request, send)
        elif path == SERVICE_LIST_PATH:
            await service.service_list(request, send)
        else:
            self.state.record(request.record("other", None), request.client)
            await service.error(send, _errors.UNSUPPORTED_METHOD)
