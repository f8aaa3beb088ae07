"""Every bad argument is refused where it is given, with a typed error, before any I/O."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import mpt_async
from mpt_async import ConfigurationError, Conversation, RequestValidationError
from mpt_async.testing import Emulator

from .clientkit import HI, scrubbed_env


@pytest.fixture
def http(offline_http: httpx.AsyncClient) -> httpx.AsyncClient:
    """An httpx client whose network records every request in ``sent`` (and answers 500)."""
    return offline_http


BAD_CLIENT_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("backoff-number", {"backoff": 5}, "backoff must be a Backoff, not int"),
    ("timeout-nan", {"timeout": math.nan}, "timeout must be a finite number of seconds"),
    ("timeout-inf", {"timeout": math.inf}, "timeout must be a finite number of seconds"),
    ("timeout-negative", {"timeout": -1}, "timeout must be a positive number of seconds"),
    ("timeout-zero", {"timeout": 0}, "timeout must be a positive number of seconds"),
    ("timeout-str", {"timeout": "fast"}, "timeout must be a number of seconds or a Timeouts"),
    ("base-url-bracket", {"base_url": "http://[::1"}, "base_url must be a valid URL"),
    ("base-url-number", {"base_url": 123}, "base_url must be a string, not int"),
    ("base-url-userinfo", {"base_url": "https://u:p@h"}, "must not hold a user name or password"),
    ("base-url-port", {"base_url": "http://h:99999"}, "port 99999, outside 1..65535"),
    ("base-url-scheme", {"base_url": "ftp://h"}, "must start with http:// or https://"),
    ("base-url-ws", {"base_url": "ws://h"}, "must start with http:// or https://"),
    ("base-url-no-host", {"base_url": "http://"}, "base_url has no host"),
    ("base-url-query", {"base_url": "http://h/?a=1"}, "must not hold a query"),
    ("auth-number", {"auth": 123}, "auth must be an APIKeyAuth, AccessTokenAuth"),
    ("auth-bytes", {"auth": b"tok"}, "not bytes"),
    ("auth-empty", {"auth": " "}, "FixedTokenAuth.access_token must be a non-empty string"),
    ("max-connections-str", {"max_connections": "x"}, "max_connections must be a positive"),
    ("max-connections-zero", {"max_connections": 0}, "max_connections must be a positive"),
    ("http-client-str", {"http_client": "x"}, "http_client must be an httpx.AsyncClient"),
    ("max-retries-bool", {"max_retries": True}, "max_retries must be a non-negative integer"),
    ("rate-limits-dict", {"rate_limits": {"qps": 1}}, "rate_limits must be a RateLimits"),
]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [case[1:] for case in BAD_CLIENT_ARGUMENTS],
    ids=[case[0] for case in BAD_CLIENT_ARGUMENTS],
)
def test_client_refuses_bad_arguments(
    kwargs: dict[str, Any], words: str, http: httpx.AsyncClient, sent: list[httpx.Request]
) -> None:
    """Client(...) with a bad argument raises ConfigurationError saying what is wrong; no I/O."""
    arguments: dict[str, Any] = {"auth": "token", "base_url": "http://test", **kwargs}
    if "max_connections" not in kwargs:
        arguments.setdefault("http_client", http)
    with pytest.raises(ConfigurationError) as info:
        mpt_async.Client(**arguments)
    assert words in str(info.value)
    assert "u:p" not in str(info.value)  # a password in the URL is never echoed
    assert sent == []


def test_base_url_with_a_path_prefix_is_accepted() -> None:
    """A gateway's address with a path prefix (and a trailing slash) is still fine."""
    client = mpt_async.Client(auth="t", base_url="https://gateway.example:8443/qianfan/")
    assert client.base_url == "https://gateway.example:8443/qianfan"


def _with(http: httpx.AsyncClient) -> mpt_async.Client:
    return mpt_async.Client(auth="token", base_url="http://test", http_client=http)


BAD_CALLS: list[tuple[str, Callable[[mpt_async.Client], object], type[Exception], str]] = [
    ("conversation-none", lambda c: Conversation(None), ConfigurationError, "client must be"),  # type: ignore[arg-type]
    (
        "conversation-timeout",
        lambda c: Conversation(c, timeout=math.nan),
        ConfigurationError,
        "finite",
    ),
    ("top-k-huge", lambda c: c.chat_stream(HI, top_k=10**30), RequestValidationError, "top_k"),
    (
        "top-k-huge-conversation",
        lambda c: Conversation(c, top_k=2**63),
        RequestValidationError,
        "top_k",
    ),
    (
        "call-timeout-nan",
        lambda c: c.chat_stream(HI, timeout=math.nan),
        ConfigurationError,
        "finite",
    ),
    ("batch-client", lambda c: mpt_async.run_batch("c", []), ConfigurationError, "client must be"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_bad_call_arguments_are_refused_at_once(
    make: Callable[[mpt_async.Client], object],
    error: type[Exception],
    words: str,
    http: httpx.AsyncClient,
    sent: list[httpx.Request],
) -> None:
    """Conversation(None), a huge top_k, a NaN timeout: refused when given, nothing sent."""
    with pytest.raises(error, match=words):
        make(_with(http))
    assert sent == []


def test_huge_top_k_is_refused_before_encoding() -> None:
    """top_k beyond 32 bits is a RequestValidationError, whatever the JSON encoder."""
    with pytest.raises(RequestValidationError) as info:
        mpt_async.ChatRequest(messages=HI, top_k=10**30)
    assert info.value.field == "top_k"
    assert "at most 2147483647" in info.value.rule


def test_a_client_reused_across_event_loops_says_so(emulator: Emulator) -> None:
    """A second asyncio.run() with the same client raises ConfigurationError, with no noise."""
    code = textwrap.dedent(
        f"""
        import asyncio
        import mpt_async

        client = mpt_async.Client(auth=mpt_async.AccessTokenAuth(
            {emulator.api_key!r}, {emulator.secret_key!r}), base_url={emulator.base_url!r})

        async def ask():
            return (await client.chat([{{"role": "user", "content": "hi"}}])).result

        print("first", bool(asyncio.run(ask())))
        try:
            asyncio.run(ask())
        except mpt_async.ConfigurationError as exc:
            print("second", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=scrubbed_env(),
    )
    assert out.returncode == 0, out.stderr
    assert "first True" in out.stdout
    assert "second" in out.stdout
    assert "another event loop" in out.stdout
    assert "Task exception was never retrieved" not in out.stderr
    assert "Event loop is closed" not in out.stderr


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: mpt_async.Timeouts(read=math.inf), "Timeouts.read must be a finite number"),
        (lambda: mpt_async.Timeouts(connect=math.nan), "Timeouts.connect must be a finite"),
        (lambda: mpt_async.Backoff(initial=math.nan), "Backoff.initial must be a finite"),
        (lambda: mpt_async.Backoff(jitter=2), "Backoff.jitter must be in [0.0, 1.0]"),
        (lambda: mpt_async.AKSKAuth("ak", "sk", expiration=True), "AKSKAuth.expiration"),
    ],
    ids=["timeouts-inf", "timeouts-nan", "backoff-nan", "backoff-jitter", "expiration-bool"],
)
def test_settings_refuse_nan_infinity_and_bools(make: Callable[[], object], words: str) -> None:
    """Timeouts, Backoff and AKSKAuth refuse NaN, infinity, bools and out-of-range shares."""
    with pytest.raises(ConfigurationError) as info:
        make()
    assert words in str(info.value)


def test_the_loop_guard_tells_runs_apart() -> None:
    """The guard passes calls within one trio.run() or asyncio.run(), and refuses the next run."""
    import asyncio

    import trio

    from mpt_async._client import _LoopGuard

    async def twice(guard: _LoopGuard) -> None:
        guard.check()
        guard.check()

    for run in (trio.run, lambda f, g: asyncio.run(f(g))):
        guard = _LoopGuard()
        guard.check()  # outside any event loop: nothing to compare yet
        run(twice, guard)
        with pytest.raises(ConfigurationError, match="another event loop"):
            run(twice, guard)


@pytest.mark.parametrize("bad", [{"telemetry": "yes"}, {"appid": 5}, {"token_store": object()}])
def test_a_bad_argument_opens_no_http_client(
    bad: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arguments checked after the others still fail before the client's own httpx client."""
    made: list[object] = []
    real = mpt_async._client._http_client  # type: ignore[attr-defined]
    monkeypatch.setattr(
        mpt_async._client,  # type: ignore[attr-defined]
        "_http_client",
        lambda *args: made.append(args) or real(*args),
    )
    with pytest.raises(ConfigurationError):
        mpt_async.Client(auth=mpt_async.FixedTokenAuth("t"), **bad)
    assert made == []
