"""chat() and chat_stream() against the emulator, over real sockets."""

from __future__ import annotations

import httpx
import pytest

import mpt_async
from mpt_async.testing import Emulator

from .clientkit import HI, chat_requests, token_client

pytestmark = [pytest.mark.anyio, pytest.mark.transport]

HISTORY = [
    {"role": "user", "content": "Please introduce The Great Wall"},
    {"role": "assistant", "content": "It is long."},
    {"role": "user", "content": "Please introduce Beijing"},
]


async def test_chat_returns_a_response(emulator: Emulator) -> None:
    """A non-stream call returns the emulator's answer with usage."""
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
    assert isinstance(reply, mpt_async.ChatResponse)
    assert reply.result.strip()
    assert reply.id.startswith("as-")
    assert reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == 5  # the API page's count for this question
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert not reply.need_clear_history


async def test_chat_sends_only_set_fields(emulator: Emulator) -> None:
    """The body on the wire holds the messages and exactly the options given."""
    async with token_client(emulator) as client:
        await client.chat(HISTORY, temperature=0.3, stop=["\n"], metadata={"a": "b"})
    (request,) = chat_requests(emulator)
    assert request.body == {
        "messages": HISTORY,
        "temperature": 0.3,
        "stop": ["\n"],
        "metadata": {"a": "b"},
    }
    assert request.headers["content-type"] == "application/json"


async def test_stream_yields_ordered_chunks(emulator: Emulator) -> None:
    """A stream yields sentence_id 0, 1, 2 ... and ends with is_end on the last."""
    emulator.set_stream_chunks(5)
    async with token_client(emulator) as client:
        async with client.chat_stream(HI) as stream:
            chunks = [chunk async for chunk in stream]
    assert [c.sentence_id for c in chunks] == [0, 1, 2, 3, 4]
    assert [c.is_end for c in chunks] == [False] * 4 + [True]
    assert chat_requests(emulator)[0].body["stream"] is True


async def test_stream_text_equals_chat_result(emulator: Emulator) -> None:
    """The streamed sentences add up to the non-stream answer for the same question."""
    async with token_client(emulator) as client:
        whole = await client.chat(HISTORY)
        async with client.chat_stream(HISTORY) as stream:
            final = await stream.get_final_response()
            assert stream.finished
            assert stream.text == whole.result
    assert final.result == whole.result
    assert final.usage.total_tokens == whole.usage.total_tokens
    assert final.usage.completion_tokens > 0


async def test_stream_without_async_with(emulator: Emulator) -> None:
    """Iterating a stream directly works and frees its connection at is_end."""
    timeouts = mpt_async.Timeouts(pool=2.0)
    async with token_client(emulator, max_connections=1, timeout=timeouts) as client:
        texts = [chunk.result async for chunk in client.chat_stream(HI)]
        # With a pool of one, this call only gets a connection if the stream gave it back.
        assert "".join(texts) == (await client.chat(HI)).result


async def test_usage_and_helpers_track_progress(emulator: Emulator) -> None:
    """text, chunks_received and usage follow the chunks as they arrive."""
    async with token_client(emulator) as client, client.chat_stream(HI) as stream:
        first = await stream.__anext__()
        assert stream.text == first.result
        assert stream.chunks_received == 1
        assert stream.usage is not None
        assert stream.usage.completion_tokens == 0  # the API page's shape before the end
        assert not stream.finished


async def test_flagged_answer_is_reported(emulator: Emulator) -> None:
    """need_clear_history and ban_round reach the caller, streamed or not."""
    from mpt_async.testing import Fault

    emulator.inject(Fault.flag(ban_round=-1), times=2)
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            final = await stream.get_final_response()
    assert (reply.need_clear_history, reply.ban_round) == (True, -1)
    assert (final.need_clear_history, final.ban_round) == (True, -1)


async def test_one_pooled_connection_for_sequential_calls(emulator: Emulator) -> None:
    """Ten sequential calls reuse one keep-alive connection."""
    async with token_client(emulator) as client:
        for _ in range(5):
            await client.chat(HI)
            async with client.chat_stream(HI) as stream:
                await stream.get_final_response()
    assert emulator.stats.connections_seen == 1


async def test_own_http_client_is_used_and_left_open(emulator: Emulator) -> None:
    """A caller's httpx client carries the calls and is not closed by the client."""
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [hook]}) as http:
        async with token_client(emulator, http_client=http) as client:
            await client.chat(HI)
        assert not http.is_closed
        assert any(path.endswith("/mpt-30b-instruct") for path in seen)


async def test_closed_client_refuses_calls(emulator: Emulator) -> None:
    """After aclose(), calls raise instead of reopening connections."""
    client = token_client(emulator)
    await client.aclose()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.chat(HI)
    assert chat_requests(emulator) == []


async def test_with_options_shares_token_and_connections(emulator: Emulator) -> None:
    """A copy made by with_options uses the same token; closing it closes nothing."""
    async with token_client(emulator) as client:
        await client.chat(HI)
        copy = client.with_options(timeout=30, max_retries=0)
        assert copy.max_retries == 0
        assert copy.timeout.read == 30
        await copy.chat(HI)
        await copy.aclose()
        assert not client.is_closed
        await client.chat(HI)
    assert emulator.stats.token_requests == 1
    tokens = {r.query["access_token"] for r in chat_requests(emulator)}
    assert len(tokens) == 1


async def test_endpoint_name_is_in_the_path(emulator: Emulator) -> None:
    """The endpoint option picks the service's API name in the URL."""
    async with token_client(emulator, endpoint="my-mpt") as client:
        await client.chat(HI)
    assert chat_requests(emulator)[0].path.endswith("/wenxinworkshop/chat/my-mpt")


def test_bad_options_are_configuration_errors() -> None:
    """Bad constructor options raise ConfigurationError before any I/O."""
    auth = mpt_async.FixedTokenAuth("t")
    for kwargs in (
        {"endpoint": "a/b"},
        {"endpoint": ""},
        {"max_retries": -1},
        {"timeout": "fast"},
        {"base_url": "ftp://x"},
    ):
        with pytest.raises(mpt_async.ConfigurationError):
            mpt_async.Client(**{"auth": auth, "base_url": "http://x", **kwargs})


def test_auth_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """auth=None reads the qianfan SDK's variables, in a documented order."""
    for name in mpt_async._auth.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(mpt_async.ConfigurationError, match="QIANFAN_AK"):
        mpt_async.Client()
    monkeypatch.setenv("QIANFAN_ACCESS_KEY", "ak")
    with pytest.raises(mpt_async.ConfigurationError, match="QIANFAN_SECRET_KEY"):
        mpt_async.Client()
    monkeypatch.setenv("QIANFAN_SECRET_KEY", "sk")
    monkeypatch.setenv("QIANFAN_BASE_URL", "http://127.0.0.1:9")
    client = mpt_async.Client()
    assert isinstance(client._request_loop.auth, mpt_async.AKSKAuth)
    assert client.base_url == "http://127.0.0.1:9"
    monkeypatch.setenv("QIANFAN_AK", "key")
    monkeypatch.setenv("QIANFAN_SK", "secret")
    assert isinstance(mpt_async.Client()._request_loop.auth, mpt_async.AccessTokenAuth)
    monkeypatch.setenv("QIANFAN_ACCESS_TOKEN", "24.t")
    assert isinstance(mpt_async.Client()._request_loop.auth, mpt_async.FixedTokenAuth)
