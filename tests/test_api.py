"""The public surface is exactly what is promised."""

from __future__ import annotations

import pytest

import mpt_async

#: The names no release may drop (what every user's code needs); the rest of ``__all__`` is
#: pinned to the package's namespace by the namespace test.
PROMISED = {
    "AKSKAuth",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AccessTokenAuth",
    "AuthenticationError",
    "ChatChunk",
    "ChatResponse",
    "Client",
    "MPTError",
    "Message",
    "RateLimitError",
    "RequestValidationError",
    "StreamError",
}


def _public(names: list[str]) -> list[str]:
    return sorted(name for name in names if not name.startswith("_"))


@pytest.mark.parametrize("module", ["mpt_async", "mpt_async.testing"])
def test_all_is_the_public_namespace(module: str) -> None:
    """``__all__`` is sorted and is exactly the public names a fresh import shows, lazy included."""
    import importlib
    import subprocess
    import sys

    code = f"import {module} as m; print(*dir(m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = importlib.import_module(module).__all__
    assert _public(out.stdout.split()) == expected
    assert sorted(expected) == expected
    if module == "mpt_async":
        assert set(expected) >= PROMISED


def test_no_helper_leaks_into_the_namespace() -> None:
    """Names used to build the package (typing helpers, the future import) are not exposed."""
    names = set(dir(mpt_async)) | set(vars(mpt_async))
    assert not names & {"Any", "TYPE_CHECKING", "annotations", "importlib", "typing"}
    # With the pytest11 plugin installed, pytest rewrites the package's modules and adds
    # its own "@py_builtins"/"@pytest_ar" entries: not names anyone can write.
    public = {n for n in vars(mpt_async) if n.isidentifier() and not n.startswith("_")}
    subpackages = {"testing"}  # present only once imported, as any subpackage
    assert public - subpackages <= set(mpt_async.__all__)


def test_types_in_public_signatures_are_exported() -> None:
    """The aliases used in public signatures can be named by users."""
    for name in (
        "TimeoutLike",
        "ProgressHook",
        "ChatOptions",
        "MessageDict",
        "Role",
        "BatchInput",
        "Priority",
    ):
        assert name in mpt_async.__all__
        assert getattr(mpt_async, name) is not None


def test_every_public_name_exists() -> None:
    """Each name in ``__all__`` is importable from the package."""
    for name in mpt_async.__all__:
        assert getattr(mpt_async, name) is not None


def test_public_classes_claim_the_package() -> None:
    """Public classes present themselves as ``mpt_async.X``, not private modules."""
    for name in mpt_async.__all__:
        obj = getattr(mpt_async, name)
        if isinstance(obj, type):
            assert obj.__module__ == "mpt_async", name


def test_import_does_not_pull_the_emulator() -> None:
    """Importing the client never imports uvicorn (an extra) or the emulator."""
    import subprocess
    import sys

    code = (
        "import sys, mpt_async; print('uvicorn' in sys.modules, 'mpt_async.testing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
