"""Scripted replies: the test chooses the answer, in Python or over the control API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mpt_async.testing import Emulator, Fault

HI = {"messages": [{"role": "user", "content": "Please introduce The Great Wall"}]}


def chat(http: httpx.Client, token: str, stream: bool = False) -> httpx.Response:
    body = {**HI, "stream": True} if stream else HI
    return http.post(
        f"/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct?access_token={token}",
        json=body,
    )


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]


def test_a_reply_answers_the_next_call_only(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """add_reply("yes") answers the next call; the one after is derived from the question."""
    derived = chat(http, token).json()["result"]
    emulator.add_reply("yes")
    answer = chat(http, token).json()
    assert answer["result"] == "yes"
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    assert chat(http, token).json()["result"] == derived


def test_replies_queue_in_order_with_times(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """Replies are consumed first in, first out, each ``times`` times."""
    emulator.add_reply("one", times=2)
    emulator.add_reply("two")
    assert [chat(http, token).json()["result"] for _ in range(3)] == ["one", "one", "two"]


def test_a_list_of_sentences_is_the_stream(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """A list streams one sentence per chunk, whatever stream_chunks says; joined otherwise."""
    emulator.add_reply(["Hello ", "there, ", "friend."], times=2)
    streamed = chunks(chat(http, token, stream=True))
    assert [c["result"] for c in streamed] == ["Hello ", "there, ", "friend."]
    assert [c["sentence_id"] for c in streamed] == [0, 1, 2]
    assert [c["is_end"] for c in streamed] == [False, False, True]
    assert streamed[-1]["usage"]["completion_tokens"] == 3
    assert chat(http, token).json()["result"] == "Hello there, friend."


def test_one_string_is_cut_into_stream_chunks(
    http: httpx.Client, token: str, emulator: Emulator
) -> None:
    """One string is cut into stream_chunks pieces that join back to it."""
    emulator.set_stream_chunks(2)
    emulator.add_reply("one two three four")
    streamed = chunks(chat(http, token, stream=True))
    assert len(streamed) == 2
    assert "".join(c["result"] for c in streamed) == "one two three four"


def test_usage_and_flag_are_scripted(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """usage, need_clear_history and ban_round are reported as scripted."""
    emulator.add_reply(
        "",
        usage={"prompt_tokens": 40, "completion_tokens": 0},
        need_clear_history=True,
        ban_round=2,
    )
    answer = chat(http, token).json()
    assert answer["need_clear_history"] is True
    assert answer["ban_round"] == 2
    assert answer["usage"] == {"prompt_tokens": 40, "completion_tokens": 0, "total_tokens": 40}


def test_refused_calls_keep_the_reply(http: httpx.Client, emulator: Emulator, token: str) -> None:
    """A call refused (bad token, arrival fault) leaves the reply for the next good call."""
    emulator.add_reply("kept")
    assert chat(http, "bogus").json()["error_code"] == 110
    emulator.inject(Fault.error(18))
    assert chat(http, token).json()["error_code"] == 18
    assert chat(http, token).json()["result"] == "kept"


def test_a_flag_fault_wins_over_a_reply(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """A flag fault empties the answer it hits; the scripted reply is used up by that call."""
    emulator.add_reply("hidden")
    emulator.inject(Fault.flag())
    answer = chat(http, token).json()
    assert (answer["result"], answer["need_clear_history"]) == ("", True)
    assert emulator.stats.chat_requests == 1


def test_reset_and_clear_drop_replies(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """clear_replies() and reset() forget queued replies."""
    emulator.add_reply("gone")
    emulator.clear_replies()
    assert chat(http, token).json()["result"] != "gone"
    emulator.add_reply("gone too")
    emulator.reset()
    token = emulator.issue_token()
    assert chat(http, token).json()["result"] != "gone too"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reply": 42},
        {"reply": []},
        {"reply": ["ok", 3]},
        {"reply": "x" * 1_000_001},
        {"reply": "ok", "usage": {"tokens": 3}},
        {"reply": "ok", "usage": {"prompt_tokens": -1}},
        {"reply": "ok", "usage": {"completion_tokens": True}},
        {"reply": "ok", "ban_round": 3},
        {"reply": "ok", "need_clear_history": 1},
        {"reply": "ok", "times": 0},
        {"reply": "ok", "times": 10**7},
    ],
)
def test_bad_replies_are_refused(emulator: Emulator, kwargs: dict[str, Any]) -> None:
    """Ill-typed or oversized replies raise ValueError and queue nothing."""
    with pytest.raises(ValueError):
        emulator.add_reply(**kwargs)
    assert emulator._state.pending_replies() == []


def test_replies_over_the_control_api(http: httpx.Client, token: str, emulator: Emulator) -> None:
    """POST, GET and DELETE /_emulator/replies queue, list and clear scripted replies."""
    posted = http.post(
        "/_emulator/replies",
        json=[
            {"text": "yes", "times": 2},
            {"sentences": ["a ", "b"], "usage": {"completion_tokens": 4}},
        ],
    )
    assert posted.json() == {"ok": True, "pending_replies": 3}
    assert http.get("/_emulator/replies").json() == [
        {"text": "yes", "times": 2},
        {"sentences": ["a ", "b"], "usage": {"completion_tokens": 4}, "times": 1},
    ]
    assert chat(http, token).json()["result"] == "yes"
    assert http.delete("/_emulator/replies").json() == {"ok": True}
    assert http.get("/_emulator/replies").json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"text": "a", "sentences": ["b"]},
        {},
        {"sentences": "ab"},
        {"text": "a", "colour": "red"},
        {"text": "a", "times": "2"},
        ["yes"],
        [{"text": "ok"}] * 1001,
    ],
)
def test_bad_replies_over_http_get_400(http: httpx.Client, emulator: Emulator, body: Any) -> None:
    """The control API answers 400 to a bad reply, and queues none of the batch."""
    answer = http.post("/_emulator/replies", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert http.get("/_emulator/replies").json() == []
