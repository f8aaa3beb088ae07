"""Token stores: one access token shared by clients, runs and processes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import mpt_async
from mpt_async import _token_file
from mpt_async.__main__ import main
from mpt_async._cli import service as cli_service
from mpt_async._token_store import stored_token, token_key, token_seal
from mpt_async.testing import Emulator, Fault

from .clientkit import HI, chat_requests, token_client
from .hostile import SECRET_KEY, Wire, hostile, json_reply

anyio_only = pytest.mark.anyio


def _key(emu: Emulator) -> str:
    return token_key(emu.base_url, emu.api_key, emu.secret_key)


def _sealed(
    emu: Emulator, value: str, expires_at: float, obtained_at: float
) -> mpt_async.StoredToken:
    """A token as the emulator's credentials would have stored it."""
    token = mpt_async.StoredToken(value, expires_at, obtained_at)
    return token_seal(emu.secret_key).seal(_key(emu), token)


def _tokens_used(emu: Emulator) -> list[str]:
    return [r.query["access_token"] for r in chat_requests(emu)]


# -- sharing in one process -----------------------------------------------------------


@anyio_only
async def test_two_clients_sharing_a_memory_store_fetch_one_token(emulator: Emulator) -> None:
    """Two separate clients on one MemoryTokenStore, called at once, make one token request."""
    store = mpt_async.MemoryTokenStore()
    async with (
        token_client(emulator, token_store=store) as a,
        token_client(emulator, token_store=store) as b,
    ):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(a.chat, HI)
                tg.start_soon(b.chat, HI)
    assert emulator.stats.token_requests == 1
    assert emulator.stats.chat_requests == 20
    assert len(set(_tokens_used(emulator))) == 1


@anyio_only
async def test_usable_stored_token_is_used_without_a_fetch(emulator: Emulator) -> None:
    """A valid token already in the store is used as is: no token request at all."""
    store = mpt_async.MemoryTokenStore()
    token, now = emulator.issue_token(), time.time()
    await store.save(_key(emulator), _sealed(emulator, token, now + 3600, now))
    async with token_client(emulator, token_store=store) as client:
        await client.chat(HI)
    assert emulator.stats.token_requests == 0
    assert _tokens_used(emulator) == [token]


@anyio_only
async def test_stored_token_due_for_refresh_is_replaced(emulator: Emulator) -> None:
    """A stored token inside its refresh margin is not used; a new one is fetched and saved."""
    store = mpt_async.MemoryTokenStore()
    old, now = emulator.issue_token(), time.time()
    # A 1000-second life with 50 seconds left: past the margin (a fifth of the life).
    await store.save(_key(emulator), _sealed(emulator, old, now + 50, now - 950))
    async with token_client(emulator, token_store=store) as client:
        await client.chat(HI)
    assert emulator.stats.token_requests == 1
    stored = await store.load(_key(emulator))
    assert stored is not None
    assert stored.value != old
    assert _tokens_used(emulator) == [stored.value]


@anyio_only
async def test_refused_token_is_replaced_in_the_store(emulator: Emulator) -> None:
    """After a 110, the new token replaces the refused one in the store."""
    store = mpt_async.MemoryTokenStore()
    async with token_client(emulator, token_store=store, max_retries=0) as client:
        await client.chat(HI)
        emulator.revoke_tokens()
        await client.chat(HI)
    first, refused, replay = _tokens_used(emulator)
    assert first == refused != replay
    stored = await store.load(_key(emulator))
    assert stored is not None
    assert stored.value == replay
    assert emulator.stats.token_requests == 2


@anyio_only
async def test_late_refusal_adopts_the_token_another_client_saved(emulator: Emulator) -> None:
    """A client refused after another already refreshed uses the stored token: no 3rd fetch."""
    store = mpt_async.MemoryTokenStore()
    async with (
        token_client(emulator, token_store=store, max_retries=0) as a,
        token_client(emulator, token_store=store, max_retries=0) as b,
    ):
        await a.chat(HI)
        await b.chat(HI)
        emulator.revoke_tokens()
        await a.chat(HI)  # refused, refreshed, saved
        await b.chat(HI)  # refused with the old token; finds a's new one in the store
    assert emulator.stats.token_requests == 2
    tokens = _tokens_used(emulator)
    assert tokens[-1] == tokens[-3] != tokens[-2]


class _BrokenStore:
    """A store whose every load and save fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def load(self, key: str) -> mpt_async.StoredToken | None:
        self.calls += 1
        raise RuntimeError("store is down")

    async def save(self, key: str, token: mpt_async.StoredToken) -> None:
        self.calls += 1
        raise OSError("disk full")

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        yield


@anyio_only
async def test_failing_store_never_fails_a_call(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A custom store that raises is logged and bypassed; the call still succeeds."""
    caplog.set_level(logging.WARNING, logger="mpt_async")
    store = _BrokenStore()
    assert isinstance(store, mpt_async.TokenStore)
    async with token_client(emulator, token_store=store) as client:
        assert (await client.chat(HI)).result
    assert store.calls == 3  # load, load again under the lock, save
    logged = caplog.text
    assert "store is down" in logged
    assert "disk full" in logged
    assert _tokens_used(emulator)[0] not in logged


# -- on disk --------------------------------------------------------------------------


@anyio_only
async def test_file_store_is_private_atomic_and_survives_a_new_client(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The file is 0600 in a 0700 dir, no temp file is left, and a new client reuses the token."""
    path = tmp_path / "cache" / "tokens.json"
    async with token_client(emulator, token_store=mpt_async.FileTokenStore(path)) as client:
        await client.chat(HI)
    async with token_client(emulator, token_store=mpt_async.FileTokenStore(path)) as client:
        await client.chat(HI)
    assert emulator.stats.token_requests == 1
    assert len(set(_tokens_used(emulator))) == 1
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]
    text = path.read_text()
    assert emulator.secret_key not in text
    assert _tokens_used(emulator)[0] in json.loads(text)["tokens"][_key(emulator)]["access_token"]


@anyio_only
@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not json", b"", b"[1, 2]", b'{"version": 1, "tokens": {"k": 5, "j": {}}}'],
    ids=["binary", "empty", "wrong-shape", "bad-entries"],
)
async def test_corrupt_file_is_treated_as_empty_and_overwritten(
    emulator: Emulator, tmp_path: Path, content: bytes
) -> None:
    """An unreadable token file is ignored, a token fetched, and the file rewritten whole."""
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    store = mpt_async.FileTokenStore(path)
    async with token_client(emulator, token_store=store) as client:
        await client.chat(HI)
    assert emulator.stats.token_requests == 1
    document = json.loads(path.read_bytes())
    assert list(document["tokens"]) == [_key(emulator)]
    stored = await store.load(_key(emulator))
    assert stored is not None
    assert stored.value == _tokens_used(emulator)[0]


@anyio_only
async def test_save_keeps_other_keys_and_drops_expired_ones(tmp_path: Path) -> None:
    """Saving one key keeps the others' live tokens and prunes run-out ones."""
    store = mpt_async.FileTokenStore(tmp_path / "tokens.json")
    now = time.time()
    await store.save("live", mpt_async.StoredToken("24.live", now + 600, now))
    await store.save("dead", mpt_async.StoredToken("24.dead", now - 1, now - 600))
    await store.save("new", mpt_async.StoredToken("24.new", now + 600, now))
    assert await store.load("dead") is None
    live = await store.load("live")
    assert live is not None
    assert live.value == "24.live"
    assert live.expires_at == pytest.approx(now + 600)


def test_processes_starting_at_once_fetch_one_token(emulator: Emulator, tmp_path: Path) -> None:
    """Four processes (asyncio and trio) sharing a token file make one token request."""
    emulator.inject(Fault.stall(0.3, target="token"))  # keep the lock held while they arrive
    code = (
        "import sys, anyio, mpt_async\n"
        "async def main(path, url, ak, sk):\n"
        "    auth = mpt_async.AccessTokenAuth(ak, sk)\n"
        "    store = mpt_async.FileTokenStore(path)\n"
        "    async with mpt_async.Client(auth=auth, base_url=url, token_store=store) as c:\n"
        "        await c.chat([{'role': 'user', 'content': 'hi'}])\n"
        "anyio.run(main, *sys.argv[1:5], backend=sys.argv[5])\n"
    )
    path = tmp_path / "tokens.json"
    args = [str(path), emulator.base_url, emulator.api_key, emulator.secret_key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args, backend],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for backend in ("asyncio", "trio", "asyncio", "trio")
    ]
    for child in children:
        _, err = child.communicate(timeout=30)
        assert child.returncode == 0, err.decode()
    assert emulator.stats.token_requests == 1
    assert emulator.stats.chat_requests == 4
    assert len(set(_tokens_used(emulator))) == 1


# -- the lock -------------------------------------------------------------------------


@pytest.fixture(params=["flock", "lock-file"])
def lock_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with flock (where there is one) and with the O_EXCL lock-file fallback."""
    if request.param == "flock" and not _token_file._HAVE_FLOCK:
        pytest.skip("no flock on this platform")
    if request.param == "lock-file":
        monkeypatch.setattr(_token_file, "_HAVE_FLOCK", False)
    return str(request.param)


@anyio_only
async def test_cancelled_wait_for_the_lock_leaves_it_free(tmp_path: Path, lock_kind: str) -> None:
    """Cancelling a task that waits for the lock, or holds it, never leaves it held."""
    path = tmp_path / "tokens.json"
    first, second = mpt_async.FileTokenStore(path), mpt_async.FileTokenStore(path)
    async with first.lock("k"):
        with anyio.move_on_after(0.1) as waiting:
            async with second.lock("k"):
                pytest.fail("got a lock that another holder has")
        assert waiting.cancelled_caught
    with anyio.CancelScope() as holding:
        async with second.lock("k"):
            holding.cancel()
            await anyio.sleep(1)
    assert holding.cancelled_caught
    with anyio.fail_after(1):
        async with first.lock("k"):
            pass
    if lock_kind == "lock-file":
        assert not (tmp_path / "tokens.json.lock").exists()


@anyio_only
async def test_lock_waits_for_its_holder(tmp_path: Path, lock_kind: str) -> None:
    """A second holder gets the lock only once the first lets it go."""
    path = tmp_path / "tokens.json"
    first, second = mpt_async.FileTokenStore(path), mpt_async.FileTokenStore(path)
    order: list[str] = []

    async def wait_for_it() -> None:
        async with second.lock("k"):
            order.append("second in")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            async with first.lock("k"):
                tg.start_soon(wait_for_it)
                await anyio.sleep(0.1)
                order.append("first out")
    assert order == ["first out", "second in"]


@anyio_only
async def test_lock_held_too_long_is_gone_past(tmp_path: Path, lock_kind: str) -> None:
    """Past lock_timeout a waiter goes ahead (a stale lock file is removed), never hangs."""
    path = tmp_path / "tokens.json"
    holder = mpt_async.FileTokenStore(path)
    impatient = mpt_async.FileTokenStore(path, lock_timeout=0.2)
    started = time.monotonic()
    with anyio.fail_after(2):
        async with holder.lock("k"), impatient.lock("k"):
            pass
    assert time.monotonic() - started >= 0.2


# -- values and configuration ---------------------------------------------------------


def test_no_secret_in_key_repr_or_file(tmp_path: Path) -> None:
    """StoredToken's repr hides the token; the key holds a hash, not the Secret Key."""
    token = mpt_async.StoredToken("24.very-secret-token", 2e9, 1.9e9)
    assert "very-secret" not in repr(token)
    key = token_key("https://aip.baidubce.com/", "my-api-key", "my-secret-key-value")
    assert key.startswith("https://aip.baidubce.com#")
    assert "my-secret-key-value" not in key
    assert key != token_key("https://aip.baidubce.com", "my-api-key", "other-secret")
    assert repr(mpt_async.FileTokenStore(tmp_path / "t.json")).startswith("FileTokenStore(")


def test_bad_configuration_is_refused_before_any_io() -> None:
    """A non-store, a bad path or lock_timeout, or an empty token raise ConfigurationError."""
    with pytest.raises(mpt_async.ConfigurationError, match="token_store"):
        mpt_async.Client(auth=mpt_async.AccessTokenAuth("ak", "sk"), token_store=object())  # type: ignore[arg-type]
    with pytest.raises(mpt_async.ConfigurationError, match="path"):
        mpt_async.FileTokenStore(5)  # type: ignore[arg-type]
    with pytest.raises(mpt_async.ConfigurationError, match="lock_timeout"):
        mpt_async.FileTokenStore("t.json", lock_timeout=0)
    with pytest.raises(mpt_async.ConfigurationError):
        mpt_async.StoredToken("", 1, 0)


def test_default_path_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With XDG_CACHE_HOME set, the default file is $XDG_CACHE_HOME/mpt_async/tokens.json."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mpt_async.FileTokenStore().path == tmp_path / "mpt_async" / "tokens.json"


# -- the command line -----------------------------------------------------------------


@pytest.fixture
def env_emulator(
    env_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Emulator:
    """The session emulator as the CLI's service, and a private cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return env_emulator


def test_cli_run_twice_with_the_cache_fetches_one_token(
    env_emulator: Emulator, tmp_path: Path
) -> None:
    """Two runs with --token-cache share one token; --no-token-cache fetches its own."""
    path = str(tmp_path / "cli" / "tokens.json")
    assert main(["chat", "--token-cache", path, "hi"]) == 0
    assert main(["chat", "--no-stream", "--token-cache", path, "hi"]) == 0
    assert env_emulator.stats.token_requests == 1
    assert main(["chat", "--no-token-cache", "hi"]) == 0
    assert env_emulator.stats.token_requests == 2
    assert not (tmp_path / "xdg").exists()  # plain http: no default cache


def test_cli_default_cache_is_for_https_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default the CLI caches tokens for an https service, in the user's cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parser = argparse.ArgumentParser()
    cli_service.add_token_cache_options(parser)
    store = cli_service.token_store_from_args(parser.parse_args([]), "https://aip.baidubce.com")
    assert isinstance(store, mpt_async.FileTokenStore)
    assert store.path == tmp_path / "mpt_async" / "tokens.json"
    assert cli_service.token_store_from_args(parser.parse_args([]), "http://127.0.0.1:8") is None
    off = parser.parse_args(["--no-token-cache"])
    assert cli_service.token_store_from_args(off, "https://aip.baidubce.com") is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-token-cache", "--token-cache", "x"])


# -- hostile files ---------------------------------------------------------------------

_TOKEN = mpt_async.StoredToken("tok", time.time() + 3600, time.time())


@anyio_only
async def test_symlink_to_dev_zero_is_not_followed(tmp_path: Path) -> None:
    """A symbolic link at the path (to /dev/zero) is not read; a save replaces the link."""
    path = tmp_path / "tokens.json"
    path.symlink_to("/dev/zero")
    store = mpt_async.FileTokenStore(path)
    with anyio.fail_after(10):
        assert await store.load("k") is None
        await store.save("k", _TOKEN)
    assert not path.is_symlink()
    assert await store.load("k") == _TOKEN


@anyio_only
async def test_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO at the path is not waited on (no writer ever comes); a save replaces it."""
    path = tmp_path / "tokens.json"
    os.mkfifo(path)
    store = mpt_async.FileTokenStore(path)
    with anyio.fail_after(10):
        assert await store.load("k") is None
        await store.save("k", _TOKEN)
    assert stat.S_ISREG(path.stat().st_mode)
    assert await store.load("k") == _TOKEN


@anyio_only
async def test_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    """A 400 MB file is ignored without being read (the cap is 1 MiB), then replaced."""
    import tracemalloc

    path = tmp_path / "tokens.json"
    with path.open("wb") as file:
        file.truncate(400 * 2**20)  # sparse: no disk used
    store = mpt_async.FileTokenStore(path)
    tracemalloc.start()
    try:
        assert await store.load("k") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    await store.save("k", _TOKEN)
    assert path.stat().st_size < 4096


@anyio_only
async def test_too_deep_file_is_rewritten(tmp_path: Path) -> None:
    """A token file nested 100,000 deep reads as empty, and the next save rewrites it."""
    path = tmp_path / "tokens.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    store = mpt_async.FileTokenStore(path)
    assert await store.load("k") is None
    await store.save("k", _TOKEN)
    assert await store.load("k") == _TOKEN


@anyio_only
async def test_dangling_symlink_at_the_lock_is_not_created(tmp_path: Path) -> None:
    """A dangling symbolic link at the lock path does not make the lock create its target."""
    path = tmp_path / "tokens.json"
    target = tmp_path / "elsewhere" / "victim"
    target.parent.mkdir()
    (tmp_path / "tokens.json.lock").symlink_to(target)
    store = mpt_async.FileTokenStore(path)
    with anyio.fail_after(10):
        async with store.lock("k"):
            await store.save("k", _TOKEN)
    assert not target.exists()
    assert await store.load("k") == _TOKEN


@anyio_only
async def test_directory_others_can_write_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a world-writable directory owned by someone else, the store warns once and stays out."""
    if os.getuid() == 0:
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chown(shared, 65534, 65534)
        shared.chmod(0o777)
    else:
        shared = Path("/tmp")  # root's, and writable by all
    path = shared / f"mpt-test-{os.getpid()}-tokens.json"
    store = mpt_async.FileTokenStore(path)
    caplog.set_level(logging.WARNING, "mpt_async")
    await store.save("k", _TOKEN)
    assert await store.load("k") is None
    async with store.lock("k"):
        pass
    assert not path.exists()
    assert not path.with_name(path.name + ".lock").exists()
    assert sum("other users can write" in r.getMessage() for r in caplog.records) == 1


# -- a token no one could use ---------------------------------------------------------


@anyio_only
@pytest.mark.parametrize("token", ["t" * 70_000, "24.abc\ndef", "24.abc\x00"])
async def test_an_unusable_token_from_the_endpoint_is_refused_typed(token: str) -> None:
    """A 70,000-char or control-char token is a MalformedResponseError; no chat is sent."""

    def grant(wire: Wire) -> None:
        wire.send(json_reply({"access_token": token, "expires_in": 3600}))

    with hostile(grant) as server:
        auth = mpt_async.AccessTokenAuth("api-key", SECRET_KEY)
        async with mpt_async.Client(auth=auth, base_url=server.url, max_retries=0) as client:
            with pytest.raises(mpt_async.MalformedResponseError, match="access token of") as info:
                await client.chat(HI)
    assert [r.split(b" ", 2)[1].split(b"?")[0] for r in server.requests] == [b"/oauth/2.0/token"]
    assert token not in str(info.value)


def test_a_stored_token_must_be_one_that_could_be_sent() -> None:
    """StoredToken refuses a value no service would issue; stored_token reads it as none."""
    with pytest.raises(mpt_async.ConfigurationError, match="printable"):
        mpt_async.StoredToken("t" * 70_000, 2e9, 1.9e9)
    assert stored_token("t" * 70_000, 2e9, 1.9e9) is None
    assert stored_token("t" * 4096, 2e9, 1.9e9) is not None


@pytest.mark.parametrize("token", ["t" * 70_000, "24.abc\ndef"])
def test_a_given_token_that_could_not_be_sent_is_refused(token: str) -> None:
    """FixedTokenAuth refuses a token no URL could carry: ConfigurationError, token unsaid."""
    with pytest.raises(mpt_async.ConfigurationError, match="printable") as info:
        mpt_async.FixedTokenAuth(token)
    assert token not in str(info.value)
