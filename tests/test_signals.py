"""Ctrl-C stays with the main thread: helper threads block SIGINT."""

from __future__ import annotations

import signal
import threading

import pytest

from mpt_async._signals import sigint_blocked
from mpt_async.testing import Emulator

from .clientkit import blocks_sigint

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_sigmask"), reason="threads have no signal masks here"
)


def _blocked_in_this_thread() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_threads_started_inside_block_sigint_and_the_caller_gets_its_mask_back() -> None:
    """A thread started in the block inherits a mask with SIGINT; the caller's is restored."""
    seen: list[set[int]] = []
    before = _blocked_in_this_thread()
    with sigint_blocked():
        helper = threading.Thread(target=lambda: seen.append(_blocked_in_this_thread()))
        helper.start()
    helper.join(10)
    assert signal.SIGINT in seen[0]
    assert _blocked_in_this_thread() == before
    assert signal.SIGINT not in before


def test_the_emulators_server_thread_never_takes_sigint() -> None:
    """The emulator's thread blocks SIGINT, so Ctrl-C reaches the host program's main thread."""
    with Emulator() as emu:
        name = f"mpt-async-emulator-{emu.port}"
        (server,) = [t for t in threading.enumerate() if t.name == name]
        assert server.native_id is not None
        assert blocks_sigint("self", server.native_id)
