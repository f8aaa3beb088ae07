"""A user's program, type-checked by ``nox -s typing`` and never run.

If a change to the public API breaks what users write, mypy fails here.
"""

from __future__ import annotations

import httpx

import mpt_async
from mpt_async import (
    AccessTokenAuth,
    AKSKAuth,
    ChatChunk,
    ChatResponse,
    Client,
    FixedTokenAuth,
    Message,
    Timeouts,
)


async def non_stream() -> str:
    async with Client(endpoint="mpt-30b-instruct", auth=AccessTokenAuth("ak", "sk")) as client:
        reply: ChatResponse = await client.chat(
            [{"role": "user", "content": "Hi"}],
            temperature=0.5,
            top_k=3,
            top_p=0.9,
            penalty_score=1.2,
            stop=["\n\n"],
            user_id="u1",
            metadata={"k": "v"},
            timeout=120,
        )
        total: int = reply.usage.total_tokens
        flagged: bool = reply.need_clear_history
        ban: int | None = reply.ban_round
        return f"{reply.result} {total} {flagged} {ban} {reply.id} {reply.created}"


async def stream(http: httpx.AsyncClient) -> str:
    client = Client(auth=AKSKAuth("ak", "sk"), http_client=http, timeout=Timeouts(stream_read=30))
    try:
        async with client.chat_stream([Message("user", "Hi")]) as answer:
            async for chunk in answer:
                chunk_id: int = chunk.sentence_id
                end: bool = chunk.is_end
                print(chunk_id, end, chunk.result)
            final: ChatResponse = await answer.get_final_response()
            text: str = answer.text
            return final.result + text
    finally:
        await client.aclose()


async def errors() -> None:
    client = Client(auth=FixedTokenAuth("24.x"), max_retries=0).with_options(timeout=5.0)
    try:
        await client.chat([{"role": "user", "content": "Hi"}])
    except mpt_async.RateLimitError as exc:
        code: int | None = exc.error_code
        print(code, exc.status_code, exc.request_id, exc.error_msg)
    except mpt_async.APIConnectionError:
        pass
    except mpt_async.RequestValidationError as exc:
        print(exc.field, exc.rule)


def chunk_fields(chunk: ChatChunk) -> tuple[str, int, bool]:
    return chunk.result, chunk.sentence_id, chunk.is_end
