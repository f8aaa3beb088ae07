"""The emulator's rate limits: Baidu's refusals (18, 336501, 336502) and X-Ratelimit-* headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mpt_async.testing import Emulator, _replies
from mpt_async.testing._cli import add_emulator_parser
from mpt_async.testing._quota import Quota

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"
QUESTION = "Please introduce The Great Wall"
BODY = {"messages": [{"role": "user", "content": QUESTION}]}
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
)


def chat(http: httpx.Client, token: str, body: Any = BODY) -> httpx.Response:
    return http.post(CHAT, params={"access_token": token}, json=body)


def rate_headers(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in RATE_HEADERS if name in response.headers}


def cost() -> int:
    """The total tokens the emulator counts for one call with BODY."""
    answer = _replies.reply_text(QUESTION)
    return _replies.count_tokens([QUESTION]) + _replies.count_tokens([answer])


def test_no_limit_no_headers(emulator: Emulator, http: httpx.Client, token: str) -> None:
    """Without limits, answers carry no X-Ratelimit-* header and nothing is refused."""
    replies = [chat(http, token) for _ in range(5)]
    assert all("result" in r.json() for r in replies)
    assert all(rate_headers(r) == {} for r in replies)


def test_qps_limit_answers_error_18(emulator: Emulator, http: httpx.Client, token: str) -> None:
    """Over the QPS limit the emulator answers HTTP 200 with error 18, like Baidu."""
    emulator.set_rate_limits(qps=0.01)  # one call, then one more in 100 s: never in this test
    first, second = (chat(http, token) for _ in range(2))
    assert "result" in first.json()
    assert second.status_code == 200
    assert second.json()["error_code"] == 18
    assert second.json()["error_msg"] == "Open api qps request limit reached"
    assert emulator.stats.error_responses == 1


def test_qps_bucket_refills_at_the_limit() -> None:
    """The QPS bucket holds a second's worth and refills continuously (on a given clock)."""
    quota = Quota()
    kwargs: dict[str, Any] = {"qps": 2, "rpm": None, "tpm": None, "window": 60.0, "tokens": 1}
    codes = [quota.admit(now=100.0, **kwargs)[0] for _ in range(3)]
    assert codes == [None, None, 18]
    assert quota.admit(now=100.4, **kwargs)[0] == 18  # 0.8 of a call refilled
    assert quota.admit(now=100.5, **kwargs)[0] is None


def test_rpm_limit_answers_336501_with_headers(
    emulator: Emulator, http: httpx.Client, token: str
) -> None:
    """With rpm=2, answers count down the remaining calls; the third is refused with 336501."""
    emulator.set_rate_limits(rpm=2)
    replies = [chat(http, token) for _ in range(3)]
    assert [rate_headers(r) for r in replies] == [
        {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": remaining}
        for remaining in ("1", "0", "0")
    ]
    assert replies[2].json()["error_code"] == 336501
    assert replies[2].json()["error_msg"] == "Rate limit reached for RPM"
    assert emulator.stats.error_responses == 1


def test_tpm_limit_answers_336502(emulator: Emulator, http: httpx.Client, token: str) -> None:
    """With tpm for two calls and a half, the third call is refused with 336502."""
    tpm = 2 * cost() + cost() // 2
    emulator.set_rate_limits(tpm=tpm)
    replies = [chat(http, token) for _ in range(3)]
    assert replies[0].json()["usage"]["total_tokens"] == cost()
    remaining = [r.headers["x-ratelimit-remaining-tokens"] for r in replies]
    assert remaining == [str(tpm - cost()), str(tpm - 2 * cost()), str(tpm - 2 * cost())]
    assert all(r.headers["x-ratelimit-limit-tokens"] == str(tpm) for r in replies)
    assert replies[2].json()["error_code"] == 336502


def test_stream_answers_carry_the_headers(
    emulator: Emulator, http: httpx.Client, token: str
) -> None:
    """A streamed answer carries the same headers as a whole one."""
    emulator.set_rate_limits(rpm=10, tpm=10_000)
    reply = chat(http, token, {**BODY, "stream": True})
    assert reply.headers["content-type"] == "text/event-stream"
    assert rate_headers(reply) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-remaining-tokens": str(10_000 - cost()),
    }


def test_refused_calls_do_not_count(emulator: Emulator, http: httpx.Client, token: str) -> None:
    """Invalid and refused calls use no quota: only accepted calls are counted."""
    emulator.set_rate_limits(rpm=2)
    assert chat(http, token, {"messages": []}).json()["error_code"] == 336003
    chat(http, token)
    chat(http, token)
    assert chat(http, token).json()["error_code"] == 336501
    assert chat(http, token).headers["x-ratelimit-remaining-requests"] == "0"
    assert emulator.stats.error_responses == 3


def test_window_expires() -> None:
    """A call leaves the RPM window rate_window seconds after it was accepted."""
    quota = Quota()
    kwargs: dict[str, Any] = {"qps": None, "rpm": 1, "tpm": None, "window": 0.3, "tokens": 1}
    assert quota.admit(now=10.0, **kwargs)[0] is None
    assert quota.admit(now=10.29, **kwargs)[0] == 336501
    assert quota.admit(now=10.3, **kwargs)[0] is None


def test_limits_change_at_run_time_and_reset(emulator: Emulator) -> None:
    """set_rate_limits() replaces the limits; no arguments lifts them; reset() restores."""
    emulator.set_rate_limits(qps=5, rpm=60, tpm=1000)
    assert (emulator.qps, emulator.rpm, emulator.tpm) == (5, 60, 1000)
    emulator.set_rate_limits(rpm=30)
    assert (emulator.qps, emulator.rpm, emulator.tpm) == (None, 30, None)
    emulator.set_rate_limits()
    assert emulator.rpm is None
    emulator.set_rate_limits(rpm=1)
    emulator.reset()
    assert emulator.rpm is None


@pytest.mark.parametrize(
    "kwargs",
    [{"qps": 0}, {"qps": float("nan")}, {"rpm": 1.5}, {"rpm": True}, {"tpm": -1}, {"tpm": "9"}],
)
def test_bad_limits_are_refused(emulator: Emulator, kwargs: dict[str, Any]) -> None:
    """A limit that is not positive (or not an int for rpm/tpm) raises ValueError."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        emulator.set_rate_limits(**kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Emulator(**kwargs)
    assert (emulator.qps, emulator.rpm, emulator.tpm) == (None, None, None)


def test_http_config_sets_limits(emulator: Emulator, http: httpx.Client, token: str) -> None:
    """POST /_emulator/config takes qps/rpm/tpm/rate_window; null lifts a limit."""
    answer = http.post("/_emulator/config", json={"rpm": 1, "tpm": 5000})
    assert answer.status_code == 200
    assert answer.json() == {
        "stream_chunks": 3,
        "chunk_delay": 0.0,
        "qps": None,
        "rpm": 1,
        "tpm": 5000,
        "rate_window": 60.0,
    }
    assert emulator.rpm == 1
    chat(http, token)
    assert chat(http, token).json()["error_code"] == 336501
    lifted = http.post("/_emulator/config", json={"rpm": None, "tpm": None})
    assert lifted.json() == {"stream_chunks": 3, "chunk_delay": 0.0}
    assert "result" in chat(http, token).json()


@pytest.mark.parametrize(
    "body", [{"rpm": 0}, {"qps": -1}, {"tpm": 1.5}, {"rate_window": None}, {"rate_window": 0}]
)
def test_http_config_refuses_bad_limits(
    emulator: Emulator, http: httpx.Client, body: dict[str, Any]
) -> None:
    """A bad rate setting over HTTP is a 400 and changes nothing."""
    answer = http.post("/_emulator/config", json={"stream_chunks": 7, **body})
    assert answer.status_code == 400
    assert next(iter(body)) in answer.json()["error"]
    assert emulator.stream_chunks == 3
    assert emulator.rpm is None


def test_cli_takes_limits() -> None:
    """The emulator command accepts --qps, --rpm and --tpm, refusing non-positive values."""
    import argparse

    parser = argparse.ArgumentParser()
    add_emulator_parser(parser.add_subparsers())
    args = parser.parse_args(["emulator", "--qps", "2.5", "--rpm", "60", "--tpm", "9000"])
    assert (args.qps, args.rpm, args.tpm) == (2.5, 60, 9000)
    assert parser.parse_args(["emulator"]).rpm is None
    for bad in (["--qps", "0"], ["--rpm", "-3"], ["--tpm", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["emulator", *bad])
