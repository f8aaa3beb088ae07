"""An asyncio- and trio-native client for Baidu Qianfan's MPT-30B-instruct chat API.

>>> async with mpt_async.Client() as client:          # doctest: +SKIP
...     reply = await client.chat([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

from mpt_async._auth import AccessTokenAuth, AKSKAuth, Auth, FixedTokenAuth
from mpt_async._backoff import Backoff
from mpt_async._batch import Batch, BatchInput, BatchResult, run_batch
from mpt_async._client import DEFAULT_ENDPOINT, Client
from mpt_async._conversation import Conversation, ConversationFlag, ConversationStream
from mpt_async._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
    InvalidRequestError,
    MalformedResponseError,
    MPTError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestValidationError,
    StreamError,
)
from mpt_async._models import ChatChunk, ChatRequest, ChatResponse, Message, MessageLike, Usage
from mpt_async._ratelimit import RateLimitInfo, RateLimits
from mpt_async._stream import ChatStream
from mpt_async._timeouts import Timeouts
from mpt_async._token_store import FileTokenStore, MemoryTokenStore, StoredToken, TokenStore

__version__ = "0.1.0.dev0"

__all__ = [
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
    "MessageLike",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimitInfo",
    "RateLimits",
    "RequestValidationError",
    "StoredToken",
    "StreamError",
    "Timeouts",
    "TokenStore",
    "Usage",
    "run_batch",
]


def _claim_public_classes() -> None:
    """Show public classes as ``mpt_async.X`` in reprs, tracebacks and docs."""
    namespace = globals()
    for name in __all__:
        obj = namespace[name]
        if isinstance(obj, type) and obj.__module__.startswith("mpt_async."):
            obj.__module__ = "mpt_async"


_claim_public_classes()
