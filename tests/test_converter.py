"""The wire converter: requests carry only what was set; bad replies become typed errors."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpt_async import ChatChunk, ChatRequest, ChatResponse, MalformedResponseError, Usage
from mpt_async._converter import decode_json, encode_request, make_converter, structure
from mpt_async._models import ErrorEnvelope, TokenGrant

EXAMPLE_REPLY: dict[str, Any] = {
    "id": "as-v1tqiiqgg4",
    "object": "chat.completion",
    "created": 1702551146,
    "result": " Hello!",
    "is_truncated": False,
    "need_clear_history": False,
    "usage": {"prompt_tokens": 5, "completion_tokens": 320, "total_tokens": 325},
}
EXAMPLE_CHUNK: dict[str, Any] = {
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


def test_example_reply_structures() -> None:
    """The API page's single-round reply becomes a ChatResponse with every field."""
    reply = structure(EXAMPLE_REPLY, ChatResponse)
    assert reply.usage == Usage(5, 320, 325)
    assert (reply.id, reply.created, reply.ban_round) == ("as-v1tqiiqgg4", 1702551146, None)


def test_example_chunk_structures() -> None:
    """The API page's first stream chunk becomes a ChatChunk."""
    chunk = structure(EXAMPLE_CHUNK, ChatChunk)
    assert (chunk.sentence_id, chunk.is_end, chunk.usage.completion_tokens) == (0, False, 0)


def test_unknown_fields_are_tolerated() -> None:
    """A field the models do not know is ignored by the package's converter."""
    tolerant = make_converter()
    reply = structure({**EXAMPLE_REPLY, "new_field": [1]}, ChatResponse, converter=tolerant)
    assert reply.result == " Hello!"


def test_suite_runs_the_strict_converter() -> None:
    """Every test structures replies with the strict converter (see conftest)."""
    with pytest.raises(MalformedResponseError, match="unknown fields"):
        structure({**EXAMPLE_REPLY, "new_field": 1}, ChatResponse)


def test_strict_converter_refuses_unknown_fields() -> None:
    """The test suite's strict converter refuses drift instead of ignoring it."""
    strict = make_converter(strict=True)
    with pytest.raises(MalformedResponseError, match="new_field"):
        structure({**EXAMPLE_REPLY, "new_field": 1}, ChatResponse, converter=strict)
    assert structure(EXAMPLE_REPLY, ChatResponse, converter=strict).result == " Hello!"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({k: v for k, v in EXAMPLE_REPLY.items() if k != "result"}, "$.result"),
        ({**EXAMPLE_REPLY, "result": 5}, "$.result"),
        ({**EXAMPLE_REPLY, "created": "1702551146"}, "$.created"),
        ({**EXAMPLE_REPLY, "is_truncated": "false"}, "$.is_truncated"),
        ({**EXAMPLE_REPLY, "usage": {"prompt_tokens": 1}}, "$.usage.completion_tokens"),
        (
            {
                **EXAMPLE_REPLY,
                "usage": {"prompt_tokens": True, "completion_tokens": 1, "total_tokens": 2},
            },
            "$.usage.prompt_tokens",
        ),
        ({**EXAMPLE_REPLY, "usage": None}, "$.usage"),
    ],
)
def test_malformed_reply_is_typed_error(data: dict[str, Any], where: str) -> None:
    """Missing fields and wrong types raise MalformedResponseError naming the place."""
    with pytest.raises(MalformedResponseError) as info:
        structure(data, ChatResponse, status_code=200)
    assert where in str(info.value)
    assert info.value.status_code == 200
    assert info.value.request_id == "as-v1tqiiqgg4"


def test_a_request_id_that_is_not_text_is_not_kept() -> None:
    """A malformed reply's error carries its id only when the id is a string."""
    with pytest.raises(MalformedResponseError) as info:
        structure({**EXAMPLE_REPLY, "id": 5, "result": None}, ChatResponse)
    assert info.value.request_id is None


@pytest.mark.parametrize(("value", "ok"), [(2**63 - 1, True), (-(2**63) + 1, True), (2**63, False)])
def test_integers_are_64_bit(value: int, ok: bool) -> None:
    """An integer of a reply fits in 64 bits: the largest is kept, one more is refused."""
    data = {**EXAMPLE_REPLY, "created": value}
    if ok:
        assert structure(data, ChatResponse).created == value
    else:
        with pytest.raises(MalformedResponseError, match=r"\$\.created"):
            structure(data, ChatResponse)


def test_rate_limit_never_comes_from_the_body() -> None:
    """``rate_limit`` is read from headers only: a body's "rate_limit" is an unknown field."""
    tolerant = make_converter()
    body = {**EXAMPLE_REPLY, "rate_limit": {"limit_requests": 1}}
    assert structure(body, ChatResponse, converter=tolerant).rate_limit is None
    with pytest.raises(MalformedResponseError, match="unknown fields"):
        structure(body, ChatResponse)


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


def test_float_fields_accept_integers_only_as_numbers() -> None:
    """JSON has one number type: an integer where a float is expected is fine; not a bool or text."""
    strict = make_converter(strict=True)
    value = strict.structure(1, float)
    assert (value, type(value)) == (1.0, float)
    for bad in (True, "1.5", None):
        with pytest.raises(TypeError):
            strict.structure(bad, float)


def test_error_envelope_and_token_grant() -> None:
    """Error bodies and token grants structure; the grant's secrets stay out of repr."""
    envelope = structure({"error_code": 110, "error_msg": "Access token invalid"}, ErrorEnvelope)
    assert envelope == ErrorEnvelope(error_code=110, error_msg="Access token invalid")
    secrets = {
        "access_token": "24.secret",
        "refresh_token": "25.refresh",
        "session_key": "9mzdDZXu",
        "session_secret": "0e81f2a0",
    }
    grant = structure({**secrets, "expires_in": 2592000, "scope": "public"}, TokenGrant)
    assert grant.expires_in == 2592000
    assert "public" in repr(grant)
    for secret in secrets.values():
        assert secret not in repr(grant)


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
        structure({**EXAMPLE_CHUNK, **change}, ChatChunk)
    assert where in str(info.value)


def test_chunks_refuse_what_any_model_refuses() -> None:
    """The hand-written chunk hook reads every field, and the strict converter's refuses extra keys."""
    flagged = {**EXAMPLE_CHUNK, "need_clear_history": True, "ban_round": 2, "is_end": True}
    chunk = structure(flagged, ChatChunk)
    assert (chunk.need_clear_history, chunk.ban_round, chunk.is_end) == (True, 2, True)
    with pytest.raises(MalformedResponseError, match="unknown fields"):
        structure({**EXAMPLE_CHUNK, "usage": {**EXAMPLE_CHUNK["usage"], "x": 1}}, ChatChunk)


def test_each_chunk_has_its_own_counts() -> None:
    """Chunks share a Usage only while their counts repeat: a change shows, and so does a return."""
    counts = [(5, 0, 5), (5, 0, 5), (5, 7, 12), (5, 0, 5), (9, 0, 9)]
    for prompt, completion, total in counts:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
        chunk = structure({**EXAMPLE_CHUNK, "usage": usage}, ChatChunk)
        assert chunk.usage == Usage(prompt, completion, total)


#: Values of every JSON type, right and wrong for some field, and integers on the 64-bit edge.
_VALUES: list[Any] = [None, 0, -1, 2**63 - 1, 2**63, True, False, "x", "", 1.5, [], {}]
_ANY = st.sampled_from(_VALUES)
_OPTIONAL = ("is_truncated", "need_clear_history", "ban_round")


@st.composite
def _chunks(draw: st.DrawFn) -> dict[str, Any]:
    """The API page's chunk, optional fields left out or set, any fields replaced."""
    usage = dict(EXAMPLE_CHUNK["usage"])
    data: dict[str, Any] = {**EXAMPLE_CHUNK, "usage": usage}
    for key in _OPTIONAL:
        if draw(st.booleans()):
            data.pop(key, None)
        elif key == "ban_round":
            data[key] = draw(st.sampled_from([-1, 0, 2]))
    for key in draw(st.sets(st.sampled_from(sorted(data)), max_size=2)):
        data[key] = draw(_ANY)
    for key in draw(st.sets(st.sampled_from(sorted(usage)), max_size=1)):
        usage[key] = draw(_ANY)
    return data


def _agree(data: dict[str, Any]) -> None:
    """The fast converter and the detailed one (which explains errors) agree on ``data``."""
    oracle = make_converter(strict=True, detailed=True)
    try:
        expected = oracle.structure(data, ChatChunk)
    except Exception:
        with pytest.raises(MalformedResponseError):
            structure(data, ChatChunk)
    else:
        assert structure(data, ChatChunk) == expected


def test_chunk_structuring_agrees_field_by_field() -> None:
    """Each optional field left out, and each field given each kind of value: same outcome."""
    for leave_out in itertools.product([False, True], repeat=len(_OPTIONAL)):
        left = {key for key, out in zip(_OPTIONAL, leave_out, strict=True) if out}
        _agree({k: v for k, v in EXAMPLE_CHUNK.items() if k not in left})
    for value in _VALUES:
        for key in EXAMPLE_CHUNK:
            _agree({**EXAMPLE_CHUNK, key: value})
        for key in EXAMPLE_CHUNK["usage"]:
            _agree({**EXAMPLE_CHUNK, "usage": {**EXAMPLE_CHUNK["usage"], key: value}})


@given(_chunks())
def test_chunk_structuring_agrees_with_the_detailed_converter(data: dict[str, Any]) -> None:
    """The fast converter accepts what the detailed one accepts, as the same value."""
    _agree(data)


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
