"""What differs between the service's two interfaces: the request body, the reply, the chunks.

The v1 interface (``/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/<endpoint>``, switched off by
Baidu on 2026-08-31) and the v2 interface (``/v2/chat/completions``, OpenAI-shaped) carry the
same conversation. The request loop (``_request_loop``) is the same for both; only what this
module holds differs: the body (``encode_v1``, ``encode_v2``), and per transport a dialect
object (:class:`V1`, :class:`V2`) that builds the request (its URL, headers and where the
token goes) and reads the answer and the chunks. Both dialects' replies come back as the same
typed models: a v2 answer is read into a :class:`~mpt_async.ChatResponse`, its stream into
:class:`~mpt_async.ChatChunk` objects numbered from 0, the last one with ``is_end``.

v2: https://cloud.baidu.com/doc/qianfan-api/s/3m7of64lb (chat),
https://cloud.baidu.com/doc/qianfan-api/s/Om9b4yj3w (errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
import httpx

from mpt_async import _converter
from mpt_async._body import ACCEPT_ENCODING, plain_content
from mpt_async._codes import Action
from mpt_async._exceptions import MalformedResponseError, RequestValidationError, StreamError
from mpt_async._logging import logger
from mpt_async._models import ChatChunk, ChatRequest, Usage
from mpt_async._reply import whole_answer
from mpt_async._sse import EventReader
from mpt_async._stream import ChunkDecoder, where
from mpt_async._verdict import AttemptFailed, is_error_body

if TYPE_CHECKING:
    from mpt_async._body import Body
    from mpt_async._models import ChatResponse
    from mpt_async._ratelimit import RateLimitInfo
    from mpt_async._stream import Deadline

__all__ = [
    "API",
    "APIS",
    "OWN_FIELDS",
    "V1",
    "V1_CHAT_PATH",
    "V2",
    "V2_CHAT_PATH",
    "V2ChunkDecoder",
    "Dialect",
    "dialect_for",
    "encode_v1",
    "encode_v2",
    "v2_answer",
]

#: The service's two interfaces.
API = Literal["v1", "v2"]
APIS: tuple[API, ...] = ("v1", "v2")
V1_CHAT_PATH = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
V2_CHAT_PATH = "/v2/chat/completions"
_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
#: v1 chat URLs kept parsed per transport (endpoint x token).
_URL_CACHE = 8
_NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
#: The options only the v2 interface takes: refused on v1 before any I/O.
_V2_ONLY = ("system", "seed", "max_completion_tokens", "frequency_penalty", "presence_penalty")
#: The options v2 sends under their own names, as they are.
_V2_SAME_NAME = (
    "temperature",
    "top_p",
    "penalty_score",
    "metadata",
    "seed",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
)
#: The body fields each interface's encoder writes itself; ``extra_body`` may not set them
#: (a ``stream`` or ``model`` of its own would contradict the call).
OWN_FIELDS: Mapping[API, frozenset[str]] = {
    # Every field of a request but those v1 refuses (v2 sends ``system`` as a message).
    "v1": frozenset(field.name for field in attrs.fields(ChatRequest)).difference(_V2_ONLY),
    "v2": frozenset(
        {"model", "messages", "stream", "stream_options", "stop", "user", *_V2_SAME_NAME}
    ),
}
#: The usage of a chunk before the last (v2 reports it once, at the end).
_ZERO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)


def _with_extra(data: dict[str, Any], extra: Mapping[str, Any] | None) -> bytes:
    if extra:
        data.update(extra)
    # A copy of exactly its size (see ``encode_request``).
    return bytes(memoryview(_converter.dumps(data)))


def encode_v1(request: ChatRequest, extra: Mapping[str, Any] | None = None) -> bytes:
    """The v1 body of ``request`` (the endpoint is in the URL), with ``extra`` fields added.

    Raises:
        RequestValidationError: For an option the v1 interface does not take (``system``,
            ``seed``, ``max_completion_tokens``, ``frequency_penalty``, ``presence_penalty``).
    """
    for name in _V2_ONLY:
        if getattr(request, name) is not None:
            msg = "is not part of this service's v1 interface (use api='v2', or leave it out)"
            raise RequestValidationError(name, msg)
    if not extra:
        return _converter.encode_request(request)
    return _with_extra(_converter.CONVERTER.unstructure(request), extra)


def encode_v2(request: ChatRequest, model: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """The v2 body of ``request`` for the service named ``model``, with ``extra`` fields added.

    ``system`` is sent as a leading ``system`` message, v1's ``user_id`` as ``user``. A
    stream asks for the usage on its last chunk.

    Raises:
        RequestValidationError: For ``top_k``, which the v2 interface does not take.
    """
    if request.top_k is not None:
        msg = "is not part of the v2 interface (leave it out, or use api='v1')"
        raise RequestValidationError("top_k", msg)
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.system is not None:
        messages.insert(0, {"role": "system", "content": request.system})
    data: dict[str, Any] = {"model": model, "messages": messages}
    if request.stream:
        data["stream"] = True
        data["stream_options"] = {"include_usage": True}
    for name in _V2_SAME_NAME:
        value = getattr(request, name)
        if value is not None:
            data[name] = value
    if request.stop is not None:
        data["stop"] = list(request.stop)
    if request.user_id is not None:
        data["user"] = request.user_id
    return _with_extra(data, extra)


def _choice(data: Any) -> dict[str, Any] | None:
    """The first choice of a v2 reply or chunk, if it has one."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _flagged(choice: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """Carry v2's safety ``flag`` (non-zero: the history must be cleared) and ``ban_round``."""
    flag = choice.get("flag")
    if flag:
        into["need_clear_history"] = True
        into["ban_round"] = choice.get("ban_round")
    return into


def v2_answer(data: Any, rate_limit: RateLimitInfo | None) -> ChatResponse:
    """A whole v2 answer, read into the same :class:`ChatResponse` as v1's.

    ``result`` is the message's content; ``is_truncated`` is ``finish_reason == "length"``.

    Raises:
        AttemptFailed: If the body is not a well-formed v2 answer.
    """
    choice = _choice(data)
    message = choice.get("message") if choice is not None else None
    if choice is None or not isinstance(message, dict):
        error = MalformedResponseError("the answer has no choices[0].message", status_code=200)
        raise AttemptFailed(error, Action.RAISE)
    content = message.get("content")
    reply = {
        "id": data.get("id"),
        "object": data.get("object"),
        "created": data.get("created"),
        "result": "" if content is None else content,
        "is_truncated": choice.get("finish_reason") == "length",
        "usage": data.get("usage"),
    }
    return whole_answer(_flagged(choice, reply), rate_limit)


class V2ChunkDecoder(ChunkDecoder):
    """Reads a v2 stream into v1-shaped chunks, numbered from 0.

    The chunk with a ``finish_reason`` is held back until the usage chunk (asked for with
    ``include_usage``) or ``[DONE]`` arrives, then handed over with ``is_end`` and the usage.
    A stream that ends with neither a ``finish_reason`` nor ``[DONE]`` is broken, never a
    short answer. A bare JSON line (an undocumented mid-stream error) is read as a payload.
    """

    __slots__ = ("_final",)

    def __init__(self, body: Body, *, idle: float, deadline: Deadline) -> None:
        super().__init__(body, idle=idle, deadline=deadline)
        self._final: dict[str, Any] | None = None

    @staticmethod
    def _events(body: Body) -> EventReader:
        return EventReader(body.chunks, bare_json=True)

    async def next_data(self) -> Any:
        """The next chunk, v1-shaped; an error body or a malformed one as it came."""
        while True:
            ready = self._reader.ready
            if not ready:
                await self._wait()
            payload = ready.popleft() if ready else None
            if payload is None or payload == b"[DONE]":
                return self._end(payload is None)
            try:
                data = _converter.loads(payload)
            except (ValueError, RecursionError):
                raise StreamError(
                    f"chunk {self.received} is not JSON: {payload[:80]!r}", received=self.received
                ) from None
            chunk = self._translate(data)
            if chunk is not None:
                return chunk

    def _end(self, eof: bool) -> dict[str, Any]:
        final, self._final = self._final, None
        if final is None:
            how = "without a finish_reason" if eof else "with [DONE] before any finish_reason"
            raise StreamError(
                f"the stream ended {where(self.received)}, {how}", received=self.received
            )
        return final

    def chunk(self, data: Any) -> ChatChunk:
        """The chunk for what :meth:`next_data` returned (built there already, mostly)."""
        if type(data) is ChatChunk:
            self.received += 1  # numbered as it was built, in order
            return data
        return super().chunk(data)

    def _sentence(self, data: dict[str, Any], choice: dict[str, Any]) -> ChatChunk | None:
        """A sentence in the middle as a chunk, if its fields have their types; else ``None``."""
        delta = choice.get("delta")
        content = delta.get("content") if type(delta) is dict else None
        id_, object_, created = data.get("id"), data.get("object"), data.get("created")
        if (
            choice.get("finish_reason") is not None
            or choice.get("flag")
            or type(content) is not str
            or type(id_) is not str
            or type(object_) is not str
            or not _converter.is_int64(created)
        ):
            return None
        return ChatChunk(
            id=id_,
            object=object_,
            created=created,
            sentence_id=self.received,
            is_end=False,
            result=content,
            usage=_ZERO_USAGE,
        )

    def _translate(self, data: Any) -> Any:
        """The chunk for ``data``; ``None`` to read on (the end is held back).

        A sentence in the middle (after chunk 0, which :meth:`first` checks as JSON) is built
        at once by :meth:`_sentence`, its fields checked as the converter checks them: going
        through a v1-shaped dict and the converter made a v2 stream cost 8% more client CPU
        than v1's (50 chunks, paired in one process); built at once, under 1%. Anything else
        (the first and the last chunk, a flagged one, an error body, a malformed one) goes
        the long way, as a v1-shaped dict that :meth:`chunk` structures or explains.
        """
        if type(data) is not dict or is_error_body(data):
            return data  # ``chunk()`` or ``first()`` says what it is
        usage = data.get("usage")
        choice = _choice(data)
        if self._final is None and self.received and choice is not None and usage is None:
            sentence = self._sentence(data, choice)
            if sentence is not None:
                return sentence
        if self._final is not None:
            if choice is None or choice.get("finish_reason") is not None:
                if isinstance(usage, dict):
                    self._final["usage"] = usage
                return None
            raise StreamError(
                f"a chunk came after the finish_reason {where(self.received)}",
                received=self.received,
            )
        if choice is None:
            if isinstance(data.get("choices"), list) and not data["choices"]:
                return None  # a usage chunk before the end: the end one carries it too
            return data  # malformed: ``chunk()`` says so
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        finish = choice.get("finish_reason")
        chunk = _flagged(
            choice,
            {
                "id": data.get("id"),
                "object": data.get("object"),
                "created": data.get("created"),
                "sentence_id": self.received,
                "is_end": finish is not None,
                "result": "" if content is None else content,
                "is_truncated": finish == "length",
                "usage": usage if isinstance(usage, dict) else _NO_USAGE,
            },
        )
        if finish is None:
            return chunk
        self._final = chunk
        return None


class V1:
    """The v1 interface: the service's name in the URL, the access token in its query.

    Args:
        base_url: The service's scheme, host and optional path prefix (no trailing slash).
        appid: Sent as the ``appid`` header, as on v2.
    """

    __slots__ = ("_base_url", "_build", "_urls")
    api: API = "v1"
    decoder = ChunkDecoder
    answer = staticmethod(whole_answer)

    def __init__(
        self, base_url: str, appid: str | None = None, own: httpx.AsyncClient | None = None
    ) -> None:
        self._base_url = base_url
        self._urls: dict[tuple[str, str | None], httpx.URL] = {}
        self._build = _Builder(_headers(appid), own)

    @staticmethod
    def encode(request: ChatRequest, endpoint: str, extra: Mapping[str, Any] | None) -> bytes:
        """The body of ``request`` (``endpoint`` goes in the URL)."""
        return encode_v1(request, extra)

    def request(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        body: bytes,
        token: str | None,
        timeout: httpx.Timeout,
        stream: bool,
    ) -> httpx.Request:
        """The chat request (a ``None`` token: the credentials sign it)."""
        logger.debug("POST %s%s (stream=%s)", V1_CHAT_PATH, endpoint, stream)
        return self._build(http, self._url(endpoint, token), body, timeout)

    def _url(self, endpoint: str, token: str | None) -> httpx.URL:
        """The chat URL (the token in its query), parsed once: httpx's parsing is costly."""
        key = (endpoint, token)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()  # tokens get replaced: keep only recent ones
            params = None if token is None else {"access_token": token}
            url = httpx.URL(self._base_url + V1_CHAT_PATH + endpoint, params=params)
            self._urls[key] = url
        return url


class V2:
    """The v2 interface: the service's name in the body, the token in a Bearer header.

    Args:
        base_url: The service's scheme, host and optional path prefix (no trailing slash).
        appid: The application to bill (the ``appid`` header), if not the key's default.
    """

    __slots__ = ("_build", "_url")
    api: API = "v2"
    decoder = V2ChunkDecoder
    answer = staticmethod(v2_answer)

    def __init__(
        self, base_url: str, appid: str | None = None, own: httpx.AsyncClient | None = None
    ) -> None:
        self._url = httpx.URL(base_url + V2_CHAT_PATH)
        self._build = _Builder(_headers(appid), own)

    @staticmethod
    def encode(request: ChatRequest, endpoint: str, extra: Mapping[str, Any] | None) -> bytes:
        """The body of ``request``, ``endpoint`` as its ``model``."""
        return encode_v2(request, endpoint, extra)

    def request(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        body: bytes,
        token: str | None,
        timeout: httpx.Timeout,
        stream: bool,
    ) -> httpx.Request:
        """The chat request (``endpoint`` is in ``body`` already, as ``model``)."""
        logger.debug("POST %s (model=%s, stream=%s)", V2_CHAT_PATH, endpoint, stream)
        return self._build(http, self._url, body, timeout, {"Authorization": f"Bearer {token}"})


Dialect = V1 | V2


def dialect_for(
    api: API, base_url: str, appid: str | None = None, own: httpx.AsyncClient | None = None
) -> Dialect:
    """The dialect of ``api`` for a transport to ``base_url``.

    ``own``: the client's own httpx client, if it has one (its requests are built faster).
    """
    return V2(base_url, appid, own) if api == "v2" else V1(base_url, appid, own)


class _Builder:
    """Builds the chat POSTs (each with a body stream without a generator) with these headers.

    A request sent through the client's own httpx client is built at once, on that client's
    headers merged with these (merged once): that client keeps no default parameters and
    never changes its headers, and while it has no cookies to send either (else this falls
    back), ``build_request``'s merging of them all, which costs as much again as the request
    itself (18 against 9 µs), would come to the same. A caller's client goes through its own
    ``build_request`` (which a subclass may extend).

    Args:
        headers: The dialect's headers.
        own: The client's own httpx client, if it has one.
    """

    __slots__ = ("_headers", "_merged", "_own")

    def __init__(self, headers: dict[str, str], own: httpx.AsyncClient | None) -> None:
        self._headers = headers
        self._own = own
        self._merged: httpx.Headers | None = None

    def __call__(
        self,
        http: httpx.AsyncClient,
        url: httpx.URL,
        body: bytes,
        timeout: httpx.Timeout,
        extra: dict[str, str] | None = None,
    ) -> httpx.Request:
        """The request, with ``extra`` headers (a v2 token) after the dialect's."""
        if http is not self._own or http.cookies or http.params:
            headers = self._headers if extra is None else {**self._headers, **extra}
            built = http.build_request("POST", url, content=body, headers=headers, timeout=timeout)
            return plain_content(built)
        merged = self._merged
        if merged is None:
            merged = self._merged = httpx.Headers(http.headers)
            merged.update(self._headers)
        if extra is not None:
            merged = merged.copy()
            merged.update(extra)
        timeouts = {"timeout": timeout.as_dict()}
        request = httpx.Request("POST", url, content=body, headers=merged, extensions=timeouts)
        return plain_content(request)


def _headers(appid: str | None) -> dict[str, str]:
    return _HEADERS if appid is None else {**_HEADERS, "appid": appid}
