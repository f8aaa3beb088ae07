"""The wire converter: requests carry only what was set; bad replies become typed errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpt_async import ChatChunk, ChatRequest, ChatResponse, MalformedResponseError, Usage
from mpt_async._converter import decode_json, encode_request, make_converter, structure
from mpt_async._models import ErrorEnvelope, TokenGrant

SEED_REPLY: dict[str, Any] = {
    "id": "as-v1tqiiqgg4",
    "object": "chat.completion",
    "created": 1702551146,
    "result": " Hello!",
    "is_truncated": False,
    "need_clear_history": False,
    "usage": {"prompt_tokens": 5, "completion_tokens": 320, "total_tokens": 325},
}
SEED_CHUNK: dict[str, Any] = {
    "id": "as-2m3nh3th6b",
    "object": "chat.completion",
    "created": 1702551868,
    "sentence_id": 0,
    "is_end": False,
    "is_truncated": False,
    "result": " Hello!",
    "need_clear_history": False,
    "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
}


def test_request_omits_unset_fields() -> None:
    """Only the fields the caller set are sent: no nulls, no defaults."""
    body = json.loads(encode_request(ChatRequest(messages=[{"role": "user", "content": "hi"}])))
    assert body == {"messages": [{"role": "user", "content": "hi"}]}


def test_request_carries_every_set_field() -> None:
    """Every set field reaches the wire under its protocol name and JSON type."""
    request = ChatRequest(
        messages=[{"role": "user", "content": "长城"}],
        stream=True,
        temperature=0.5,
        top_k=3,
        top_p=0,
        penalty_score=1.5,
        stop=["a"],
        user_id="u1",
        metadata={"k": "v"},
    )
    raw = encode_request(request)
    assert "长城".encode() in raw  # UTF-8, not \u escapes
    assert json.loads(raw) == {
        "messages": [{"role": "user", "content": "长城"}],
        "stream": True,
        "temperature": 0.5,
        "top_k": 3,
        "top_p": 0.0,
        "penalty_score": 1.5,
        "stop": ["a"],
        "user_id": "u1",
        "metadata": {"k": "v"},
    }


def test_seed_reply_structures() -> None:
    """The seed's single-round reply becomes a ChatResponse with every field."""
    reply = structure(SEED_REPLY, ChatResponse)
    assert reply.usage == Usage(5, 320, 325)
    assert (reply.id, reply.created, reply.ban_round) == ("as-v1tqiiqgg4", 1702551146, None)


def test_seed_chunk_structures() -> None:
    """The seed's first stream chunk becomes a ChatChunk."""
    chunk = structure(SEED_CHUNK, ChatChunk)
    assert (chunk.sentence_id, chunk.is_end, chunk.usage.completion_tokens) == (0, False, 0)


def test_unknown_fields_are_tolerated() -> None:
    """A field the models do not know is ignored by the package's converter."""
    tolerant = make_converter()
    reply = structure({**SEED_REPLY, "new_field": [1]}, ChatResponse, converter=tolerant)
    assert reply.result == " Hello!"


def test_suite_runs_the_strict_converter() -> None:
    """Every test structures replies with the strict converter (see conftest)."""
    with pytest.raises(MalformedResponseError, match="unknown fields"):
        structure({**SEED_REPLY, "new_field": 1}, ChatResponse)


def test_strict_converter_refuses_unknown_fields() -> None:
    """The test suite's strict converter refuses drift instead of ignoring it."""
    strict = make_converter(strict=True)
    with pytest.raises(MalformedResponseError, match="new_field"):
        structure({**SEED_REPLY, "new_field": 1}, ChatResponse, converter=strict)
    assert structure(SEED_REPLY, ChatResponse, converter=strict).result == " Hello!"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({k: v for k, v in SEED_REPLY.items() if k != "result"}, "$.result"),
        ({**SEED_REPLY, "result": 5}, "$.result"),
        ({**SEED_REPLY, "created": "1702551146"}, "$.created"),
        ({**SEED_REPLY, "is_truncated": "false"}, "$.is_truncated"),
        ({**SEED_REPLY, "usage": {"prompt_tokens": 1}}, "$.usage.completion_tokens"),
        (
            {
                **SEED_REPLY,
                "usage": {"prompt_tokens": True, "completion_tokens": 1, "total_tokens": 2},
            },
            "$.usage.prompt_tokens",
        ),
        ({**SEED_REPLY, "usage": None}, "$.usage"),
    ],
)
def test_malformed_reply_is_typed_error(data: dict[str, Any], where: str) -> None:
    """Missing fields and wrong types raise MalformedResponseError naming the place."""
    with pytest.raises(MalformedResponseError) as info:
        structure(data, ChatResponse, status_code=200)
    assert where in str(info.value)
    assert info.value.status_code == 200
    assert info.value.request_id == "as-v1tqiiqgg4"


@pytest.mark.parametrize("data", [[], "x", None, 3])
def test_non_object_reply_is_typed_error(data: object) -> None:
    """A reply that is not a JSON object is refused with a typed error."""
    with pytest.raises(MalformedResponseError, match="JSON object"):
        structure(data, ChatResponse)


def test_non_json_is_typed_error() -> None:
    """Bytes that are not JSON raise MalformedResponseError, not JSONDecodeError."""
    with pytest.raises(MalformedResponseError, match="not JSON") as info:
        decode_json(b"<html>bad gateway</html>", status_code=502)
    assert info.value.status_code == 502


def test_float_fields_accept_integers() -> None:
    """JSON has one number type: an integer where a float is expected is fine."""
    strict = make_converter(strict=True)
    assert strict.structure(1, float) == 1.0


def test_error_envelope_and_token_grant() -> None:
    """Error bodies and token grants structure; the grant's token stays out of repr."""
    envelope = structure({"error_code": 110, "error_msg": "Access token invalid"}, ErrorEnvelope)
    assert envelope == ErrorEnvelope(error_code=110, error_msg="Access token invalid")
    grant = structure(
        {"access_token": "24.secret", "expires_in": 2592000, "scope": "x"}, TokenGrant
    )
    assert grant.expires_in == 2592000
    assert "24.secret" not in repr(grant)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"sentence_id": "0"}, "$.sentence_id"),
        ({"is_end": 0}, "$.is_end"),
        ({"result": None}, "$.result"),
        ({"created": 1.5}, "$.created"),
        ({"ban_round": "-1"}, "$.ban_round"),
        ({"is_truncated": 1}, "$.is_truncated"),
        ({"usage": {"prompt_tokens": 5, "completion_tokens": "0", "total_tokens": 5}}, "$.usage"),
    ],
)
def test_malformed_chunk_is_typed_error(change: dict[str, Any], where: str) -> None:
    """The per-chunk fast path checks every type as strictly as the generated hooks."""
    with pytest.raises(MalformedResponseError) as info:
        structure({**SEED_CHUNK, **change}, ChatChunk)
    assert where in str(info.value)


def test_chunk_fast_path_matches_generic_structuring() -> None:
    """The hand-written chunk hook builds the same value cattrs' generic hook builds."""
    import cattrs

    generic = cattrs.Converter(forbid_extra_keys=True)
    flagged = {**SEED_CHUNK, "need_clear_history": True, "ban_round": 2, "is_end": True}
    for data in (SEED_CHUNK, flagged):
        assert structure(data, ChatChunk) == generic.structure(data, ChatChunk)
    with pytest.raises(MalformedResponseError, match="unknown fields"):
        structure({**SEED_CHUNK, "usage": {**SEED_CHUNK["usage"], "x": 1}}, ChatChunk)


def test_stdlib_json_when_orjson_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the speed extra, requests and replies go through the standard json module."""
    import builtins
    import sys

    from mpt_async import _converter

    real_import = builtins.__import__

    def no_orjson(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "orjson":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "orjson", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_orjson)
    monkeypatch.setattr(_converter, "loads", _converter._first_loads)
    monkeypatch.setattr(_converter, "dumps", _converter._first_dumps)
    body = encode_request(ChatRequest(messages=[{"role": "user", "content": "长城"}]))
    assert body == '{"messages":[{"role":"user","content":"长城"}]}'.encode()
    assert _converter.loads is json.loads
    assert decode_json(b'{"a": 1}') == {"a": 1}
