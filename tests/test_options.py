"""The sampling options: one type, one set of rules, and one send path for every kind of call."""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import pytest

import mpt_async
from mpt_async import ChatOptions, Conversation, RequestValidationError
from mpt_async._options import OPTION_NAMES, check_options, options_from
from mpt_async.testing import Emulator

from .clientkit import HI, chat_requests, token_client


def test_option_names_follow_the_request_body() -> None:
    """The options are ChatRequest's fields, minus messages and stream, in the same order."""
    import attrs

    fields = [f.name for f in attrs.fields(mpt_async.ChatRequest)]
    assert list(OPTION_NAMES) == [name for name in fields if name not in ("messages", "stream")]
    assert set(ChatOptions.__optional_keys__) == set(OPTION_NAMES)


def test_check_options_drops_none_checks_and_copies() -> None:
    """Options left None are dropped; the rest are checked; stop and metadata are copies."""
    stop, metadata = ["END"], {"k": "v"}
    checked = check_options({"temperature": 1, "top_k": None, "stop": stop, "metadata": metadata})
    assert checked == {"temperature": 1, "stop": ("END",), "metadata": {"k": "v"}}
    assert type(checked["temperature"]) is int  # sent as given: 1, not 1.0
    metadata["k"] = "changed"
    assert checked["metadata"] == {"k": "v"}
    with pytest.raises(RequestValidationError) as info:
        check_options({"top_p": 3})
    assert (info.value.field, info.value.rule) == ("top_p", "must be in [0.0, 1.0], not 3")
    with pytest.raises(RequestValidationError, match="the options are temperature, top_k"):
        check_options({"temprature": 0.5})


def test_options_from_reads_a_namespace() -> None:
    """options_from takes the option attributes of an argparse namespace, and nothing else."""
    args = argparse.Namespace(temperature=0.5, top_k=None, stop=["x"], prompt="hi", usage=True)
    assert options_from(args) == {"temperature": 0.5, "stop": ("x",)}
    with pytest.raises(RequestValidationError, match="penalty_score"):
        options_from(argparse.Namespace(penalty_score=5))


@pytest.fixture
def client(offline_client: mpt_async.Client) -> mpt_async.Client:
    """A client whose network records every request in ``sent`` and answers 500."""
    return offline_client


@pytest.mark.anyio
async def test_unknown_options_are_refused_everywhere(
    client: mpt_async.Client, sent: list[httpx.Request]
) -> None:
    """A misspelt option (or ``stream``) is refused by every call, naming it; nothing is sent."""
    bad: dict[str, Any] = {"temprature": 0.5}
    with pytest.raises(RequestValidationError, match="temprature"):
        await client.chat(HI, **bad)
    with pytest.raises(RequestValidationError, match="stream"):
        client.chat_stream(HI, stream=False)  # type: ignore[call-arg]
    with pytest.raises(RequestValidationError, match="temprature"):
        Conversation(client, **bad)
    conv = Conversation(client)
    with pytest.raises(RequestValidationError, match="temprature"):
        await conv.ask("q", **bad)
    with pytest.raises(RequestValidationError, match="temprature"):
        conv.ask_stream("q", **bad)
    with pytest.raises(RequestValidationError, match="temprature"):
        client.batch(["q"], **bad)
    assert sent == []


@pytest.mark.anyio
async def test_batch_options_apply_to_each_input(emulator: Emulator) -> None:
    """A batch's options are sent with each input; a mapping's own fields replace them."""
    inputs: list[mpt_async.BatchInput] = [
        "q0",
        [{"role": "user", "content": "q1"}],
        {"messages": [{"role": "user", "content": "q2"}], "temperature": 0.9},
        mpt_async.ChatRequest(messages=[{"role": "user", "content": "q3"}]),
    ]
    async with token_client(emulator) as client:
        async with client.batch(inputs, temperature=0.2, stop=["END"]) as results:
            assert all([item.ok async for item in results])
    bodies = {r.body["messages"][0]["content"]: r.body for r in chat_requests(emulator)}
    assert (bodies["q0"]["temperature"], bodies["q0"]["stop"]) == (0.2, ["END"])
    assert (bodies["q1"]["temperature"], bodies["q1"]["stop"]) == (0.2, ["END"])
    assert (bodies["q2"]["temperature"], bodies["q2"]["stop"]) == (0.9, ["END"])
    assert set(bodies["q3"]) == {"messages"}


@pytest.mark.anyio
async def test_options_reach_the_wire_from_every_call(emulator: Emulator) -> None:
    """chat, chat_stream, ask and ask_stream send the same body for the same options."""
    options: ChatOptions = {"temperature": 0.5, "top_k": 3, "metadata": {"k": "v"}}
    async with token_client(emulator) as client:
        await client.chat(HI, **options)
        async with client.chat_stream(HI, **options) as stream:
            await stream.get_final_response()
        conv = Conversation(client, **options)
        await conv.ask("q")
        async with conv.ask_stream("q2", top_k=4) as answer:
            await answer.get_final_response()
    bodies = [r.body for r in chat_requests(emulator)]
    for body in bodies:
        assert body["temperature"] == 0.5
        assert body["metadata"] == {"k": "v"}
    assert [body["top_k"] for body in bodies] == [3, 3, 3, 4]
    assert [body.get("stream", False) for body in bodies] == [False, True, False, True]


def test_with_options_copies_every_attribute() -> None:
    """A copy has exactly the original's attributes (so none can be forgotten) and its transport."""
    backoff = mpt_async.Backoff(initial=0.5)
    client = mpt_async.Client(
        auth="t", base_url="http://127.0.0.1:1", timeout=7, max_retries=3, backoff=backoff
    )
    copy = client.with_options(max_retries=5, endpoint="other")
    assert vars(copy).keys() == vars(client).keys()
    assert copy._request_loop is client._request_loop
    assert (copy.max_retries, copy.endpoint, client.max_retries) == (5, "other", 3)
    assert (copy.timeout, copy._options.backoff) == (client.timeout, backoff)  # kept
    other = copy.with_options(timeout=2, backoff=mpt_async.Backoff(initial=0.1))
    assert (other.timeout.read, other.max_retries, other.endpoint) == (2, 5, "other")
    assert other._options.backoff == mpt_async.Backoff(initial=0.1)
    assert client.timeout.read == 7
    with pytest.raises(mpt_async.ConfigurationError, match="backoff"):
        client.with_options(backoff=5)  # type: ignore[arg-type]


def test_a_mapping_is_not_a_list_of_stop_words() -> None:
    """``stop={"a": 1}`` is refused, not sent as its keys."""
    with pytest.raises(RequestValidationError) as caught:
        check_options({"stop": {"a": 1}})
    assert caught.value.field == "stop"
