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
        code: int | str | None = exc.error_code
        print(code, exc.status_code, exc.request_id, exc.error_msg)
    except mpt_async.APIConnectionError:
        pass
    except mpt_async.RequestValidationError as exc:
        print(exc.field, exc.rule)


def chunk_fields(chunk: ChatChunk) -> tuple[str, int, bool]:
    return chunk.result, chunk.sentence_id, chunk.is_end


async def features(client: Client) -> None:
    conv = mpt_async.Conversation(client, temperature=0.5)
    first: ChatResponse = await conv.ask("Hi")
    async with conv.ask_stream("More") as answer:
        async for chunk in answer:
            print(chunk.result)
    flag: mpt_async.ConversationFlag | None = conv.last_flag
    history: tuple[Message, ...] = conv.messages
    print(first.result, flag, len(history), len(conv))

    async with client.batch(["a", "b"], concurrency=2) as results:
        async for item in results:
            index: int = item.index
            if item.response is not None:
                print(index, item.response.result)
            elif item.error is not None:
                print(index, item.error)

    limited = Client(
        auth=AccessTokenAuth("ak", "sk"),
        rate_limits=mpt_async.RateLimits(qps=5, rpm=300, tpm=100_000),
        token_store=mpt_async.FileTokenStore(),
    )
    reply = await limited.chat([{"role": "user", "content": "Hi"}])
    info: mpt_async.RateLimitInfo | None = reply.rate_limit
    if info is not None:
        remaining: int | None = info.remaining_requests
        print(remaining)
    shared: mpt_async.TokenStore = mpt_async.MemoryTokenStore()
    print(shared)
    await limited.aclose()


async def batch_results(client: Client) -> None:
    async with client.batch(["a", "b"], temperature=0.5) as results:
        async for item in results:
            if item.ok:  # narrows for mypy (pyright narrows `item.ok is True` instead)
                text: str = item.response.result  # pyright: ignore[reportOptionalMemberAccess]
                print(text)
            else:
                error: mpt_async.MPTError = item.error  # pyright: ignore[reportAssignmentType]
                print(error)
            if item.error is None:  # narrows for mypy and pyright alike
                print(item.response.result)
            if item.ok is True:  # so does this
                print(item.response.result)
            if isinstance(item, mpt_async.BatchSuccess):
                print(item.response.usage.total_tokens)
    outcome: mpt_async.BatchResult = mpt_async.BatchFailure(0, "a", error=mpt_async.MPTError())
    print(outcome.ok)


async def typed_options(client: Client) -> None:
    options: mpt_async.ChatOptions = {"temperature": 0.5, "stop": ["END"]}
    messages: list[mpt_async.MessageDict] = [{"role": "user", "content": "Hi"}]
    await client.chat(messages, **options)
    await client.chat(messages, timeout=5, top_k=None)
    await client.with_options(priority="batch").chat(messages, priority="interactive")
    level: mpt_async.Priority = "batch"  # a typed wrapper can name the type
    await client.chat(messages, priority=level)
    conv = mpt_async.Conversation(client, max_chars=1000, **options)
    await conv.ask("Hi", top_p=0.9)
    print(mpt_async.TimeoutLike, mpt_async.Role)


async def tls_options(ca_bundle: str) -> None:
    import pathlib
    import ssl

    for verify in (True, False, ca_bundle, pathlib.Path(ca_bundle), ssl.create_default_context()):
        async with Client(auth="24.x", verify=verify, trust_env=False) as client:
            print(client.http_transport)
    Client(auth="24.x", verify=1)  # type: ignore[arg-type]
    Client(auth="24.x", proxy="http://user:pw@proxy.example:3128", verify=ca_bundle)
    Client(auth="24.x", proxy=None, trust_env=True)
    Client(auth="24.x", proxy=3128)  # type: ignore[arg-type]


async def mistakes_are_caught(client: Client) -> None:
    await client.chat([{"rol": "user", "content": "Hi"}])  # type: ignore[list-item]
    await client.chat([{"role": "system", "content": "Hi"}])  # type: ignore[list-item]
    Message("system", "Hi")  # type: ignore[arg-type]
    await client.chat([Message("user", "Hi")], priority="urgent")  # type: ignore[arg-type]
    urgent: mpt_async.Priority = "urgent"  # type: ignore[assignment]
    print(urgent)
    await client.chat([Message("user", "Hi")], temprature=0.5)  # type: ignore[call-arg]
    await client.chat([Message("user", "Hi")], top_k="3")  # type: ignore[arg-type]
