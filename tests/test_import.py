"""``import mpt_async`` stays light: what is needed only later loads on first use."""

from __future__ import annotations

import subprocess
import sys

#: Modules that must not be loaded by ``import mpt_async`` alone.
LATER = (
    "asyncio",
    "mpt_async._converter",
    "mpt_async._models",
    "mpt_async._ratelimit",
    "mpt_async._stream",
    "mpt_async._telemetry",
    "mpt_async._request_loop",
    "mpt_async._pool",
    "mpt_async._wire",
    "httptools",
)


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_import_loads_nothing_needed_only_later() -> None:
    """A fresh ``import mpt_async`` loads none of the modules used only by calls."""
    out = _run(f"import sys, mpt_async; print([m for m in {LATER!r} if m in sys.modules])")
    assert out == "[]"


def test_lazily_loaded_classes_look_the_same_however_reached() -> None:
    """A model reached through the client's modules is still ``mpt_async.X``, hints resolve."""
    code = (
        "import typing, pickle, mpt_async; from mpt_async import _models; "
        "r = _models.ChatResponse; print(r.__module__, sorted(typing.get_type_hints(r))[:2], "
        "pickle.loads(pickle.dumps(_models.Usage(1, 2, 3))) == _models.Usage(1, 2, 3), "
        "mpt_async.ChatResponse is r, mpt_async.RateLimits.__module__)"
    )
    assert _run(code) == "mpt_async ['ban_round', 'created'] True True mpt_async"


def test_version_is_the_installed_distributions() -> None:
    """``__version__`` is the version the build read: the two cannot drift apart."""
    import importlib.metadata

    import mpt_async

    assert mpt_async.__version__ == importlib.metadata.version("mpt-async")
    assert mpt_async.__version__[0].isdigit()
