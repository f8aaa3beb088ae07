"""Fault injection: every Fault, seen from a real client over a real socket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from mpt_async.testing import Emulator, Fault, _asgi

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"


def ask(stream: bool = False) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Tell me about faults"}], "stream": stream}


def chat(http: httpx.Client, token: str, stream: bool = False) -> httpx.Response:
    return http.post(CHAT, params={"access_token": token}, json=ask(stream))


def read_stream(http: httpx.Client, token: str) -> tuple[list[str], Exception | None]:
    """The data lines received before the stream ended, and the error that ended it."""
    lines: list[str] = []
    try:
        with http.stream("POST", CHAT, params={"access_token": token}, json=ask(True)) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
    except httpx.TransportError as exc:
        return lines, exc
    return lines, None


def chunks_of(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines]


def test_error_fault_answers_the_error_once(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.error(18) answers HTTP 200 with code 18 and Baidu's message, then stops."""
    emulator.inject(Fault.error(18))
    response = chat(http, token)
    assert response.status_code == 200
    body = response.json()
    assert body["error_code"] == 18
    assert body["error_msg"] == "Open api qps request limit reached"
    assert body["id"].startswith("as-")
    assert "result" in chat(http, token).json()


def test_error_fault_custom_message_and_times(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """times=2 hits two requests; a custom msg is sent as is."""
    emulator.inject(Fault.error(336100, "busy, busy"), times=2)
    assert [chat(http, token).json().get("error_msg") for _ in range(3)] == [
        "busy, busy",
        "busy, busy",
        None,
    ]


def test_faults_are_consumed_in_fifo_order(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Faults queued one after another hit consecutive requests in that order."""
    emulator.inject(Fault.error(1))
    emulator.inject(Fault.error(2))
    emulator.inject(Fault.http(503))
    assert chat(http, token).json()["error_code"] == 1
    assert chat(http, token).json()["error_code"] == 2
    assert chat(http, token).status_code == 503


def test_http_fault_sends_a_gateway_page(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.http(502) answers an HTML page with status 502, as a proxy would."""
    emulator.inject(Fault.http(502))
    response = chat(http, token)
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert "<html>" in response.text
    assert "502" in response.text


def test_http_fault_with_headers(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """Fault.http(429, headers=...) sends Retry-After and the given body and type."""
    emulator.inject(
        Fault.http(429, '{"error":"slow down"}', "application/json", {"Retry-After": "2"})
    )
    response = chat(http, token)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {"error": "slow down"}


def test_arrival_faults_act_before_authentication(http: httpx.Client, emulator: Emulator) -> None:
    """A gateway fault hits even a request with no credentials (it acts first)."""
    emulator.inject(Fault.http(502))
    assert http.post(CHAT, json=ask()).status_code == 502


def test_drop_closes_the_connection_without_a_response(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.drop() cuts the TCP connection: the client gets a protocol error, not a 500."""
    emulator.inject(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        chat(http, token)
    assert "result" in chat(http, token).json()
    assert emulator.stats.chat_requests == 2
    assert emulator.stats.faults_fired == 1


def test_drop_after_cuts_a_stream_mid_way(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.drop_after(1) delivers one chunk, then the connection dies mid-body."""
    emulator.inject(Fault.drop_after(1))
    lines, error = read_stream(http, token)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert "incomplete" in str(error)
    chunks = chunks_of(lines)
    assert [c["sentence_id"] for c in chunks] == [0]
    assert chunks[0]["is_end"] is False


def test_drop_after_zero_sends_only_headers(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.drop_after(0) starts the stream, then cuts it before any chunk."""
    emulator.inject(Fault.drop_after(0))
    lines, error = read_stream(http, token)
    assert lines == []
    assert isinstance(error, httpx.RemoteProtocolError)


def test_stream_faults_wait_for_a_stream_request(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """A stream-only fault lets non-stream requests through and hits the next stream."""
    emulator.inject(Fault.skip_id())
    assert "result" in chat(http, token).json()
    assert emulator.stats.pending_faults == 1
    lines, _ = read_stream(http, token)
    assert [c["sentence_id"] for c in chunks_of(lines)] == [0, 2, 3]
    assert emulator.stats.pending_faults == 0


def test_stall_delays_the_answer(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """Fault.stall(0.3) holds the answer for 0.3 s, then answers normally."""
    emulator.inject(Fault.stall(0.3))
    started = time.monotonic()
    assert "result" in chat(http, token).json()
    assert time.monotonic() - started >= 0.3


def test_stall_triggers_a_client_timeout(emulator: Emulator, token: str) -> None:
    """A stall longer than the client's read timeout makes the client time out."""
    emulator.inject(Fault.stall(1.0))
    with httpx.Client(base_url=emulator.base_url, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            chat(http, token)


def test_an_abandoned_stall_ends_with_its_client() -> None:
    """A stall whose client hung up ends at once and answers nothing; stop() need not wait."""
    emu = Emulator().start()
    try:
        emu.inject(Fault.stall(60))
        with httpx.Client(base_url=emu.base_url, timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                chat(http, "no-such-token")
    finally:
        started = time.monotonic()
        emu.stop()
        # The stall's own 60 s would hold stop() up; its client's hang-up ended it.
        assert time.monotonic() - started < 30
    assert emu.stats.chat_requests == 1
    assert emu.stats.error_responses == 0  # the abandoned request was not answered


def test_stall_after_pauses_a_stream(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """Fault.stall(1, after=1): the first chunk comes at once, the second 1 s after it."""
    emulator.inject(Fault.stall(1.0, after=1))
    arrivals = []
    with http.stream("POST", CHAT, params={"access_token": token}, json=ask(True)) as r:
        opened = time.monotonic()
        for line in r.iter_lines():
            if line:
                arrivals.append(time.monotonic() - opened)
    assert len(arrivals) == 3
    # Timed from the first chunk, not from the stream's opening; a generous lower bound
    # (the client may read the first chunk late on a busy machine).
    gap = arrivals[1] - arrivals[0]
    assert gap >= 0.5
    # Event order instead of an upper bound: the first chunk did not wait for the stall.
    assert arrivals[0] < gap


def test_malformed_sends_a_line_that_is_not_json(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.malformed(after=1): one good chunk, then a data line that does not parse."""
    emulator.inject(Fault.malformed(after=1))
    lines, error = read_stream(http, token)
    assert error is None
    assert len(lines) == 2
    assert json.loads(lines[0].removeprefix("data: "))["sentence_id"] == 0
    assert lines[1].startswith("data: ")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1].removeprefix("data: "))


def test_malformed_non_stream_body(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """On a non-stream request, Fault.malformed() sends a truncated JSON body, HTTP 200."""
    emulator.inject(Fault.malformed())
    response = chat(http, token)
    assert response.status_code == 200
    assert response.text.startswith('{"id":"as-')
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_no_end_stream_never_marks_the_end(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.no_end(): every chunk arrives and the stream closes, but none has is_end."""
    emulator.inject(Fault.no_end())
    lines, error = read_stream(http, token)
    chunks = chunks_of(lines)
    assert error is None
    assert [c["sentence_id"] for c in chunks] == [0, 1, 2]
    assert not any(c["is_end"] for c in chunks)


def test_repeat_id_repeats_a_sentence_id(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.repeat_id(): sentence ids go 0, 0, 1, even with one-chunk streams."""
    emulator.inject(Fault.repeat_id())
    lines, _ = read_stream(http, token)
    assert [c["sentence_id"] for c in chunks_of(lines)] == [0, 0, 1]
    emulator.set_stream_chunks(1)
    emulator.inject(Fault.repeat_id())
    lines, _ = read_stream(http, token)
    assert [c["sentence_id"] for c in chunks_of(lines)] == [0, 0]


def test_flag_marks_need_clear_history(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """Fault.flag() answers need_clear_history true and ban_round -1 before usage."""
    emulator.inject(Fault.flag())
    body = chat(http, token).json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "result",
        "is_truncated",
        "need_clear_history",
        "ban_round",
        "usage",
    ]
    assert body["need_clear_history"] is True
    assert body["ban_round"] == -1
    assert body["result"] == ""
    assert body["usage"]["completion_tokens"] == 0


def test_flag_on_a_stream_is_one_final_chunk(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Fault.flag(ban_round=2) on a stream gives a single is_end chunk with ban_round 2."""
    emulator.inject(Fault.flag(ban_round=2))
    lines, _ = read_stream(http, token)
    (chunk,) = chunks_of(lines)
    assert chunk["is_end"] is True
    assert chunk["need_clear_history"] is True
    assert chunk["ban_round"] == 2


def test_token_target_faults_hit_only_the_token_endpoint(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Faults with target='token' leave chat alone and hit the token endpoint."""
    emulator.inject(Fault.http(500, target="token"))
    emulator.inject(Fault.drop(target="token"))
    assert "result" in chat(http, token).json()
    params = {
        "grant_type": "client_credentials",
        "client_id": emulator.api_key,
        "client_secret": emulator.secret_key,
    }
    assert http.post("/oauth/2.0/token", params=params).status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/oauth/2.0/token", params=params)
    assert "access_token" in http.post("/oauth/2.0/token", params=params).json()


def test_token_target_error_and_stall(http: httpx.Client, emulator: Emulator) -> None:
    """Fault.error and Fault.stall work on the token endpoint too."""
    emulator.inject(Fault.error(13, target="token"))
    emulator.inject(Fault.stall(0.2, target="token"))
    params = {"grant_type": "client_credentials", "client_id": emulator.api_key}
    assert http.post("/oauth/2.0/token", params=params).json()["error_code"] == 13
    started = time.monotonic()
    http.post("/oauth/2.0/token", params=params)
    assert time.monotonic() - started >= 0.2


def test_faults_can_be_cleared(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """clear_faults() drops everything pending."""
    emulator.inject(Fault.drop(), times=5)
    assert emulator.stats.pending_faults == 5
    emulator.clear_faults()
    assert "result" in chat(http, token).json()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Fault.http(99), ValueError),
        (lambda: Fault.http(600), ValueError),
        (lambda: Fault.stall(-1), ValueError),
        (lambda: Fault.stall(1, after=1, target="token"), ValueError),
        (lambda: Fault.drop_after(-1), ValueError),
        (lambda: Fault.error("18"), TypeError),  # type: ignore[arg-type]
        (lambda: Fault.flag(ban_round=1.5), TypeError),  # type: ignore[arg-type]
        (lambda: Fault.drop(target="console"), ValueError),
        (lambda: Fault.from_dict({"kind": "meteor"}), ValueError),
        (lambda: Fault.from_dict({"kind": "drop", "seconds": 1}), ValueError),
    ],
)
def test_bad_faults_are_refused_when_built(make: Any, error: type[Exception]) -> None:
    """Nonsense fault arguments fail at construction, not when a request arrives."""
    with pytest.raises(error):
        make()


def test_inject_checks_its_arguments(emulator: Emulator) -> None:
    """inject() wants a Fault and a positive times."""
    with pytest.raises(TypeError):
        emulator.inject("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        emulator.inject(Fault.drop(), times=0)
    assert emulator.stats.pending_faults == 0


def test_from_dict_builds_the_same_faults() -> None:
    """The JSON form of the HTTP control builds the same values as the class methods."""
    assert Fault.from_dict({"kind": "error", "code": 18}) == Fault.error(18)
    assert Fault.from_dict({"kind": "drop_after", "after": 2}) == Fault.drop_after(2)
    assert Fault.from_dict({"kind": "stall", "seconds": 1, "after": 0}) == Fault.stall(1, 0)
    assert Fault.from_dict({"kind": "http", "status": 429, "target": "token"}) == Fault.http(
        429, target="token"
    )
    assert repr(Fault.error(18)) == "Fault(kind='error', target='chat', code=18)"


def test_drop_fallback_without_a_reachable_transport() -> None:
    """Under a server whose send has no transport, a drop promises a body and fails."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    with pytest.raises(ConnectionAbortedError):
        asyncio.run(_asgi.drop_connection(send))
    (start,) = sent
    assert start["type"] == "http.response.start"
    assert (b"content-length", b"1048576") in start["headers"]


def test_after_is_the_name_everywhere() -> None:
    """Every fault that counts chunks takes after=; drop_after's old n= stays an alias."""
    assert Fault.drop_after(after=2) == Fault.drop_after(2) == Fault.drop_after(n=2)
    assert Fault.drop_after(after=2).after == Fault.malformed(after=2).after == 2
    assert Fault.stall(1, after=2).after == 2
    assert Fault.from_dict({"kind": "drop_after", "n": 1}) == Fault.drop_after(after=1)
    with pytest.raises(ValueError, match="after"):
        Fault.drop_after()
    with pytest.raises(ValueError, match="after"):
        Fault.drop_after(after=1, n=1)


def test_pending_faults_are_listed(http: httpx.Client, emulator: Emulator) -> None:
    """GET /_emulator/faults and Emulator.pending_faults list what waits, in order."""
    emulator.inject(Fault.drop_after(2), times=3)
    emulator.inject(Fault.http(429, "slow down", headers={"Retry-After": "1"}, target="token"))
    assert emulator.pending_faults == [
        (Fault.drop_after(2), 3),
        (Fault.http(429, "slow down", headers={"Retry-After": "1"}, target="token"), 1),
    ]
    listed = http.get("/_emulator/faults").json()
    assert listed == [
        {"kind": "drop_after", "after": 2, "times": 3},
        {
            "kind": "http",
            "target": "token",
            "status": 429,
            "body": "slow down",
            "content_type": "text/html",
            "headers": {"Retry-After": "1"},
            "times": 1,
        },
    ]
    # The listed form posts back as the same faults.
    http.delete("/_emulator/faults")
    assert http.post("/_emulator/faults", json=listed).status_code == 200
    assert emulator.pending_faults == [
        (Fault.drop_after(2), 3),
        (Fault.http(429, "slow down", headers={"Retry-After": "1"}, target="token"), 1),
    ]
