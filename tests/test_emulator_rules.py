"""The emulator's request-body rules , each proven over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpt_async.testing import Emulator
from mpt_async.testing._rules import ALLOWED_FIELDS, RULES

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"
USER = {"role": "user", "content": "hi"}
BOT = {"role": "assistant", "content": "hello"}


def turns(*contents: str) -> list[dict[str, str]]:
    """Alternating user/assistant messages with the given contents."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": c}
        for i, c in enumerate(contents)
    ]


@pytest.fixture
def post(emulator: Emulator) -> Iterator[Any]:
    token = emulator.issue_token()
    with httpx.Client(base_url=emulator.base_url, timeout=5) as client:

        def send(body: Any = None, *, content: bytes | None = None) -> dict[str, Any]:
            params = {"access_token": token}
            if content is not None:
                response = client.post(CHAT, params=params, content=content)
            else:
                response = client.post(CHAT, params=params, json=body)
            assert response.status_code == 200
            result: dict[str, Any] = response.json()
            return result

        yield send


# (body fields beyond messages=[USER], expected code, words the message must contain)
REFUSED: list[tuple[str, dict[str, Any], int, str]] = [
    ("messages-missing", {"messages": ...}, 336003, "messages is required"),
    ("messages-not-list", {"messages": {"role": "user"}}, 336003, "messages must be a list"),
    ("messages-empty", {"messages": []}, 336003, "messages must not be empty"),
    ("message-not-object", {"messages": ["hi"]}, 336003, "must be an object"),
    (
        "message-extra-key",
        {"messages": [{**USER, "name": "bob"}]},
        336003,
        "exactly the fields role and content",
    ),
    ("message-no-content", {"messages": [{"role": "user"}]}, 336003, "role and content"),
    (
        "role-system",
        {"messages": [{"role": "system", "content": "x"}]},
        336003,
        "role must be 'user' or 'assistant'",
    ),
    (
        "content-empty",
        {"messages": [{"role": "user", "content": ""}]},
        336003,
        "content must be a non-empty string",
    ),
    (
        "content-not-string",
        {"messages": [{"role": "user", "content": 42}]},
        336003,
        "content must be a non-empty string",
    ),
    ("even-count", {"messages": [USER, BOT]}, 336006, "must be an odd number"),
    ("two-users", {"messages": [USER, USER, USER]}, 336003, "roles must alternate"),
    ("starts-with-assistant", {"messages": [BOT, USER, BOT]}, 336003, "roles must alternate"),
    ("too-long-total", {"messages": turns("a" * 1700, "b" * 1700, "c" * 1401)}, 336007, "4800"),
    ("stream-not-bool", {"stream": "yes"}, 336003, "stream must be a boolean"),
    ("stream-int", {"stream": 1}, 336003, "stream must be a boolean"),
    ("temperature-zero", {"temperature": 0}, 336003, "temperature must be in (0, 1.0]"),
    ("temperature-above-1", {"temperature": 1.01}, 336003, "temperature must be in (0, 1.0]"),
    ("temperature-string", {"temperature": "0.5"}, 336003, "temperature must be a number"),
    ("temperature-bool", {"temperature": True}, 336003, "temperature must be a number"),
    ("top_k-zero", {"top_k": 0}, 336003, "top_k must be a positive integer"),
    ("top_k-negative", {"top_k": -3}, 336003, "top_k must be a positive integer"),
    ("top_k-float", {"top_k": 1.5}, 336003, "top_k must be an integer"),
    ("top_k-bool", {"top_k": True}, 336003, "top_k must be an integer"),
    ("top_p-negative", {"top_p": -0.1}, 336003, "top_p must be in [0, 1.0]"),
    ("top_p-above-1", {"top_p": 1.1}, 336003, "top_p must be in [0, 1.0]"),
    ("top_p-string", {"top_p": "1"}, 336003, "top_p must be a number"),
    ("penalty-below-1", {"penalty_score": 0.99}, 336003, "penalty_score must be in [1.0, 2.0]"),
    ("penalty-above-2", {"penalty_score": 2.01}, 336003, "penalty_score must be in [1.0, 2.0]"),
    ("penalty-bool", {"penalty_score": True}, 336003, "penalty_score must be a number"),
    ("stop-not-list", {"stop": "END"}, 336003, "stop must be a list"),
    ("stop-five", {"stop": ["a", "b", "c", "d", "e"]}, 336003, "stop must have at most 4"),
    ("stop-not-string", {"stop": ["a", 1]}, 336003, "stop: every element must be a string"),
    ("stop-too-long", {"stop": ["x" * 21]}, 336003, "at most 20 characters"),
    ("user_id-int", {"user_id": 7}, 336003, "user_id must be a string"),
    ("metadata-list", {"metadata": ["a"]}, 336003, "metadata must be an object"),
    (
        "metadata-17",
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        336003,
        "metadata must have at most 16 entries",
    ),
    (
        "metadata-int-value",
        {"metadata": {"k": 1}},
        336003,
        "metadata: every value must be a string",
    ),
    ("null-value", {"temperature": None}, 336003, "temperature must not be null"),
    ("null-messages", {"messages": None}, 336003, "messages must not be null"),
    ("unknown-field", {"model": "mpt"}, 336003, "unknown field 'model'"),
    ("extra-parameters-list", {"extra_parameters": []}, 336003, "extra_parameters must be"),
]


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [pytest.param(f, c, w, id=name) for name, f, c, w in REFUSED],
)
def test_each_rule_refuses_its_violation(
    post: Any, fields: dict[str, Any], code: int, words: str
) -> None:
    """Each broken rule gets its own code, and a message naming the field and the rule."""
    body = {"messages": [USER], **fields}
    if body["messages"] is ...:
        del body["messages"]
    answer = post(body)
    assert answer["error_code"] == code
    assert words in answer["error_msg"]


def test_every_rule_in_the_table_is_exercised() -> None:
    """Each rule's message appears in REFUSED, so no rule goes untested."""
    expected = {words for _, _, _, words in REFUSED}
    for rule in RULES:
        assert any(words in rule.message for words in expected), rule.message


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    ("three-turns", {"messages": turns("q", "a", "q2")}),
    ("exactly-4800", {"messages": turns("a" * 1600, "b" * 1600, "c" * 1600)}),
    ("temperature-1", {"temperature": 1}),
    ("temperature-small", {"temperature": 0.01}),
    ("top_k-1", {"top_k": 1}),
    ("top_p-bounds", {"top_p": 0}),
    ("top_p-1", {"top_p": 1.0}),
    ("penalty-1", {"penalty_score": 1}),
    ("penalty-2", {"penalty_score": 2.0}),
    ("stop-4-of-20", {"stop": ["x" * 20, "b", "c", "d"]}),
    ("stop-empty", {"stop": []}),
    ("user_id", {"user_id": "u-1"}),
    ("metadata-16", {"metadata": {f"k{i}": "v" for i in range(16)}}),
    ("stream-false", {"stream": False}),
    ("qianfan-sdk", {"stream": False, "extra_parameters": {"request_source": "qianfan_py_sdk"}}),
    (
        "everything",
        {
            "temperature": 0.8,
            "top_k": 40,
            "top_p": 0.9,
            "penalty_score": 1.2,
            "stop": ["END"],
            "user_id": "u",
            "metadata": {"a": "b"},
        },
    ),
]


@pytest.mark.parametrize("fields", [pytest.param(f, id=name) for name, f in ACCEPTED])
def test_valid_bodies_are_answered(post: Any, fields: dict[str, Any]) -> None:
    """Bodies at the edges of every rule are accepted and answered."""
    answer = post({"messages": [USER], **fields})
    assert "error_code" not in answer
    assert answer["result"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"not json", b'{"messages": NaN}', b"\xff\xfe{}", b"[" * 100000],
    ids=["empty", "truncated", "text", "nan", "bad-utf8", "too-deep"],
)
def test_invalid_json_is_error_336002(post: Any, content: bytes) -> None:
    """A body that is not JSON (NaN and Infinity included) gets 336002."""
    answer = post(content=content)
    assert answer["error_code"] == 336002
    assert answer["error_msg"] == "Invalid JSON"


def test_a_json_body_that_is_not_an_object_is_error_336003(post: Any) -> None:
    """Valid JSON that is not an object (a list, a string) gets 336003."""
    for body in ([USER], "hi", 3):
        answer = post(body)
        assert answer["error_code"] == 336003
        assert "JSON object" in answer["error_msg"]


def test_only_documented_fields_and_extra_parameters_are_allowed() -> None:
    """The allowed fields are the API page's table plus the SDK's extra_parameters."""
    assert {
        "messages",
        "stream",
        "temperature",
        "top_k",
        "top_p",
        "penalty_score",
        "stop",
        "user_id",
        "metadata",
        "extra_parameters",
    } == ALLOWED_FIELDS
