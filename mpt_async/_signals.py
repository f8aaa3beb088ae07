"""Keeping Ctrl-C for the main thread.

CPython runs signal handlers in the main thread, but the kernel may hand a process's SIGINT
to any of its threads that does not block it. Taken by a helper thread, it never interrupts
the main thread's blocking wait (``input()``'s ``select`` under readline, a lock), so Ctrl-C
seems ignored until the next key press. Threads started inside :func:`sigint_blocked`
inherit a signal mask that blocks SIGINT, so the kernel can only hand it to the main thread.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["sigint_blocked"]


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread for the block, so that threads it starts never take it.

    The mask is restored on the way out; a Ctrl-C that came meanwhile is delivered then.
    Where threads have no signal masks (Windows), this does nothing.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - POSIX only
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
