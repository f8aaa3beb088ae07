"""The emulator of the Qianfan API: lifecycle, auth, replies, counters and controls.

Every test talks to a real server over loopback with httpx. Body validation is in
``test_emulator_rules.py``, faults in ``test_emulator_faults.py``, the command line in
``test_emulator_cli.py``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from mpt_async._signer import authorization, format_timestamp
from mpt_async.testing import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_API_KEY,
    DEFAULT_SECRET_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    Emulator,
    EmulatorStats,
    Fault,
    RecordedRequest,
    _auth,
    _replies,
)

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"
SEED_QUESTION = "Please introduce The Great Wall"
SEED_ANSWER = (
    "Hello! I'm happy to help you with your question. The Great Wall of China is an ancient"
    " series of fortifications built across the northern borders of China."
)
# The field lists, in order, of the API page's examples (ban_round only when flagged).
SEED_FIELDS = [
    "id",
    "object",
    "created",
    "result",
    "is_truncated",
    "need_clear_history",
    "usage",
]
SEED_STREAM_FIELDS = [
    "id",
    "object",
    "created",
    "sentence_id",
    "is_end",
    "is_truncated",
    "result",
    "need_clear_history",
    "usage",
]
TOKEN_FIELDS = {
    "access_token",
    "expires_in",
    "refresh_token",
    "scope",
    "session_key",
    "session_secret",
}
ENV_NAMES = ("QIANFAN_AK", "QIANFAN_SK", "QIANFAN_ACCESS_KEY", "QIANFAN_SECRET_KEY")


@pytest.fixture(scope="module")
def custom() -> Iterator[Emulator]:
    """An emulator with its own keys, a short token TTL and two endpoints."""
    with Emulator(
        api_key="custom-ak",
        secret_key="custom-sk",
        token_ttl=1.5,  # long enough to use a token on a busy machine, short to see it end
        endpoints={"mpt-30b-instruct", "my-mpt"},
    ) as emu:
        yield emu


def ask(question: str = SEED_QUESTION, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], **fields}


def chat(http: httpx.Client, token: str, body: Any, path: str = CHAT) -> httpx.Response:
    return http.post(path, params={"access_token": token}, json=body)


def get_token(http: httpx.Client, method: str = "POST", **params: str) -> httpx.Response:
    return http.request(method, "/oauth/2.0/token", params=params)


def sse_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse a complete event-stream body, checking its line framing on the way."""
    text = response.text
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [json.loads(e[len("data: ") :]) for e in events]


def signed(
    emu: Emulator,
    method: str = "POST",
    path: str = CHAT,
    query: tuple[tuple[str, str], ...] = (),
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    sign_host: str | None = None,
    when: float | None = None,
    expiration: int = 300,
    signed_headers: list[str] | None = None,
    list_signed_headers: bool = True,
) -> dict[str, str]:
    """Headers for an AK/SK-signed request, made with the package's signer."""
    timestamp = format_timestamp(time.time() if when is None else when)
    headers = {
        "host": f"127.0.0.1:{emu.port}",
        "content-type": "application/json",
        "x-bce-date": timestamp,
    }
    to_sign = {**headers, "host": sign_host or headers["host"]}
    if signed_headers is not None and "content-length" in signed_headers:
        to_sign["content-length"] = str(len(json.dumps(ask()).encode()))
    headers["authorization"] = authorization(
        access_key=access_key or emu.access_key,
        secret_key=secret_key or emu.secret_access_key,
        method=method,
        path=path,
        query=query,
        headers=to_sign,
        timestamp=timestamp,
        expiration=expiration,
        signed_headers=signed_headers,
        list_signed_headers=list_signed_headers,
    )
    return headers


def wait_until(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# -- lifecycle and configuration -------------------------------------------------------


def test_start_waits_for_listening_and_stop_joins_the_thread() -> None:
    """start() returns with the port accepting; stop() closes it and ends the thread."""
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url
    emu.start()
    try:
        started = emu.running
        assert started
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emu.base_url)
        port = emu.port
        assert port > 0
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        threads = [t for t in threading.enumerate() if t.name.endswith(f"-{port}")]
        assert len(threads) == 1
        assert threads[0].daemon
        with pytest.raises(RuntimeError, match="already running"):
            emu.start()
    finally:
        emu.stop()
    assert not emu.running
    assert not threads[0].is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    emu.stop()  # idempotent


def test_a_fixed_port_is_used_and_a_busy_one_raises() -> None:
    """port=N listens on N; binding a port already in use raises OSError at start()."""
    with Emulator() as first:
        port = first.port
        with pytest.raises(OSError):
            Emulator(port=port).start()
    with Emulator(port=port) as again:
        assert again.port == port


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_hosts_beyond_loopback_are_taken_with_a_warning(host: str) -> None:
    """A host beyond loopback (for a container) is accepted, with a warning: no security."""
    with pytest.warns(UserWarning, match="beyond loopback"):
        emu = Emulator(host=host)
    assert emu.host == host


def test_an_emulator_on_all_interfaces_serves_loopback_too() -> None:
    """Emulator(host="0.0.0.0") listens for real, so loopback clients reach it."""
    with pytest.warns(UserWarning, match="beyond loopback"):
        emu = Emulator(host="0.0.0.0")
    with emu:
        answer = httpx.get(f"http://127.0.0.1:{emu.port}/_emulator/stats", timeout=5)
    assert answer.status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_hosts_give_no_warning(host: str) -> None:
    """Loopback addresses, the default, are taken silently (warnings are errors here)."""
    assert Emulator(host=host).host == host


def test_credentials_default_to_the_documented_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no arguments and no QIANFAN_* variables, the DEFAULT_* constants are used."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    emu = Emulator()
    assert (emu.api_key, emu.secret_key) == (DEFAULT_API_KEY, DEFAULT_SECRET_KEY)
    assert (emu.access_key, emu.secret_access_key) == (
        DEFAULT_ACCESS_KEY,
        DEFAULT_SECRET_ACCESS_KEY,
    )


def test_credentials_come_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QIANFAN_AK/SK/ACCESS_KEY/SECRET_KEY are read; explicit arguments win over them."""
    for name in ENV_NAMES:
        monkeypatch.setenv(name, f"env-{name}")
    emu = Emulator(secret_key="explicit")
    assert emu.api_key == "env-QIANFAN_AK"
    assert emu.secret_key == "explicit"
    assert emu.access_key == "env-QIANFAN_ACCESS_KEY"
    assert emu.secret_access_key == "env-QIANFAN_SECRET_KEY"


def test_env_points_a_child_process_at_the_emulator(emulator: Emulator) -> None:
    """env() gives the base URLs and both credential pairs under the qianfan names."""
    env = emulator.env()
    assert env["QIANFAN_BASE_URL"] == emulator.base_url
    assert env["QIANFAN_CONSOLE_API_BASE_URL"] == emulator.base_url
    assert env["QIANFAN_AK"] == emulator.api_key
    assert env["QIANFAN_SECRET_KEY"] == emulator.secret_access_key
    assert emulator.chat_url() == emulator.base_url + CHAT
    assert emulator.token_url == emulator.base_url + "/oauth/2.0/token"


def test_secrets_stay_out_of_reprs(emulator: Emulator, http: httpx.Client) -> None:
    """repr() of the emulator and of recorded requests shows no key, token or signature."""
    token = emulator.issue_token()
    chat(http, token, ask())
    get_token(http, grant_type="client_credentials", client_id="x", client_secret="hush")
    http.post(CHAT, json=ask(), headers=signed(emulator))
    text = repr(emulator) + "".join(repr(r) for r in emulator.requests)
    assert emulator.base_url in text
    for secret in (emulator.secret_key, emulator.secret_access_key, token, "hush"):
        assert secret not in text
    assert "bce-auth-v1" not in text
    assert "<redacted>" in text


def test_settings_are_validated() -> None:
    """Out-of-range settings fail at construction or when changed, not later."""
    with pytest.raises(ValueError, match="stream_chunks"):
        Emulator(stream_chunks=0)
    with pytest.raises(ValueError, match="chunk_delay"):
        Emulator(chunk_delay=-1)
    with pytest.raises(ValueError, match="token_ttl"):
        Emulator(token_ttl=0)
    emu = Emulator()
    with pytest.raises(ValueError, match="stream_chunks"):
        emu.set_stream_chunks(True)
    assert emu.stream_chunks == 3


# -- token endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_token_endpoint_issues_a_token_shaped_like_baidus(
    emulator: Emulator, http: httpx.Client, method: str
) -> None:
    """Good keys get 200 with Baidu's fields, a "24." token and expires_in = token_ttl."""
    response = get_token(
        http,
        method,
        grant_type="client_credentials",
        client_id=emulator.api_key,
        client_secret=emulator.secret_key,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == TOKEN_FIELDS
    assert body["access_token"].startswith("24.")
    assert body["expires_in"] == 2592000
    assert chat(http, body["access_token"], ask()).json()["result"]


def test_token_endpoint_accepts_the_qianfan_sdk_request(
    emulator: Emulator, http: httpx.Client
) -> None:
    """The SDK's POST with a JSON '{}' body, and a form-encoded body, are both accepted."""
    params = {
        "grant_type": "client_credentials",
        "client_id": emulator.api_key,
        "client_secret": emulator.secret_key,
    }
    as_sdk = http.post("/oauth/2.0/token", params=params, json={})
    as_form = http.post("/oauth/2.0/token", data=params)
    assert "access_token" in as_sdk.json()
    assert "access_token" in as_form.json()


@pytest.mark.parametrize(
    ("params", "status", "error", "description"),
    [
        (
            {"client_id": "nobody", "client_secret": "x"},
            401,
            "invalid_client",
            "unknown client id",
        ),
        ({"client_secret": "wrong"}, 401, "invalid_client", "Client authentication failed"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", None),
        ({"client_id": ""}, 401, "invalid_client", "unknown client id"),
    ],
)
def test_token_endpoint_refusals(
    emulator: Emulator,
    http: httpx.Client,
    params: dict[str, str],
    status: int,
    error: str,
    description: str | None,
) -> None:
    """Unknown API Key, wrong Secret Key and bad grant_type get Baidu's error bodies."""
    query = {
        "grant_type": "client_credentials",
        "client_id": emulator.api_key,
        "client_secret": emulator.secret_key,
        **params,
    }
    response = get_token(http, **query)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    if description is not None:
        assert body["error_description"] == description
    assert emulator.stats.tokens_issued == 0


def test_issued_tokens_expire_after_the_token_ttl(custom: Emulator) -> None:
    """A token from the endpoint works, then answers 111 once token_ttl has passed."""
    custom.reset()
    with httpx.Client(base_url=custom.base_url) as http:
        body = get_token(
            http, grant_type="client_credentials", client_id="custom-ak", client_secret="custom-sk"
        ).json()
        assert body["expires_in"] == 2  # the TTL is 1.5 s, rounded up to an int
        assert "result" in chat(http, body["access_token"], ask()).json()
        time.sleep(1.6)
        assert chat(http, body["access_token"], ask()).json()["error_code"] == 111


# -- chat authentication -----------------------------------------------------------------


def test_no_credentials_is_error_100(http: httpx.Client) -> None:
    """A chat request with neither access_token nor Authorization gets error 100."""
    body = http.post(CHAT, json=ask()).json()
    assert body["error_code"] == 100
    assert re.fullmatch(r"as-[a-z0-9]{10}", body["id"])


def test_unknown_token_is_error_110(http: httpx.Client) -> None:
    """An access_token the emulator never issued gets 110 with Baidu's message, HTTP 200."""
    response = chat(http, "24.not-a-token", ask())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"error_code", "error_msg", "id"}
    assert body["error_code"] == 110
    assert body["error_msg"] == "Access token invalid or no longer valid"


def test_revoked_and_reset_tokens_are_error_110(emulator: Emulator, http: httpx.Client) -> None:
    """revoke_tokens() and reset() turn every current token into 110; new ones work."""
    first = emulator.issue_token()
    emulator.revoke_tokens()
    assert chat(http, first, ask()).json()["error_code"] == 110
    second = emulator.issue_token()
    emulator.reset()
    assert chat(http, second, ask()).json()["error_code"] == 110
    assert "result" in chat(http, emulator.issue_token(), ask()).json()


def test_expired_tokens_are_error_111(emulator: Emulator, http: httpx.Client) -> None:
    """expire_tokens(), or a TTL running out, makes a token answer 111 'expired'."""
    token = emulator.issue_token()
    short = emulator.issue_token(ttl=0.05)
    emulator.expire_tokens()
    body = chat(http, token, ask()).json()
    assert body["error_code"] == 111
    assert body["error_msg"] == "Access token expired"
    fresh_short = emulator.issue_token(ttl=0.05)
    time.sleep(0.1)
    assert chat(http, short, ask()).json()["error_code"] == 111
    assert chat(http, fresh_short, ask()).json()["error_code"] == 111


def test_aksk_signed_request_is_accepted(emulator: Emulator, http: httpx.Client) -> None:
    """A bce-auth-v1 signature over the Host actually sent is accepted."""
    response = http.post(CHAT, json=ask(), headers=signed(emulator))
    assert response.json()["result"]


def test_aksk_signature_covers_the_query(emulator: Emulator, http: httpx.Client) -> None:
    """Query parameters are part of the signature: signed ones pass, unsigned ones fail."""
    query = (("trace", "a b+c"),)
    good = http.post(CHAT, params=query, json=ask(), headers=signed(emulator, query=query))
    bad = http.post(CHAT, params=query, json=ask(), headers=signed(emulator))
    assert "result" in good.json()
    assert bad.json()["error_code"] == 14


def test_aksk_empty_signed_headers_field_means_baidus_default_set(
    emulator: Emulator, http: httpx.Client
) -> None:
    """An empty signedHeaders field means host, content-length, content-type, x-bce-*."""
    default = ["host", "content-length", "content-type", "x-bce-date"]
    headers = signed(emulator, signed_headers=default, list_signed_headers=False)
    assert "//" in headers["authorization"]
    body = json.dumps(ask()).encode()
    assert "result" in http.post(CHAT, content=body, headers=headers).json()


def test_baidus_published_signature_example_verifies() -> None:
    """The emulator's verifier accepts Baidu's own published example (empty field)."""
    headers = {
        "host": "bj.bcebos.com",
        "content-type": "text/plain",
        "content-length": "8",
        "content-md5": "NFzcPqhviddjRNnSOGo4rw==",
        "x-bce-date": "2015-04-27T08:23:49Z",
    }
    value = (
        "bce-auth-v1/" + "a" * 32 + "/2015-04-27T08:23:49Z/1800//"
        "d74a04362e6a848f5b39b15421cb449427f419c95a480fd6b8cf9fc783e2999e"
    )
    kwargs: dict[str, Any] = {
        "method": "PUT",
        "path": "/v1/test/myfolder/readme.txt",
        "query": [("partNumber", "9"), ("uploadId", "a44cc9bab11cbd156984767aad637851")],
        "headers": headers,
        "keys": {"a" * 32: "b" * 32},
    }
    assert _auth.verify_signature(value, now=1430123029.0 + 60, **kwargs)
    assert not _auth.verify_signature(value, now=1430123029.0 + 1801, **kwargs)
    assert not _auth.verify_signature(value, now=1430123029.0, **{**kwargs, "method": "POST"})


@pytest.mark.parametrize(
    "change",
    [
        {"secret_key": "wrong-secret"},
        {"access_key": "unknown-ak"},
        {"sign_host": "aip.baidubce.com"},
        {"when": time.time() - 400},  # signed 400 s ago, valid for 300 s
        {"when": time.time() + 3600},  # an hour in the future
        {"expiration": 3600},  # longer than Baidu's 1800 s maximum
        {"signed_headers": ["content-type", "x-bce-date"]},  # Host not signed
    ],
    ids=["wrong-sk", "unknown-ak", "other-host", "expired", "future", "too-long", "no-host"],
)
def test_bad_aksk_signatures_are_error_14(
    emulator: Emulator, http: httpx.Client, change: dict[str, Any]
) -> None:
    """Wrong key, unknown AK, another Host, stale or future timestamps get error 14."""
    body = http.post(CHAT, json=ask(), headers=signed(emulator, **change)).json()
    assert body["error_code"] == 14
    assert body["error_msg"] == "IAM Certification failed"


def test_garbage_authorization_header_is_error_14(http: httpx.Client) -> None:
    """An Authorization header that is not bce-auth-v1 at all gets error 14."""
    response = http.post(CHAT, json=ask(), headers={"authorization": "Bearer abc"})
    assert response.json()["error_code"] == 14


# -- chat endpoint: methods, endpoints, paths ---------------------------------------------


def test_non_post_chat_is_error_336101(http: httpx.Client, token: str) -> None:
    """GET or PUT on the chat URL gets 336101 'Invalid HTTP method'."""
    for method in ("GET", "PUT"):
        body = http.request(method, CHAT, params={"access_token": token}).json()
        assert body["error_code"] == 336101


def test_endpoint_names_can_be_restricted(custom: Emulator) -> None:
    """With endpoints given, those names work and any other gets 336005."""
    custom.reset()
    token = custom.issue_token(ttl=3600)  # the fixture's short TTL is for another test
    with httpx.Client(base_url=custom.base_url) as http:
        assert (
            "result" in chat(http, token, ask(), CHAT.replace("mpt-30b-instruct", "my-mpt")).json()
        )
        other = chat(http, token, ask(), CHAT.replace("mpt-30b-instruct", "ernie")).json()
    assert other["error_code"] == 336005


def test_any_endpoint_name_is_served_by_default(http: httpx.Client, token: str) -> None:
    """Without endpoints, any name works, but an empty or nested name gets 336005."""
    base = CHAT.rsplit("/", 1)[0]
    assert "result" in chat(http, token, ask(), base + "/whatever-name").json()
    assert chat(http, token, ask(), base + "/").json()["error_code"] == 336005
    assert chat(http, token, ask(), base + "/a/b").json()["error_code"] == 336005


def test_unknown_paths_get_error_3(http: httpx.Client) -> None:
    """A path Baidu does not serve gets error 3 'Unsupported openapi method'."""
    assert http.post("/rpc/2.0/nope").json()["error_code"] == 3


def test_invalid_json_is_checked_after_auth(http: httpx.Client, token: str) -> None:
    """A bad token is reported before a bad body (auth comes first)."""
    body = http.post(CHAT, params={"access_token": "bad"}, content=b"{").json()
    assert body["error_code"] == 110
    body = http.post(CHAT, params={"access_token": token}, content=b"{").json()
    assert body["error_code"] == 336002


# -- replies ------------------------------------------------------------------------------


def test_single_round_reply_has_the_seeds_fields_in_order(http: httpx.Client, token: str) -> None:
    """The API page's single-round request gets exactly its example's fields, types and usage."""
    before = int(time.time())
    response = chat(http, token, ask())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == SEED_FIELDS
    assert re.fullmatch(r"as-[a-z0-9]{10}", body["id"])
    assert body["object"] == "chat.completion"
    assert before <= body["created"] <= time.time() + 1
    assert body["is_truncated"] is False
    assert body["need_clear_history"] is False
    assert list(body["usage"]) == ["prompt_tokens", "completion_tokens", "total_tokens"]
    words = len(body["result"].split())
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": words,
        "total_tokens": 5 + words,
    }


def test_multi_round_reply_counts_every_message(http: httpx.Client, token: str) -> None:
    """The seed's three-message request gets the same fields; prompt tokens cover all."""
    messages = [
        {"role": "user", "content": SEED_QUESTION},
        {"role": "assistant", "content": SEED_ANSWER},
        {"role": "user", "content": "Please introduce Beijing"},
    ]
    body = chat(http, token, {"messages": messages}).json()
    assert list(body) == SEED_FIELDS
    assert body["usage"]["prompt_tokens"] == 5 + len(SEED_ANSWER.split()) + 3
    assert "Please introduce Beijing" in body["result"]


def test_replies_are_deterministic_per_last_question(http: httpx.Client, token: str) -> None:
    """The same last question gives the same text; another question gives another."""
    first = chat(http, token, ask("What is MPT?")).json()
    again = chat(http, token, ask("What is MPT?", temperature=0.5)).json()
    other = chat(http, token, ask("What is Qianfan?")).json()
    assert first["result"] == again["result"]
    assert first["id"] != again["id"]
    assert other["result"] != first["result"]


def test_cjk_characters_count_as_tokens(http: httpx.Client, token: str) -> None:
    """CJK text has no spaces, so each CJK character counts as one prompt token."""
    body = chat(http, token, ask("介绍一下长城 please")).json()
    assert body["usage"]["prompt_tokens"] == 7


def test_stream_reply_has_the_seeds_chunk_fields(http: httpx.Client, token: str) -> None:
    """A stream is text/event-stream 'data: {json}' lines shaped like the API page's example."""
    response = chat(http, token, ask(stream=True))
    assert response.headers["content-type"] == "text/event-stream"
    chunks = sse_chunks(response)
    assert len(chunks) == 3
    for chunk in chunks:
        assert list(chunk) == SEED_STREAM_FIELDS
    assert [c["sentence_id"] for c in chunks] == [0, 1, 2]
    assert [c["is_end"] for c in chunks] == [False, False, True]
    assert len({c["id"] for c in chunks}) == 1
    full = chat(http, token, ask()).json()
    assert "".join(c["result"] for c in chunks) == full["result"]
    for chunk in chunks[:-1]:
        assert chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}
    assert chunks[-1]["usage"] == full["usage"]


def test_stream_chunks_can_change_at_runtime(emulator: Emulator, http: httpx.Client) -> None:
    """set_stream_chunks(50) gives 50-chunk streams with the same text; reset() restores 3."""
    token = emulator.issue_token()
    emulator.set_stream_chunks(50)
    assert emulator.stream_chunks == 50
    chunks = sse_chunks(chat(http, token, ask(stream=True)))
    assert [c["sentence_id"] for c in chunks] == list(range(50))
    assert all(c["result"] for c in chunks)
    assert "".join(c["result"] for c in chunks) == chat(http, token, ask()).json()["result"]
    emulator.reset()
    assert emulator.stream_chunks == 3


def test_chunk_delay_spaces_the_chunks(emulator: Emulator, http: httpx.Client) -> None:
    """With chunk_delay, a 3-chunk stream takes at least two delays."""
    token = emulator.issue_token()
    emulator.set_chunk_delay(0.1)
    started = time.monotonic()
    assert len(sse_chunks(chat(http, token, ask(stream=True)))) == 3
    assert time.monotonic() - started >= 0.2


def test_a_failed_stream_request_gets_a_plain_json_error(http: httpx.Client) -> None:
    """With stream true and a bad token, the answer is a JSON error body, not a stream."""
    response = chat(http, "bad", ask(stream=True))
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error_code"] == 110


def test_split_text_always_rebuilds_the_text() -> None:
    """Cutting an answer into 1..80 pieces gives exactly that many pieces and the text."""
    text = _replies.reply_text(SEED_QUESTION)
    for parts in range(1, 81):
        pieces = _replies.split_text(text, parts)
        assert len(pieces) == parts
        assert "".join(pieces) == text
    assert _replies.split_text("ab", 4) == ("", "a", "", "b")


@pytest.mark.anyio
async def test_async_clients_on_both_backends(emulator: Emulator) -> None:
    """An httpx.AsyncClient on asyncio and on trio gets replies and streams."""
    token = emulator.issue_token()
    async with httpx.AsyncClient(base_url=emulator.base_url) as client:
        reply = await client.post(CHAT, params={"access_token": token}, json=ask())
        lines = []
        async with client.stream(
            "POST", CHAT, params={"access_token": token}, json=ask(stream=True)
        ) as response:
            async for line in response.aiter_lines():
                if line:
                    lines.append(json.loads(line.removeprefix("data: ")))
    assert "".join(c["result"] for c in lines) == reply.json()["result"]


# -- state: counters and records ------------------------------------------------------------


def test_counters_track_requests_errors_and_tokens(emulator: Emulator, http: httpx.Client) -> None:
    """Stats counts token and chat requests, streams, errors, issued tokens and faults."""
    assert attrs.evolve(emulator.stats, open_connections=0) == EmulatorStats()
    token = get_token(
        http,
        grant_type="client_credentials",
        client_id=emulator.api_key,
        client_secret=emulator.secret_key,
    ).json()["access_token"]
    get_token(http, grant_type="client_credentials", client_id="nobody")
    chat(http, token, ask())
    chat(http, token, ask(stream=True))
    chat(http, "bad", ask())
    emulator.inject(Fault.error(2))
    chat(http, token, ask())
    stats = emulator.stats
    assert stats.token_requests == 2
    assert stats.chat_requests == 4
    assert stats.stream_requests == 1
    assert stats.error_responses == 3
    assert stats.faults_fired == 1
    assert stats.tokens_issued == 1
    assert stats.connections_seen == 1
    assert stats.pending_faults == 0


def test_open_connections_follows_the_clients_pool(emulator: Emulator) -> None:
    """open_connections counts live TCP connections; connections_seen counts distinct ones."""
    token = emulator.issue_token()
    clients = [httpx.Client(base_url=emulator.base_url) for _ in range(3)]
    for client in clients:
        chat(client, token, ask())
        chat(client, token, ask())
    assert wait_until(lambda: emulator.stats.open_connections == 3)
    assert emulator.stats.connections_seen == 3
    for client in clients:
        client.close()
    assert wait_until(lambda: emulator.stats.open_connections == 0)


def test_requests_are_recorded_as_received(emulator: Emulator, http: httpx.Client) -> None:
    """emu.requests keeps method, path, query, lower-case headers and the parsed body."""
    token = emulator.issue_token()
    http.post(CHAT, params={"access_token": token}, json=ask(), headers={"X-Trace": "t1"})
    http.post(CHAT, params={"access_token": token}, content=b"not json")
    first, second = emulator.requests
    assert isinstance(first, RecordedRequest)
    assert (first.kind, first.method, first.path) == ("chat", "POST", CHAT)
    assert first.query == {"access_token": token}
    assert first.headers["x-trace"] == "t1"
    assert first.headers["content-type"] == "application/json"
    assert first.body == ask()
    assert second.body == b"not json"
    assert second.raw_body == b"not json"


def test_reset_clears_faults_counters_records_and_tokens(
    emulator: Emulator, http: httpx.Client
) -> None:
    """After reset() nothing is pending, counted or recorded, and old tokens are dead."""
    token = emulator.issue_token()
    chat(http, token, ask())
    emulator.inject(Fault.drop(), times=3)
    emulator.reset()
    assert emulator.requests == []
    assert emulator.stats.chat_requests == 0
    assert emulator.stats.pending_faults == 0
    assert chat(http, token, ask()).json()["error_code"] == 110


# -- HTTP controls -------------------------------------------------------------------------


def test_control_stats_and_requests(emulator: Emulator, http: httpx.Client) -> None:
    """GET /_emulator/stats mirrors emu.stats; /requests lists them with secrets redacted."""
    token = emulator.issue_token()
    chat(http, token, ask())
    assert http.get("/_emulator/stats").json() == emulator.stats.to_dict()
    (record,) = http.get("/_emulator/requests").json()
    assert record["path"] == CHAT
    assert record["query"] == {"access_token": "<redacted>"}
    assert record["body"] == ask()
    assert emulator.stats.chat_requests == 1  # the controls are not counted


def test_control_faults_queue_and_clear(emulator: Emulator, http: httpx.Client) -> None:
    """POST /_emulator/faults queues one fault or a list (with times); DELETE clears."""
    token = emulator.issue_token()
    answer = http.post("/_emulator/faults", json={"kind": "error", "code": 18, "times": 2})
    assert answer.json() == {"ok": True, "pending_faults": 2}
    http.post(
        "/_emulator/faults",
        json=[{"kind": "http", "status": 429, "headers": {"Retry-After": "3"}}, {"kind": "flag"}],
    )
    assert chat(http, token, ask()).json()["error_code"] == 18
    assert chat(http, token, ask()).json()["error_code"] == 18
    limited = chat(http, token, ask())
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    http.delete("/_emulator/faults")
    assert emulator.stats.pending_faults == 0
    assert chat(http, token, ask()).json()["need_clear_history"] is False


def test_control_tokens_reset_and_config(emulator: Emulator, http: httpx.Client) -> None:
    """/_emulator/tokens mints, /expire and /revoke kill, /config and /reset steer."""
    token = http.post("/_emulator/tokens").json()["access_token"]
    assert "result" in chat(http, token, ask()).json()
    http.post("/_emulator/tokens/expire")
    assert chat(http, token, ask()).json()["error_code"] == 111
    token = http.post("/_emulator/tokens", json={"ttl": 60}).json()["access_token"]
    http.post("/_emulator/tokens/revoke")
    assert chat(http, token, ask()).json()["error_code"] == 110
    token = emulator.issue_token()
    config = http.post("/_emulator/config", json={"stream_chunks": 5, "chunk_delay": 0})
    assert config.json() == {"stream_chunks": 5, "chunk_delay": 0.0}
    assert len(sse_chunks(chat(http, token, ask(stream=True)))) == 5
    assert http.get("/_emulator/config").json()["stream_chunks"] == 5
    assert http.post("/_emulator/reset").json() == {"ok": True}
    assert emulator.stream_chunks == 3
    assert emulator.stats.chat_requests == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_emulator/faults", {"kind": "explode"}, 400),
        ("POST", "/_emulator/faults", {"kind": "http", "status": 99}, 400),
        ("POST", "/_emulator/faults", {"kind": "error", "code": 1, "times": 0}, 400),
        ("POST", "/_emulator/faults", [1], 400),
        ("POST", "/_emulator/config", {"stream_chunks": 0}, 400),
        ("POST", "/_emulator/config", {"colour": "red"}, 400),
        ("GET", "/_emulator/nothing", None, 404),
        ("GET", "/_emulator/reset", None, 405),
    ],
)
def test_control_refusals(
    emulator: Emulator, http: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    """Bad control requests get 4xx with an error message and change nothing."""
    response = http.request(method, path, json=body)
    assert response.status_code == status
    assert response.json()["error"]
    assert emulator.stats.pending_faults == 0
    assert emulator.stream_chunks == 3
