"""The public surface is exactly what is promised."""

from __future__ import annotations

import mpt_async

EXPECTED = [
    "AKSKAuth",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AccessTokenAuth",
    "Auth",
    "AuthenticationError",
    "Backoff",
    "Batch",
    "BatchInput",
    "BatchResult",
    "ChatChunk",
    "ChatOptions",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "Client",
    "ConfigurationError",
    "Conversation",
    "ConversationFlag",
    "ConversationStream",
    "DEFAULT_ENDPOINT",
    "FileTokenStore",
    "FixedTokenAuth",
    "InternalServerError",
    "InvalidRequestError",
    "MPTError",
    "MalformedResponseError",
    "MemoryTokenStore",
    "Message",
    "MessageDict",
    "MessageLike",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimitInfo",
    "RateLimits",
    "RedisStore",
    "RequestValidationError",
    "SharedStoreError",
    "StoredToken",
    "StreamError",
    "Timeouts",
    "TokenStore",
    "Usage",
    "run_batch",
]


def test_all_is_pinned_and_sorted() -> None:
    """``__all__`` lists exactly the public names, sorted."""
    assert mpt_async.__all__ == EXPECTED
    assert sorted(mpt_async.__all__) == mpt_async.__all__


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
