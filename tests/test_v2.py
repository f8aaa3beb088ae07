"""The v2 interface: the same client, the same models, over the emulator and hostile servers."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import anyio
import httpx
import pytest

import mpt_async
from mpt_async._codes import CODE_TABLE, Action
from mpt_async.testing import Emulator, Fault

from .clientkit import FAST, HI, chat_requests
from .hostile import Wire, hostile, http_head, json_reply

pytestmark = pytest.mark.anyio


def key_client(emu: Emulator, **kwargs: Any) -> mpt_async.Client:
    """A v2 client with the emulator's permanent API key."""
    kwargs.setdefault("backoff", FAST)
    return mpt_async.Client(
        auth=mpt_async.APIKeyAuth(emu.v2_api_key), base_url=emu.base_url, **kwargs
    )


def iam_client(emu: Emulator, **kwargs: Any) -> mpt_async.Client:
    """A v2 client whose IAM AK/SK are traded for bearer tokens."""
    kwargs.setdefault("backoff", FAST)
    auth = mpt_async.AKSKAuth(emu.access_key, emu.secret_access_key)
    return mpt_async.Client(auth=auth, base_url=emu.base_url, **kwargs)


def v2_requests(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.path == "/v2/chat/completions"]


async def test_api_key_chat_speaks_v2(emulator: Emulator) -> None:
    """An API key means v2: model in the body, Bearer header, v1's user_id sent as user."""
    async with key_client(emulator, appid="app-42") as client:
        assert client.api == "v2"
        reply = await client.chat(HI, user_id="u-1", temperature=0.5)
    assert isinstance(reply, mpt_async.ChatResponse)
    assert reply.result
    assert reply.usage.total_tokens > 0
    assert not reply.is_truncated
    (request,) = v2_requests(emulator)
    assert request.headers["authorization"] == f"Bearer {emulator.v2_api_key}"
    assert request.headers["appid"] == "app-42"
    assert request.body == {
        "model": "mpt-30b-instruct",
        "messages": HI,
        "temperature": 0.5,
        "user": "u-1",
    }
    assert not chat_requests(emulator)[0].path.startswith("/rpc/")


async def test_api_key_stream_numbers_chunks_and_ends(emulator: Emulator) -> None:
    """A v2 stream comes as chunks 0, 1, 2, ..., the last with is_end and the whole usage."""
    emulator.add_reply(["one ", "two ", "three"])
    async with key_client(emulator) as client, client.chat_stream(HI) as stream:
        chunks = [chunk async for chunk in stream]
    assert [c.sentence_id for c in chunks] == [0, 1, 2]
    assert [c.is_end for c in chunks] == [False, False, True]
    assert stream.text == "one two three"
    assert chunks[-1].usage.completion_tokens > 0
    (request,) = v2_requests(emulator)
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


async def test_iam_bearer_token_is_fetched_once_for_concurrent_calls(emulator: Emulator) -> None:
    """IAM AK/SK fetch one signed bearer token, shared by ten concurrent calls."""
    async with iam_client(emulator) as client:
        assert client.api == "v2"
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(client.chat, HI)
    iam = [r for r in emulator.requests if r.path == "/v1/BCE-BEARER/token"]
    assert len(iam) == 1
    assert iam[0].headers["authorization"].startswith(f"bce-auth-v1/{emulator.access_key}/")
    assert iam[0].query["expireInSeconds"] == "1800"
    bearers = {r.headers["authorization"] for r in v2_requests(emulator)}
    assert len(bearers) == 1
    assert len(v2_requests(emulator)) == 10


async def test_refused_bearer_token_is_refreshed_once(emulator: Emulator) -> None:
    """An expired bearer token (401 invalid_iam_token) is replaced once and the call replayed."""
    async with iam_client(emulator, max_retries=0) as client:
        await client.chat(HI)
        emulator.expire_tokens()
        reply = await client.chat(HI)
    assert reply.result
    iam = [r for r in emulator.requests if r.path == "/v1/BCE-BEARER/token"]
    assert len(iam) == 2
    assert len(v2_requests(emulator)) == 3


async def test_wrong_api_key_raises_at_once_without_the_key(emulator: Emulator) -> None:
    """A refused permanent key cannot be refreshed: AuthenticationError, one request, no key."""
    wrong = "bce-v3/ALTAK-wrong/" + "f" * 40
    async with mpt_async.Client(auth=mpt_async.APIKeyAuth(wrong), base_url=emulator.base_url) as c:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await c.chat(HI)
    assert info.value.error_code == "invalid_iam_token"
    assert info.value.status_code == 401
    assert "f" * 40 not in str(info.value)
    assert "f" * 40 not in repr(info.value)
    assert len(v2_requests(emulator)) == 1
    assert emulator.stats.token_requests == 0  # a permanent key is sent to the service only


async def test_unknown_service_name_says_so() -> None:
    """401 invalid_model is a NotFoundError that names the service's v2 API name."""
    with Emulator(endpoints=["my-service"]) as emu:
        async with key_client(emu, endpoint="typo-service") as client:
            with pytest.raises(mpt_async.NotFoundError) as info:
                await client.chat(HI)
    assert info.value.error_code == "invalid_model"
    assert "v2 API name" in str(info.value)


async def test_quota_refusal_is_retried_then_answered(emulator: Emulator) -> None:
    """429 user_rate_limit_exceeded is retried like v1's code 18; the call is answered."""
    emulator.inject(Fault.error(18))
    async with key_client(emulator) as client:
        reply = await client.chat(HI)
    assert reply.result
    assert len(v2_requests(emulator)) == 2


def _refusing(status: str, code: str, message: str) -> Any:
    def script(wire: Wire) -> None:
        body = {"error": {"code": code, "message": message, "type": "x"}, "id": "as-1"}
        wire.send(json_reply(body, status))

    return script


@pytest.mark.parametrize(
    ("status", "code", "error", "words"),
    [
        ("403 Forbidden", "account_overdue", mpt_async.PermissionDeniedError, "arrears"),
        ("403 Forbidden", "model_offline", mpt_async.PermissionDeniedError, "offline"),
        ("400 Bad Request", "tokens_too_long", mpt_async.InvalidRequestError, "too long"),
        ("401 Unauthorized", "invalid_appid", mpt_async.AuthenticationError, "appid"),
    ],
)
async def test_final_v2_refusals_raise_at_once(
    status: str, code: str, error: type[Exception], words: str
) -> None:
    """v2's final refusals raise their own class at once, in words a user can act on."""
    with hostile(_refusing(status, code, "Access denied")) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/secretpart")
        async with mpt_async.Client(auth=auth, base_url=server.url, backoff=FAST) as client:
            with pytest.raises(error) as info:
                await client.chat(HI)
    assert info.value.error_code == code  # type: ignore[attr-defined]
    assert words in str(info.value)
    assert "secretpart" not in str(info.value)
    assert len(server.requests) == 1


async def test_error_object_with_status_200_is_an_error() -> None:
    """A gateway's HTTP 200 with a v2 error object raises, never reads as an answer."""
    with hostile(_refusing("200 OK", "internal_error", "boom")) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        client = mpt_async.Client(auth=auth, base_url=server.url, backoff=FAST, max_retries=1)
        async with client:
            with pytest.raises(mpt_async.InternalServerError):
                await client.chat(HI)
    assert len(server.requests) == 2  # internal_error is retried


def _stream(*events: bytes) -> Any:
    def script(wire: Wire) -> None:
        wire.send(http_head(content_type="text/event-stream", connection="close"))
        for event in events:
            wire.send(event)

    return script


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _delta(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return _data(
        {"id": "as-1", "object": "chat.completion.chunk", "created": 1, "choices": [choice]}
    )


USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("events", "error", "received"),
    [
        ((_delta("a"), _delta("b")), mpt_async.StreamError, 2),  # no finish_reason, no [DONE]
        ((_delta("a"), b"data: [DONE]\n\n"), mpt_async.StreamError, 1),  # [DONE] too early
        (
            (_delta("a"), b'{"error": {"code": "internal_error", "message": "x"}}\n'),
            mpt_async.InternalServerError,
            1,
        ),  # a bare JSON error line
        (
            (_delta("a"), _data({"error": {"code": "tpm_rate_limit_exceeded", "message": "x"}})),
            mpt_async.RateLimitError,
            1,
        ),
        ((_delta("a"), _data({"id": 1, "choices": "no"})), mpt_async.StreamError, 1),
    ],
)
async def test_broken_v2_streams_raise(
    events: tuple[bytes, ...], error: type[Exception], received: int
) -> None:
    """A v2 stream that breaks its protocol raises a typed error, never a short answer."""
    with hostile(_stream(*events)) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        async with mpt_async.Client(auth=auth, base_url=server.url, backoff=FAST) as client:
            stream = client.chat_stream(HI)
            got: list[str] = []
            with pytest.raises(error):
                async with stream:
                    async for chunk in stream:
                        got.append(chunk.result)
    assert len(got) == received


def _bad_delta(**fields: Any) -> bytes:
    choice = {"index": 0, "delta": {"content": "b"}, "finish_reason": None}
    chunk = {"id": "as-1", "object": "chat.completion.chunk", "created": 1, "choices": [choice]}
    return _data({**chunk, **fields})


@pytest.mark.parametrize(
    "middle",
    [
        _bad_delta(id=7),
        _bad_delta(object=None),
        _bad_delta(created="1"),
        _bad_delta(created=True),
        _bad_delta(created=2**70),
        _bad_delta(choices=[{"index": 0, "delta": {"content": 5}, "finish_reason": None}]),
    ],
)
async def test_v2_sentence_in_the_middle_is_checked_like_any_chunk(middle: bytes) -> None:
    """A sentence after the first with a field of the wrong type is a StreamError, not a chunk."""
    events = (_delta("a"), middle, _delta("c", "stop"), b"data: [DONE]\n\n")
    with hostile(_stream(*events)) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        async with mpt_async.Client(auth=auth, base_url=server.url) as client:
            got: list[str] = []
            with pytest.raises(mpt_async.StreamError, match="chunk 1 is malformed"):
                async with client.chat_stream(HI) as stream:
                    async for chunk in stream:
                        got.append(chunk.result)
    assert got == ["a"]


async def test_v2_stream_chunks_in_the_middle_are_numbered_and_typed() -> None:
    """Every sentence comes as a ChatChunk numbered in order, zero usage until the last."""
    events = (*(_delta(t) for t in "abcd"), _delta("e", "stop"), b"data: [DONE]\n\n")
    with hostile(_stream(*events)) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        async with mpt_async.Client(auth=auth, base_url=server.url) as client:
            async with client.chat_stream(HI) as stream:
                chunks = [chunk async for chunk in stream]
    assert [(c.sentence_id, c.result, c.is_end) for c in chunks] == [
        (0, "a", False),
        (1, "b", False),
        (2, "c", False),
        (3, "d", False),
        (4, "e", True),
    ]
    assert all(type(c) is mpt_async.ChatChunk for c in chunks)
    assert {c.usage for c in chunks[:-1]} == {mpt_async.Usage(0, 0, 0)}
    assert {(c.id, c.object, c.created) for c in chunks} == {("as-1", "chat.completion.chunk", 1)}


async def test_v2_stream_ends_on_finish_reason_with_usage_chunk() -> None:
    """The finish_reason chunk is handed over with the usage chunk that follows it."""
    usage_chunk = _data({"id": "as-1", "object": "x", "created": 1, "choices": [], "usage": USAGE})
    events = (_delta("a"), _delta("b", "length"), usage_chunk, b": keep-alive\n\ndata: [DONE]\n\n")
    with hostile(_stream(*events)) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        async with mpt_async.Client(auth=auth, base_url=server.url) as client:
            async with client.chat_stream(HI) as stream:
                final = await stream.get_final_response()
    assert final.result == "ab"
    assert final.is_truncated
    assert final.usage == mpt_async.Usage(3, 4, 7)


@pytest.mark.parametrize("fault", [Fault.no_end(), Fault.drop_after(1)])
async def test_emulator_stream_faults_on_v2(emulator: Emulator, fault: Fault) -> None:
    """The emulator's stream faults apply on v2 too, and the client reports them."""
    emulator.inject(fault)
    async with key_client(emulator) as client:
        with pytest.raises((mpt_async.StreamError, mpt_async.APIConnectionError)):
            async with client.chat_stream(HI) as stream:
                async for _ in stream:
                    pass


async def test_top_k_is_refused_on_v2_before_any_io(
    offline_http: httpx.AsyncClient, sent: list[httpx.Request]
) -> None:
    """top_k has no v2 counterpart: a RequestValidationError, and nothing is sent."""
    auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
    client = mpt_async.Client(auth=auth, base_url="http://test", http_client=offline_http)
    with pytest.raises(mpt_async.RequestValidationError, match="top_k"):
        await client.chat(HI, top_k=3)
    assert sent == []


async def test_extra_body_is_added_on_both_interfaces(emulator: Emulator) -> None:
    """extra_body's fields go into the body as they are, on v1 and v2 alike."""
    extra = {"web_search": {"enable": False}}
    async with key_client(emulator, extra_body=extra) as client:
        await client.chat(HI)
        await client.with_options(extra_body={"parallel_tool_calls": False}).chat(HI)
    first, second = v2_requests(emulator)
    assert first.body["web_search"] == {"enable": False}
    assert second.body["parallel_tool_calls"] is False
    assert "web_search" not in second.body
    token = emulator.issue_token()
    extra = {"extra_parameters": {"request_source": "x"}}
    async with mpt_async.Client(auth=token, base_url=emulator.base_url, extra_body=extra) as v1:
        await v1.chat(HI)
    assert emulator.requests[-1].body["extra_parameters"] == {"request_source": "x"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"auth": mpt_async.APIKeyAuth("bce-v3/x/y")}, "stream"),
        ({"auth": mpt_async.APIKeyAuth("bce-v3/x/y")}, "model"),
        ({"auth": mpt_async.APIKeyAuth("bce-v3/x/y")}, "user"),
        ({"auth": "token"}, "stream"),
        ({"auth": "token"}, "user_id"),
        ({"auth": "token"}, "temperature"),
    ],
)
def test_extra_body_may_not_set_what_the_client_writes(kwargs: dict[str, Any], field: str) -> None:
    """A field the client writes itself is refused in extra_body, at once and on copies."""
    with pytest.raises(mpt_async.ConfigurationError, match=f"may not set '{field}'"):
        mpt_async.Client(base_url="http://test", extra_body={field: 1}, **kwargs)
    client = mpt_async.Client(base_url="http://test", **kwargs)
    with pytest.raises(mpt_async.ConfigurationError, match=f"may not set '{field}'"):
        client.with_options(extra_body={"parallel_tool_calls": False, field: 1})


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("stream", [False, True])
def test_own_fields_are_every_field_the_encoders_write(api: Any, stream: bool) -> None:
    """The fields extra_body may not set are exactly those a fully set request is sent with."""
    from mpt_async._dialect import OWN_FIELDS, encode_v1, encode_v2
    from mpt_async._models import ChatRequest

    options: dict[str, Any] = {
        "temperature": 0.5,
        "top_p": 0.5,
        "penalty_score": 1.5,
        "stop": ["x"],
        "user_id": "u",
        "metadata": {"k": "v"},
    }
    if api == "v1":
        options["top_k"] = 3
    else:
        options.update(
            system="Be brief.",
            seed=7,
            max_completion_tokens=100,
            frequency_penalty=0.5,
            presence_penalty=-0.5,
        )
    request = ChatRequest(messages=HI, stream=stream, **options)
    body = encode_v1(request) if api == "v1" else encode_v2(request, "svc")
    written = set(json.loads(body))
    assert written <= OWN_FIELDS[api]
    if stream:
        assert written == OWN_FIELDS[api]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_requests_on_the_own_client_are_built_as_httpx_builds_them(api: Any) -> None:
    """Built at once on the client's own httpx client, a request is what build_request makes."""
    from mpt_async._dialect import dialect_for

    own = httpx.AsyncClient()
    fast, plain = (dialect_for(api, "http://test", "app-1", client) for client in (own, None))
    timeout = httpx.Timeout(5, read=7)

    def request(dialect: Any, token: str) -> tuple[Any, ...]:
        built = dialect.request(own, "svc", b'{"a":1}', token, timeout, False)
        return built.method, built.url, built.headers.multi_items(), built.extensions

    for token in ("token-1", "token-2", "token-1"):
        assert request(fast, token) == request(plain, token)
    own.cookies.set("session", "s1")  # cookies to send: built by build_request, with them
    assert request(fast, "token-1") == request(plain, "token-1")
    assert ("cookie", "session=s1") in request(fast, "token-1")[2]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"auth": "bce-v3/ALTAK-abc/def"}, "APIKeyAuth"),
        ({"auth": mpt_async.AccessTokenAuth("a", "b"), "api": "v2"}, "v2 API key"),
        ({"auth": mpt_async.APIKeyAuth("bce-v3/x/y"), "api": "v1"}, "api='v2'"),
        ({"auth": "token", "api": "v3"}, "'v1' or 'v2'"),
        ({"auth": "token", "appid": "app 1"}, "appid"),
        ({"auth": "token", "extra_body": {"x": object()}}, "JSON"),
        ({"auth": "token", "extra_body": {1: 2}}, "string keys"),
    ],
)
def test_wrong_setup_is_a_configuration_error(kwargs: dict[str, Any], field: str) -> None:
    """A v2 key passed as a token, credentials the interface does not take: a clear error."""
    with pytest.raises(mpt_async.ConfigurationError, match=field) as info:
        mpt_async.Client(base_url="http://test", **kwargs)
    assert "def" not in str(info.value)


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QIANFAN_API_KEY gives a v2 client on Baidu's v2 host; its key stays out of repr."""
    for name in mpt_async._auth.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QIANFAN_API_KEY", "bce-v3/ALTAK-env/s3cret")
    client = mpt_async.Client()
    assert client.api == "v2"
    assert client.base_url == "https://qianfan.baidubce.com"
    assert "s3cret" not in repr(client)


async def test_bearer_token_is_shared_through_a_token_store(emulator: Emulator) -> None:
    """Two clients on one token store use one IAM bearer token."""
    store = mpt_async.MemoryTokenStore()
    async with iam_client(emulator, token_store=store) as one:
        await one.chat(HI)
    async with iam_client(emulator, token_store=store) as two:
        await two.chat(HI)
    iam = [r for r in emulator.requests if r.path == "/v1/BCE-BEARER/token"]
    assert len(iam) == 1


async def test_emulator_keeps_v1_tokens_and_iam_bearer_tokens_apart(emulator: Emulator) -> None:
    """The emulator's IAM issues bce-v3 tokens, refused on v1; v1 access tokens, refused on v2."""
    async with iam_client(emulator) as client:
        await client.chat(HI)
        assert client._request_loop.tokens is not None
        bearer = await client._request_loop.tokens.get(_no_fetch)
    assert bearer.startswith("bce-v3/ALTAK-")
    v1_token = emulator.issue_token()
    body = {"model": "mpt-30b-instruct", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        v2 = await http.post(
            "/v2/chat/completions", json=body, headers={"Authorization": f"Bearer {v1_token}"}
        )
        v1 = await http.post(
            emulator.chat_url(),
            params={"access_token": bearer},
            json={"messages": body["messages"]},
        )
    assert (v2.status_code, v2.json()["error"]["code"]) == (401, "invalid_iam_token")
    assert v1.json()["error_code"] == 110


async def test_a_bearer_token_from_elsewhere_works_on_v2(emulator: Emulator) -> None:
    """An IAM bearer token obtained elsewhere (FixedTokenAuth) is sent as is on v2."""
    token = emulator.issue_token(bearer=True)
    auth = mpt_async.FixedTokenAuth(token)
    async with mpt_async.Client(auth=auth, base_url=emulator.base_url, api="v2") as client:
        answer = await client.chat(HI)
    assert answer.result
    assert v2_requests(emulator)[-1].headers["authorization"] == f"Bearer {token}"


async def _no_fetch() -> NoReturn:
    raise AssertionError("the token was cached")


async def test_the_openai_sdk_gets_answers_from_the_emulator(
    emulator: Emulator, anyio_backend: str
) -> None:
    """The official openai SDK, a client no one here wrote, chats and streams with usage."""
    if anyio_backend != "asyncio":
        pytest.skip("the openai SDK's async client runs on asyncio")
    openai = pytest.importorskip("openai")
    sdk = openai.AsyncOpenAI(
        base_url=emulator.base_url + "/v2", api_key=emulator.v2_api_key, max_retries=0
    )
    async with sdk:
        reply = await sdk.chat.completions.create(model="mpt-30b-instruct", messages=HI)
        assert reply.choices[0].message.content
        assert reply.usage is not None
        assert reply.usage.total_tokens > 0
        stream = await sdk.chat.completions.create(
            model="mpt-30b-instruct",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            pieces += [c.delta.content or "" for c in chunk.choices]
            usage = chunk.usage or usage
    assert "".join(pieces)
    assert usage is not None
    assert usage.completion_tokens > 0


V2_RETRIED = sorted(
    code
    for code, (action, _, _) in CODE_TABLE.items()
    if isinstance(code, str) and action is Action.RETRY
)


@pytest.mark.parametrize("code", V2_RETRIED)
async def test_retryable_v2_code_is_retried(code: str) -> None:
    """Each retryable v2 code (quotas with 429, server errors with 500) is tried again."""
    answer = {
        "id": "as-2",
        "object": "chat.completion",
        "created": 1,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }
    status = "429 Too Many Requests" if code.endswith("_exceeded") else "500 Internal Server Error"
    seen: list[int] = []

    def script(wire: Wire) -> None:
        seen.append(1)
        if len(seen) == 1:
            _refusing(status, code, "later")(wire)
        else:
            wire.send(json_reply(answer))

    with hostile(script) as server:
        auth = mpt_async.APIKeyAuth("bce-v3/ALTAK-x/y")
        async with mpt_async.Client(auth=auth, base_url=server.url, backoff=FAST) as client:
            reply = await client.chat(HI)
    assert reply.result == "ok"
    assert reply.usage.total_tokens == 7
    assert len(server.requests) == 2


async def test_system_prompt_leads_the_v2_messages(emulator: Emulator) -> None:
    """system= becomes a leading system message on v2, which the service accepts."""
    async with key_client(emulator) as client:
        reply = await client.chat(HI, system="Answer in one sentence.")
    assert reply.result
    (request,) = v2_requests(emulator)
    assert request.body["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        *HI,
    ]


async def test_system_prompt_is_refused_on_v1_before_any_io(
    offline_client: mpt_async.Client, sent: list[httpx.Request]
) -> None:
    """The v1 interface has no system prompt: a RequestValidationError, and nothing is sent."""
    with pytest.raises(mpt_async.RequestValidationError, match="system"):
        await offline_client.chat(HI, system="Be brief.")
    with pytest.raises(mpt_async.RequestValidationError, match="system"):
        await offline_client.chat(HI, system="")
    assert sent == []


V2_ONLY = {"seed": 7, "max_completion_tokens": 64, "frequency_penalty": 0.5, "presence_penalty": -1}


async def test_v2_only_options_are_sent_on_v2(emulator: Emulator) -> None:
    """seed, max_completion_tokens and both penalties go in the v2 body; the service takes them."""
    async with key_client(emulator) as client:
        reply = await client.chat(HI, **V2_ONLY)  # type: ignore[arg-type]
        async with client.chat_stream(HI, seed=8) as stream:
            await stream.get_final_response()
    assert reply.result
    whole, streamed = v2_requests(emulator)
    assert {name: whole.body[name] for name in V2_ONLY} == V2_ONLY
    assert streamed.body["seed"] == 8


@pytest.mark.parametrize("name", sorted(V2_ONLY))
async def test_v2_only_options_are_refused_on_v1_before_any_io(
    offline_client: mpt_async.Client, sent: list[httpx.Request], name: str
) -> None:
    """An option only v2 takes is a RequestValidationError on v1, naming it; nothing is sent."""
    with pytest.raises(mpt_async.RequestValidationError, match=f"^{name}: .*v1 interface"):
        await offline_client.chat(HI, **{name: V2_ONLY[name]})  # type: ignore[arg-type]
    assert sent == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", 0),
        ("seed", 2**31 - 1),
        ("seed", 1.5),
        ("seed", True),
        ("max_completion_tokens", 0),
        ("max_completion_tokens", "64"),
        ("frequency_penalty", 2.5),
        ("frequency_penalty", float("nan")),
        ("presence_penalty", -2.01),
        ("presence_penalty", "0"),
    ],
)
async def test_v2_only_options_out_of_range_are_refused_at_the_door(
    emulator: Emulator, name: str, value: object
) -> None:
    """A v2 option out of its range is a RequestValidationError before any I/O."""
    async with key_client(emulator) as client:
        with pytest.raises(mpt_async.RequestValidationError, match=f"^{name}"):
            await client.chat(HI, **{name: value})  # type: ignore[arg-type]
    assert v2_requests(emulator) == []
