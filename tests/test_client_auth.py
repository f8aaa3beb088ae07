"""Access tokens (fetch, share, refresh), AK/SK signing, and secrets kept secret."""

from __future__ import annotations

import logging

import anyio
import pytest

import mpt_async
from mpt_async.testing import Emulator, Fault

from .clientkit import HI, aksk_client, chat_requests, token_client, until

pytestmark = pytest.mark.anyio


async def test_hundred_concurrent_first_calls_fetch_one_token(emulator: Emulator) -> None:
    """100 calls started at once on a fresh client make exactly one token request."""
    async with token_client(emulator) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(client.chat, HI)
    assert emulator.stats.token_requests == 1
    assert emulator.stats.chat_requests == 100


async def test_token_invalidated_mid_run_is_refreshed_once(emulator: Emulator) -> None:
    """When every token is revoked mid-run, 50 concurrent calls cause one refresh and all pass."""
    results: list[str] = []

    async def call(client: mpt_async.Client) -> None:
        results.append((await client.chat(HI)).result)

    async with token_client(emulator, max_retries=0) as client:
        await client.chat(HI)
        emulator.revoke_tokens()
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(call, client)
    assert len(results) == 50
    assert emulator.stats.token_requests == 2


@pytest.mark.parametrize("expire", [True, False], ids=["111-expired", "110-revoked"])
async def test_refused_token_is_replaced_and_replayed(emulator: Emulator, expire: bool) -> None:
    """110/111 refresh the token and replay once, which is not counted as a retry."""
    async with token_client(emulator, max_retries=0) as client:
        await client.chat(HI)
        emulator.expire_tokens() if expire else emulator.revoke_tokens()
        reply = await client.chat(HI)
    assert reply.result
    assert emulator.stats.token_requests == 2
    first, refused, replay = chat_requests(emulator)
    assert first.query["access_token"] == refused.query["access_token"]
    assert replay.query["access_token"] != refused.query["access_token"]


async def test_refused_token_in_a_stream_request(emulator: Emulator) -> None:
    """A stream request answered 110 refreshes and then streams normally."""
    async with token_client(emulator, max_retries=0) as client:
        await client.chat(HI)
        emulator.revoke_tokens()
        async with client.chat_stream(HI) as stream:
            final = await stream.get_final_response()
    assert final.result
    assert emulator.stats.token_requests == 2


async def test_refresh_that_does_not_cure_raises(emulator: Emulator) -> None:
    """If the replay is refused again, AuthenticationError is raised (no loop)."""
    emulator.inject(Fault.error(110), times=3)
    async with token_client(emulator) as client:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await client.chat(HI)
    assert info.value.error_code == 110
    assert emulator.stats.chat_requests == 2
    assert emulator.stats.token_requests == 2


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_is_refreshed_before_it_expires() -> None:
    """A token is replaced once four fifths of its life are gone, before the service refuses it."""
    with Emulator(token_ttl=1000) as emu:
        async with token_client(emu) as client:
            # The client's clock moves by hand; the service's does not, so no token expires.
            assert client._request_loop.tokens is not None
            clock = client._request_loop.tokens._clock = _Clock()
            await client.chat(HI)
            clock.now += 750  # within the token's first four fifths: kept
            await client.chat(HI)
            assert emu.stats.token_requests == 1
            clock.now += 100  # past them, well before expiry: replaced
            await client.chat(HI)
        assert emu.stats.token_requests == 2
        assert emu.stats.error_responses == 0
        first, kept, replaced = (r.query["access_token"] for r in chat_requests(emu))
        assert first == kept != replaced


async def test_fixed_token_is_never_refreshed(emulator: Emulator) -> None:
    """A fixed token answered 110 raises AuthenticationError without a token request."""
    async with mpt_async.Client(auth="24.not-a-real-token", base_url=emulator.base_url) as client:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await client.chat(HI)
    assert info.value.error_code == 110
    assert emulator.stats.token_requests == 0
    assert emulator.stats.chat_requests == 1


async def test_fixed_token_is_used_as_is(emulator: Emulator) -> None:
    """A valid fixed token works and goes in the access_token parameter."""
    token = emulator.issue_token()
    auth = mpt_async.FixedTokenAuth(token)
    async with mpt_async.Client(auth=auth, base_url=emulator.base_url) as client:
        assert (await client.chat(HI)).result
    assert chat_requests(emulator)[0].query["access_token"] == token


@pytest.mark.parametrize(
    ("good_key", "words"),
    [(False, "unknown client id"), (True, "Client authentication failed")],
)
async def test_token_endpoint_refusal(emulator: Emulator, good_key: bool, words: str) -> None:
    """Wrong API Key or Secret Key raise AuthenticationError with the server's reason."""
    api_key = emulator.api_key if good_key else "wrong-key"
    auth = mpt_async.AccessTokenAuth(api_key, "wrong-secret")
    async with mpt_async.Client(auth=auth, base_url=emulator.base_url) as client:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await client.chat(HI)
    assert info.value.error == "invalid_client"
    assert words in str(info.value)
    assert "wrong-secret" not in str(info.value)
    assert emulator.stats.chat_requests == 0


async def test_concurrent_calls_share_one_failed_fetch(emulator: Emulator) -> None:
    """30 calls waiting on one refused token fetch all fail from that single request."""
    auth = mpt_async.AccessTokenAuth("wrong-key", "wrong-secret")
    failures: list[BaseException] = []

    async def call(client: mpt_async.Client) -> None:
        try:
            await client.chat(HI)
        except mpt_async.AuthenticationError as exc:
            failures.append(exc)

    async with mpt_async.Client(auth=auth, base_url=emulator.base_url) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(call, client)
    assert len(failures) == 30
    assert len({id(f) for f in failures}) == 30  # each task raises its own error object
    assert emulator.stats.token_requests == 1


async def test_token_endpoint_outage_is_retried(emulator: Emulator) -> None:
    """A 500 from the token endpoint is retried like any other 5xx."""
    emulator.inject(Fault.http(500, target="token"))
    async with token_client(emulator) as client:
        assert (await client.chat(HI)).result
    assert emulator.stats.token_requests == 2


async def test_aksk_is_accepted_and_signs_the_wire_host(emulator: Emulator) -> None:
    """AK/SK calls pass the emulator's signature check, signing host:port as sent."""
    async with aksk_client(emulator) as client:
        reply = await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            await stream.get_final_response()
    assert reply.result
    request = chat_requests(emulator)[0]
    auth = request.headers["authorization"]
    assert auth.startswith(f"bce-auth-v1/{emulator.access_key}/")
    assert auth.split("/")[4] == "content-type;host;x-bce-date"
    assert request.headers["host"] == emulator.base_url.removeprefix("http://")
    assert "access_token" not in request.query
    assert emulator.stats.token_requests == 0


async def test_aksk_wrong_secret_is_refused(emulator: Emulator) -> None:
    """A wrong IAM secret gets error 14 as an AuthenticationError, not retried."""
    auth = mpt_async.AKSKAuth(emulator.access_key, "not-the-secret")
    async with mpt_async.Client(auth=auth, base_url=emulator.base_url, api="v1") as client:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await client.chat(HI)
    assert info.value.error_code == 14
    assert emulator.stats.chat_requests == 1


async def test_aksk_retry_is_signed_afresh(emulator: Emulator) -> None:
    """Each attempt carries a new x-bce-date and a signature over it, never a stale one."""
    emulator.inject(Fault.error(336100))
    # Wait past a second boundary so the two attempts cannot share a timestamp.
    backoff = mpt_async.Backoff(initial=1.05, maximum=1.05, jitter=0)
    async with aksk_client(emulator, backoff=backoff) as client:
        reply = await client.chat(HI)
    assert reply.result
    first, second = chat_requests(emulator)
    assert first.headers["x-bce-date"] != second.headers["x-bce-date"]
    assert first.headers["authorization"] != second.headers["authorization"]
    assert second.headers["x-bce-date"] in second.headers["authorization"]


async def test_secrets_stay_out_of_repr_errors_and_logs(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """No secret key, access token or signature appears in repr, errors or DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    emulator.inject(Fault.error(336100))
    emulator.inject(Fault.error(110))
    secrets: set[str] = {emulator.secret_key, emulator.secret_access_key}
    async with token_client(emulator) as client:
        text = repr(client)
        await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            await stream.get_final_response()
    async with aksk_client(emulator) as client:
        text += repr(client)
        await client.chat(HI)
    bad = mpt_async.AccessTokenAuth(emulator.api_key, emulator.secret_key + "x")
    async with mpt_async.Client(auth=bad, base_url=emulator.base_url) as client:
        with pytest.raises(mpt_async.AuthenticationError) as info:
            await client.chat(HI)
        text += str(info.value) + repr(info.value) + repr(client)
    for request in emulator.requests:
        if token := request.query.get("access_token"):
            secrets.add(token)
        if signature := request.headers.get("authorization"):
            secrets.add(signature.rsplit("/", 1)[-1])
    assert len(secrets) >= 4
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "HTTP Request" in logged  # httpx's own INFO line was captured...
    assert "access_token=***" in logged  # ...with the token redacted
    assert "refreshing" in logged
    assert "retry 1 of 2" in logged
    for secret in secrets:
        assert secret not in text
        assert secret not in logged


async def test_cancelled_token_fetch_lets_a_waiter_fetch(emulator: Emulator) -> None:
    """If the task fetching the token is cancelled, a waiting call fetches and succeeds."""
    emulator.inject(Fault.stall(600, target="token"))  # ends when the client hangs up
    results: list[str] = []
    fetching = anyio.CancelScope()

    async def fetcher(client: mpt_async.Client) -> None:
        with fetching:
            await client.chat(HI)

    async def waiter(client: mpt_async.Client) -> None:
        results.append((await client.chat(HI)).result)

    async with token_client(emulator) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetcher, client)
            await until(lambda: emulator.stats.token_requests == 1)  # the fetch is stalled
            tg.start_soon(waiter, client)
            await anyio.wait_all_tasks_blocked()  # the waiter waits for that fetch
            assert emulator.stats.token_requests == 1
            fetching.cancel()
    assert fetching.cancelled_caught
    assert len(results) == 1
    assert emulator.stats.token_requests == 2
    assert emulator.stats.chat_requests == 1
