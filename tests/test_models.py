"""Every rule of the API page's request body refuses a bad request before anything is sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import mpt_async
from mpt_async import ChatRequest, Message, RequestValidationError

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}

# (case id, keyword arguments for chat(), field named by the error, words of the rule)
VIOLATIONS: list[tuple[str, dict[str, Any], str, str]] = [
    ("messages-empty", {"messages": []}, "messages", "must not be empty"),
    ("messages-not-list", {"messages": "hi"}, "messages", "list of messages"),
    ("messages-mapping", {"messages": U}, "messages", "list of messages"),
    ("messages-even", {"messages": [U, A]}, "messages", "odd number"),
    ("first-not-user", {"messages": [A, U, A]}, "messages[0].role", "alternate"),
    ("no-alternation", {"messages": [U, U, U]}, "messages[1].role", "alternate"),
    ("bad-role", {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "'user'"),
    (
        "empty-content",
        {"messages": [{"role": "user", "content": ""}]},
        "messages[0].content",
        "empty",
    ),
    (
        "content-not-str",
        {"messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
        "string",
    ),
    ("missing-content", {"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    (
        "extra-key",
        {"messages": [{"role": "user", "content": "x", "name": "n"}]},
        "messages[0]",
        "unknown keys",
    ),
    ("not-a-message", {"messages": [42]}, "messages[0]", "mapping"),
    ("too-long", {"messages": [{"role": "user", "content": "x" * 4801}]}, "messages", "4800"),
    (
        "too-long-total",
        {
            "messages": [
                {"role": "user", "content": "x" * 2000},
                {"role": "assistant", "content": "y" * 2000},
                {"role": "user", "content": "z" * 801},
            ]
        },
        "messages",
        "4800",
    ),
    ("temperature-zero", {"temperature": 0}, "temperature", "(0.0, 1.0]"),
    ("temperature-high", {"temperature": 1.01}, "temperature", "(0.0, 1.0]"),
    ("temperature-type", {"temperature": "0.5"}, "temperature", "number"),
    ("temperature-bool", {"temperature": True}, "temperature", "number"),
    ("temperature-nan", {"temperature": float("nan")}, "temperature", "finite"),
    ("top-k-zero", {"top_k": 0}, "top_k", "positive"),
    ("top-k-float", {"top_k": 1.5}, "top_k", "integer"),
    ("top-k-bool", {"top_k": True}, "top_k", "integer"),
    ("top-k-huge", {"top_k": 10**30}, "top_k", "at most 2147483647"),
    ("top-p-negative", {"top_p": -0.1}, "top_p", "[0.0, 1.0]"),
    ("top-p-high", {"top_p": 1.5}, "top_p", "[0.0, 1.0]"),
    ("penalty-low", {"penalty_score": 0.99}, "penalty_score", "[1.0, 2.0]"),
    ("penalty-high", {"penalty_score": 2.01}, "penalty_score", "[1.0, 2.0]"),
    ("stop-too-many", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("stop-too-long", {"stop": ["x" * 21]}, "stop[0]", "at most 20"),
    ("stop-not-list", {"stop": "end"}, "stop", "list of strings"),
    ("stop-not-str", {"stop": [1]}, "stop[0]", "string"),
    ("user-id-type", {"user_id": 7}, "user_id", "string"),
    ("metadata-too-many", {"metadata": {str(i): "v" for i in range(17)}}, "metadata", "at most 16"),
    ("metadata-value-type", {"metadata": {"k": 1}}, "metadata['k']", "strings"),
    ("metadata-key-type", {"metadata": {1: "v"}}, "metadata[1]", "strings"),
    ("metadata-not-mapping", {"metadata": ["k"]}, "metadata", "mapping"),
    (
        "content-surrogate",
        {"messages": [{"role": "user", "content": "a\ud800"}]},
        "messages[0].content",
        "surrogate",
    ),
    ("stop-surrogate", {"stop": ["\udfff"]}, "stop[0]", "surrogate"),
    ("user-id-surrogate", {"user_id": "\ud800"}, "user_id", "surrogate"),
    ("metadata-surrogate", {"metadata": {"k": "\ud800"}}, "metadata['k']", "surrogate"),
    ("metadata-key-surrogate", {"metadata": {"\ud800": "v"}}, "metadata['\\ud800']", "surrogate"),
]


def _call_args(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    kwargs = dict(kwargs)
    return kwargs.pop("messages", [U]), kwargs


@pytest.fixture
def client(offline_client: mpt_async.Client) -> mpt_async.Client:
    """A client whose network records every request in ``sent`` and answers 500."""
    return offline_client


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS]
)
@pytest.mark.anyio
async def test_violation_is_refused_before_io(
    client: mpt_async.Client,
    sent: list[httpx.Request],
    kwargs: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    """A request breaking a rule raises RequestValidationError naming field and rule; nothing is sent."""
    messages, params = _call_args(kwargs)
    with pytest.raises(RequestValidationError) as info:
        await client.chat(messages, **params)
    assert info.value.field == field
    assert rule in info.value.rule
    assert isinstance(info.value, ValueError)
    with pytest.raises(RequestValidationError):
        client.chat_stream(messages, **params)
    assert sent == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 1.0},
        {"temperature": 1e-9},
        {"top_k": 1},
        {"top_p": 0},
        {"top_p": 1},
        {"penalty_score": 1},
        {"penalty_score": 2.0},
        {"stop": ["a", "b", "c", "x" * 20]},
        {"stop": []},
        {"user_id": ""},
        {"metadata": {str(i): "v" for i in range(16)}},
        {"messages": [{"role": "user", "content": "x" * 4800}]},
        {"messages": [U, A, Message("user", "again")]},
    ],
)
def test_boundary_values_are_accepted(kwargs: dict[str, Any]) -> None:
    """Values on the edge of each range are valid, and kept as given (``1`` stays an int)."""
    messages, params = _call_args(kwargs)
    request = ChatRequest(messages=messages, **params)
    assert request.messages == tuple(
        m if isinstance(m, Message) else Message(**m) for m in messages
    )
    for name, value in params.items():
        kept = getattr(request, name)
        assert kept == (tuple(value) if isinstance(value, list) else value)
        assert type(kept) is (tuple if isinstance(value, list) else type(value))


def test_message_checks_itself() -> None:
    """A Message with a bad role or empty content cannot be built."""
    with pytest.raises(RequestValidationError, match="role"):
        Message("system", "x")  # type: ignore[arg-type]
    with pytest.raises(RequestValidationError, match="content: must not be empty"):
        Message("user", "")


def test_dicts_and_messages_mix() -> None:
    """Plain dicts and Message objects become the same Message values."""
    request = ChatRequest(
        messages=[U, Message("assistant", "hello"), {"role": "user", "content": "more"}]
    )
    assert request.messages == (
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("user", "more"),
    )


def test_messages_accept_any_iterable() -> None:
    """A generator of messages is accepted and frozen into a tuple."""
    request = ChatRequest(messages=(m for m in [U]))
    assert request.messages == (Message("user", "hi"),)


def test_stream_must_be_bool() -> None:
    """The stream flag is a real bool."""
    with pytest.raises(RequestValidationError, match="stream"):
        ChatRequest(messages=[U], stream=1)  # type: ignore[arg-type]


def test_requests_are_frozen() -> None:
    """A built request cannot be changed afterwards (and so cannot go invalid)."""
    request = ChatRequest(messages=[U])
    with pytest.raises(AttributeError):
        request.temperature = 0  # type: ignore[misc]


def test_metadata_is_copied() -> None:
    """Changing the caller's dict later does not change the request."""
    metadata = {"k": "v"}
    request = ChatRequest(messages=[U], metadata=metadata)
    metadata["k"] = "changed"
    assert request.metadata == {"k": "v"}
