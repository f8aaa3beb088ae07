"""The emulator survives its users: bounded settings and records, 4xx for bad input.

Connections cannot be held open forever either. Everything goes over real sockets.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpt_async.testing import Emulator, Fault
from mpt_async.testing._records import RECORD_BYTES, Records

CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/mpt-30b-instruct"
HI = {"messages": [{"role": "user", "content": "hi"}]}

#: The controls take only bodies declared JSON (anything else is a 403).
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "body",
    [
        {"stream_chunks": 100_000_000},
        {"stream_chunks": 1e8},
        {"stream_chunks": 10_001},
        {"chunk_delay": 1e9},
        {"chunk_delay": 61},
        {"qps": 1e300},
        {"rpm": 10**20},
        {"tpm": 10**20},
        {"rate_window": 1e9},
        {"rate_window": 0},
    ],
)
def test_settings_out_of_bounds_get_400(
    http: httpx.Client, emulator: Emulator, body: dict[str, Any]
) -> None:
    """POST /_emulator/config refuses a setting beyond its bound, and changes nothing."""
    before = http.get("/_emulator/config").json()
    answer = http.post("/_emulator/config", json=body)
    assert answer.status_code == 400
    assert next(iter(body)) in answer.json()["error"]
    assert http.get("/_emulator/config").json() == before


def test_the_largest_stream_is_served(http: httpx.Client, emulator: Emulator, token: str) -> None:
    """stream_chunks at its bound (10,000) still streams, one data line per chunk."""
    assert http.post("/_emulator/config", json={"stream_chunks": 10_000}).status_code == 200
    body = {**HI, "stream": True}
    answer = http.post(f"{CHAT}?access_token={token}", json=body)
    assert answer.text.count("data: ") == 10_000


@pytest.mark.parametrize("ttl", [b"1e999", b"-1e999", b"1e300", b"-1e300", b"1" + b"0" * 5000])
def test_odd_token_ttls_get_400(http: httpx.Client, emulator: Emulator, ttl: bytes) -> None:
    """POST /_emulator/tokens with an infinite, huge or 5000-digit ttl answers 400."""
    answer = http.post("/_emulator/tokens", content=b'{"ttl": ' + ttl + b"}", headers=JSON)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert emulator.stats.tokens_issued == 0


def test_a_negative_ttl_mints_an_expired_token(http: httpx.Client, emulator: Emulator) -> None:
    """A small negative ttl stays allowed: the token is born expired (error 111)."""
    token = http.post("/_emulator/tokens", json={"ttl": -5}).json()["access_token"]
    assert http.post(f"{CHAT}?access_token={token}", json=HI).json()["error_code"] == 111


@pytest.mark.parametrize("expiration", ["\u00b2", "1" * 5000, "\u0661\u0668\u0660\u0660", "-5"])
def test_odd_signature_expirations_are_refused_not_500(
    http: httpx.Client, emulator: Emulator, expiration: str
) -> None:
    """An expiration of '²', of 5000 digits or of Arabic digits is a failed signature."""
    authorization = (
        f"bce-auth-v1/{emulator.access_key}/2026-01-01T00:00:00Z/{expiration}/host/" + "0" * 64
    )
    answer = http.post(CHAT, json=HI, headers={"Authorization": authorization.encode()})
    assert answer.status_code == 200
    assert answer.json()["error_code"] == 14  # IAM certification failed


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "http", "status": 502, "headers": {"X-Bad": "a\r\nSet-Cookie: x=1"}},
        {"kind": "http", "status": 502, "headers": {"X-Bad": "a\nb"}},
        {"kind": "http", "status": 502, "headers": {"X-Euro": "\u20ac"}},
        {"kind": "http", "status": 502, "headers": {"Bad Name": "x"}},
        {"kind": "http", "status": 502, "content_type": "text/html\r\nX-Evil: 1"},
        {"kind": "http", "status": 502, "content_type": "\u20ac"},
        {"kind": "error", "code": 10**30},
        {"kind": "stall", "seconds": 1e9},
        {"kind": "stall", "seconds": 1, "after": 10**9},
        {"kind": "drop_after", "after": 1.5},
        {"kind": "flag", "ban_round": 10**30},
        {"kind": "drop", "times": 10**9},
    ],
)
def test_faults_that_could_not_fire_are_refused_when_created(
    http: httpx.Client, emulator: Emulator, fault: dict[str, Any]
) -> None:
    """Fault headers with CRLF or non-latin-1 text, and values beyond bounds, get 400 at once."""
    answer = http.post("/_emulator/faults", json=fault)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert emulator.pending_faults == []


def test_fault_headers_are_checked_in_python_too() -> None:
    """Fault.http() refuses a header value that cannot go on the wire."""
    with pytest.raises(ValueError, match="latin-1"):
        Fault.http(502, headers={"X-Euro": "\u20ac"})
    with pytest.raises(ValueError, match="one line"):
        Fault.http(502, headers={"X-Split": "a\r\nb"})


def test_odd_control_bodies_get_4xx_never_500(http: httpx.Client, emulator: Emulator) -> None:
    """Deep nesting, NaN, a non-UTF-8 body and wrong shapes are 400s."""
    bodies = [b"[" * 100_000, b'{"stream_chunks": NaN}', b"\xff\xfe", b'"just a string"', b"[1]"]
    for path in ("/_emulator/config", "/_emulator/faults", "/_emulator/replies"):
        for body in bodies:
            answer = http.post(path, content=body, headers=JSON)
            assert answer.status_code == 400, (path, body[:20], answer.text)


# -- what is recorded ---------------------------------------------------------------------


def test_records_stay_within_their_memory_budget() -> None:
    """With max_record_bytes, big bodies push the oldest records out; the total stays bounded."""
    budget = 2_000_000
    with Emulator(max_record_bytes=budget) as emu, httpx.Client(timeout=10) as http:
        for n in range(6):
            content = json.dumps({"messages": [{"role": "user", "content": str(n) * 300_000}]})
            http.post(emu.chat_url(), content=content)
        kept = emu.requests
        assert sum(Records.cost(r) for r in kept) <= budget
        assert 1 <= len(kept) < 6
        assert kept[-1].body["messages"][0]["content"][0] == "5"  # the newest is kept


def test_a_body_beyond_the_budget_is_not_kept() -> None:
    """One request costing more than the whole budget is answered but not recorded."""
    with Emulator(max_record_bytes=100_000) as emu, httpx.Client(timeout=10) as http:
        http.post(emu.chat_url(), content=b"x" * 200_000)
        http.post(emu.chat_url(), content=b"y")
        assert [r.raw_body for r in emu.requests] == [b"y"]
        assert emu.stats.chat_requests == 2


def test_the_default_budget_is_64_mib() -> None:
    """The documented default: 64 MiB of records, 10,000 of them."""
    assert RECORD_BYTES == 64 * 1024 * 1024
    records = Records(3, 10_000)
    assert (records.max_records, records.max_bytes) == (3, 10_000)


# -- connections ------------------------------------------------------------------------


@pytest.fixture
def quick() -> Iterator[Emulator]:
    """An emulator that gives a connection half a second for its next request."""
    with Emulator(idle_timeout=0.5, chunk_delay=0.25, stream_chunks=4) as emu:
        yield emu


def connect(emu: Emulator) -> socket.socket:
    return socket.create_connection(("127.0.0.1", emu.port), timeout=20)


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes (True), or the socket's own timeout passes (False)."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_an_idle_connection_is_closed(quick: Emulator) -> None:
    """A connection that never sends a byte is closed after idle_timeout."""
    with connect(quick) as sock:
        assert closed_by_server(sock)


def test_a_trickled_request_is_closed(quick: Emulator) -> None:
    """A request head sent one byte at a time does not hold the connection open."""
    head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'p' * 200}\r\n".encode()
    with connect(quick) as sock:
        sock.settimeout(0.05)
        for byte in head:  # 0.05 s per byte: about 12 s in all, far beyond the deadline
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            pytest.fail("the server kept a trickled request open")


def test_a_half_sent_body_is_closed(quick: Emulator) -> None:
    """A request that promises 100 bytes of body and sends 10 is closed, unanswered."""
    head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n".encode()
    with connect(quick) as sock:
        sock.sendall(head + b"0123456789")
        assert closed_by_server(sock)
    assert quick.stats.chat_requests == 0


def test_a_slow_stream_is_not_cut(quick: Emulator) -> None:
    """The deadline covers waiting for a request, not a response in progress."""
    token = quick.issue_token()
    with httpx.Client(timeout=20) as http:
        body = {**HI, "stream": True}
        answer = http.post(f"{quick.chat_url()}?access_token={token}", json=body)
        assert answer.text.count("data: ") == 4  # 0.75 s of chunks > the 0.5 s deadline


def test_bad_idle_timeouts_are_refused() -> None:
    """idle_timeout is a positive number of seconds, at most a day."""
    for value in (0, -1, 1e9, float("nan")):
        with pytest.raises(ValueError, match="idle_timeout"):
            Emulator(idle_timeout=value)


def test_a_connection_outlives_the_deadline_between_quick_requests() -> None:
    """Each answer restarts the deadline, so a busy keep-alive connection stays open."""
    with Emulator(idle_timeout=1.0) as emu, httpx.Client(timeout=20) as http:
        token = emu.issue_token()
        started = time.monotonic()
        for _ in range(12):  # over 1.2 s in all, beyond the deadline; 0.1 s apart, within it
            http.post(f"{emu.chat_url()}?access_token={token}", json=HI)
            time.sleep(0.1)
        assert time.monotonic() - started > 1.0
        assert emu.stats.connections_seen == 1
