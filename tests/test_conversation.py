"""``Conversation``: the history kept, trimmed, sent, and left alone when a call fails."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import mpt_async
from mpt_async import Conversation, Message
from mpt_async.testing import Emulator, Fault

from .clientkit import chat_requests, token_client

pytestmark = pytest.mark.anyio


def _sent(emulator: Emulator) -> list[dict[str, Any]]:
    """The messages of the latest chat request, as they went over the wire."""
    messages: list[dict[str, Any]] = chat_requests(emulator)[-1].body["messages"]
    return messages


def _rounds(*pairs: tuple[str, str]) -> list[Message]:
    return [m for q, a in pairs for m in (Message("user", q), Message("assistant", a))]


def _wire(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


# -- asking -------------------------------------------------------------------------------


async def test_ask_appends_rounds_and_sends_them_alternating(emulator: Emulator) -> None:
    """Each answered ask adds a round; the next request carries it, odd and alternating."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        first = await conv.ask("What is MPT?")
        second = await conv.ask("Who made it?")
    assert _sent(emulator) == [
        {"role": "user", "content": "What is MPT?"},
        {"role": "assistant", "content": first.result},
        {"role": "user", "content": "Who made it?"},
    ]
    assert conv.messages == (
        Message("user", "What is MPT?"),
        Message("assistant", first.result),
        Message("user", "Who made it?"),
        Message("assistant", second.result),
    )
    assert len(conv) == 2
    conv.clear()
    assert len(conv) == 0
    assert not conv.messages


async def test_defaults_are_sent_and_per_call_options_win(emulator: Emulator) -> None:
    """Default sampling options go with every call; an option given to ask() replaces one."""
    async with token_client(emulator) as client:
        conv = Conversation(client, temperature=0.5, user_id="u-1", stop=iter(["foo"]))
        await conv.ask("hi", temperature=0.9, top_k=3)
        await conv.ask("again")
    first, second = (r.body for r in chat_requests(emulator))
    assert (first["temperature"], first["top_k"], first["user_id"]) == (0.9, 3, "u-1")
    assert (second["temperature"], second["user_id"], second["stop"]) == (0.5, "u-1", ["foo"])
    assert "top_k" not in second
    assert first["stop"] == ["foo"]  # a one-shot iterator is read once, and kept


async def test_starting_history_is_sent_first(emulator: Emulator) -> None:
    """history= seeds the conversation; dicts and Messages are both accepted."""
    async with token_client(emulator) as client:
        conv = Conversation(
            client,
            history=[{"role": "user", "content": "q0"}, Message("assistant", "a0")],
        )
        await conv.ask("q1")
    assert _sent(emulator) == _wire([*_rounds(("q0", "a0")), Message("user", "q1")])


# -- trimming -----------------------------------------------------------------------------


async def test_trimming_keeps_the_newest_rounds_and_the_question(emulator: Emulator) -> None:
    """Past 4,800 characters the oldest whole rounds go for good; the question stays."""
    old = [(f"q{n}" + "x" * 998, f"a{n}" + "y" * 998) for n in range(3)]  # 2,000 a round
    question = "z" * 700
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(*old))
        reply = await conv.ask(question)
    sent = _sent(emulator)
    assert sum(len(m["content"]) for m in sent) <= 4800
    assert sent == _wire([*_rounds(*old[1:]), Message("user", question)])
    assert conv.messages == (
        *_rounds(*old[1:]),
        Message("user", question),
        Message("assistant", reply.result),
    )


async def test_max_chars_trims_sooner(emulator: Emulator) -> None:
    """A smaller max_chars keeps only the rounds that fit within it (exactly max_chars fits)."""
    async with token_client(emulator) as client:
        conv = Conversation(client, max_chars=25, history=_rounds(("a" * 10, "b" * 10), ("c", "d")))
        await conv.ask("q" * 23)  # with "c" and "d": 25 characters
    assert _sent(emulator) == _wire([*_rounds(("c", "d")), Message("user", "q" * 23)])


async def test_a_question_of_max_chars_is_sent_alone(emulator: Emulator) -> None:
    """A question of exactly max_chars is accepted; the whole history makes room for it."""
    async with token_client(emulator) as client:
        conv = Conversation(client, max_chars=100, history=_rounds(("q", "a")))
        await conv.ask("x" * 100)
    assert _sent(emulator) == [{"role": "user", "content": "x" * 100}]


async def test_an_empty_answer_adds_no_round(emulator: Emulator) -> None:
    """An empty answer cannot be history (the API refuses empty messages): nothing is kept."""
    emulator.add_reply("")
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        assert (await conv.ask("q1")).result == ""
        await conv.ask("q2")
    assert conv.messages[:2] == tuple(_rounds(("q0", "a0")))
    assert _sent(emulator) == _wire([*_rounds(("q0", "a0")), Message("user", "q2")])


@pytest.mark.parametrize(("max_chars", "length"), [(4800, 4801), (100, 101)])
async def test_question_too_long_raises_before_io(
    emulator: Emulator, max_chars: int, length: int
) -> None:
    """A question longer than max_chars on its own is refused before anything is sent."""
    async with token_client(emulator) as client:
        conv = Conversation(client, max_chars=max_chars, history=_rounds(("q", "a")))
        with pytest.raises(mpt_async.RequestValidationError) as info:
            await conv.ask("x" * length)
        with pytest.raises(mpt_async.RequestValidationError):
            conv.ask_stream("x" * length)
    assert info.value.field == "question"
    assert emulator.stats.chat_requests == 0
    assert conv.messages == tuple(_rounds(("q", "a")))


async def test_bad_setup_is_refused(emulator: Emulator) -> None:
    """Bad history, max_chars or default options raise typed errors at construction."""
    async with token_client(emulator) as client:
        with pytest.raises(mpt_async.RequestValidationError, match=r"history\[0\]\.role"):
            Conversation(client, history=[Message("assistant", "a"), Message("user", "q")])
        with pytest.raises(mpt_async.RequestValidationError, match="history"):
            Conversation(client, history=[Message("user", "q")])
        with pytest.raises(mpt_async.RequestValidationError, match="temperature"):
            Conversation(client, temperature=0)
        with pytest.raises(mpt_async.ConfigurationError, match="max_chars"):
            Conversation(client, max_chars=4801)
        conv = Conversation(client)
        with pytest.raises(mpt_async.RequestValidationError, match="question"):
            await conv.ask("")
    assert emulator.stats.chat_requests == 0


# -- failures leave the history alone ----------------------------------------------------


async def test_failed_call_leaves_history_unchanged(emulator: Emulator) -> None:
    """A refused call keeps nothing; the next call sends the history as it was."""
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        emulator.inject(Fault.error(336003))
        with pytest.raises(mpt_async.InvalidRequestError):
            await conv.ask("refused")
        assert conv.messages == tuple(_rounds(("q0", "a0")))
        await conv.ask("again")
    assert _sent(emulator) == _wire([*_rounds(("q0", "a0")), Message("user", "again")])


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.drop_after(1), mpt_async.APIConnectionError),
        (Fault.no_end(), mpt_async.StreamError),
    ],
)
async def test_broken_stream_leaves_history_unchanged(
    emulator: Emulator, fault: Fault, error: type[Exception]
) -> None:
    """A stream that breaks before is_end keeps nothing, though chunks arrived."""
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        emulator.inject(fault)
        got: list[str] = []
        with pytest.raises(error):
            async with conv.ask_stream("broken") as stream:
                async for chunk in stream:
                    got.append(chunk.result)
    assert got
    assert conv.messages == tuple(_rounds(("q0", "a0")))


async def test_abandoned_stream_leaves_history_unchanged(emulator: Emulator) -> None:
    """Leaving the block after the first chunk keeps nothing, and frees the turn."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        async with conv.ask_stream("left early") as stream:
            async for _ in stream:
                break
        assert not stream.finished
        assert conv.messages == ()
        await conv.ask("next")  # the turn was given back
    assert len(conv) == 1


async def test_cancelled_calls_leave_history_unchanged(emulator: Emulator) -> None:
    """A cancelled ask, or a stream cancelled mid-way, keeps nothing."""
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        emulator.inject(Fault.stall(2))
        with anyio.move_on_after(0.2) as scope:
            await conv.ask("stalled")
        assert scope.cancelled_caught
        emulator.inject(Fault.stall(2, after=1))
        with anyio.CancelScope() as scope:
            async with conv.ask_stream("stalled stream") as stream:
                async for _ in stream:
                    scope.cancel()  # mid-way: after the first chunk, waiting for the next
        assert scope.cancelled_caught
        assert stream.text
        assert conv.messages == tuple(_rounds(("q0", "a0")))
        await conv.ask("after")
    assert _sent(emulator)[:2] == _wire(_rounds(("q0", "a0")))


# -- streaming ----------------------------------------------------------------------------


async def test_stream_appends_the_full_text_at_its_end(emulator: Emulator) -> None:
    """The streamed answer is kept whole, and only once the is_end chunk is handed over."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        sizes: list[int] = []
        parts: list[str] = []
        async with conv.ask_stream("Please introduce The Great Wall") as stream:
            async for chunk in stream:
                sizes.append(len(conv))
                parts.append(chunk.result)
        whole = await client.chat([{"role": "user", "content": "Please introduce The Great Wall"}])
    assert len(parts) > 1
    assert sizes == [0] * (len(parts) - 1) + [1]
    assert stream.finished
    assert conv.messages == (
        Message("user", "Please introduce The Great Wall"),
        Message("assistant", whole.result),
    )
    assert "".join(parts) == whole.result


async def test_stream_final_response_and_history_on_the_wire(emulator: Emulator) -> None:
    """get_final_response() reads to the end; the next stream sends the kept round."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        async with conv.ask_stream("one") as stream:
            final = await stream.get_final_response()
        async with conv.ask_stream("two") as stream:
            await stream.get_final_response()
    assert chat_requests(emulator)[-1].body["stream"] is True
    assert _sent(emulator) == _wire([*_rounds(("one", final.result)), Message("user", "two")])
    assert len(conv) == 2


async def test_stream_needs_async_with(emulator: Emulator) -> None:
    """Iterating a conversation stream outside its block is a clear error, not a leak."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        with pytest.raises(RuntimeError, match="async with"):
            async for _ in conv.ask_stream("no block"):
                pass
    assert emulator.stats.chat_requests == 0


# -- flagged answers ----------------------------------------------------------------------


@pytest.mark.parametrize("ban_round", [-1, 2], ids=["minus-one", "rounds-plus-one"])
@pytest.mark.parametrize("stream", [False, True])
async def test_flagged_question_is_not_kept(
    emulator: Emulator, stream: bool, ban_round: int
) -> None:
    """ban_round -1, or one past the rounds sent: the question is left out; the history stays."""
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        emulator.inject(Fault.flag(ban_round=ban_round))
        if stream:
            async with conv.ask_stream("bad words") as s:
                reply = await s.get_final_response()
        else:
            reply = await conv.ask("bad words")
        assert reply.need_clear_history
        assert conv.last_flag == mpt_async.ConversationFlag(
            ban_round=ban_round, removed=(), cleared=False
        )
        assert conv.messages == tuple(_rounds(("q0", "a0")))
        await conv.ask("fine")
        assert conv.last_flag is None
    assert _sent(emulator) == _wire([*_rounds(("q0", "a0")), Message("user", "fine")])


@pytest.mark.parametrize("stream", [False, True])
async def test_flagged_round_is_dropped(emulator: Emulator, stream: bool) -> None:
    """ban_round n (from 1, oldest first, among the rounds sent) drops that round only."""
    history = _rounds(("q1", "a1"), ("q2", "a2"), ("q3", "a3"))
    async with token_client(emulator) as client:
        conv = Conversation(client, history=history)
        emulator.inject(Fault.flag(ban_round=2))
        if stream:
            async with conv.ask_stream("q4") as s:
                async for _ in s:
                    pass
        else:
            reply = await conv.ask("q4")
            assert (reply.need_clear_history, reply.ban_round) == (True, 2)
    assert conv.messages == tuple(_rounds(("q1", "a1"), ("q3", "a3")))
    assert conv.last_flag == mpt_async.ConversationFlag(
        ban_round=2, removed=tuple(_rounds(("q2", "a2"))), cleared=False
    )


async def test_flag_naming_no_sent_round_clears_everything(emulator: Emulator) -> None:
    """A ban_round outside the rounds sent (here 0 and 7 of 1) drops the whole history."""
    async with token_client(emulator) as client:
        for ban_round in (0, 7):
            conv = Conversation(client, history=_rounds(("q1", "a1")))
            emulator.inject(Fault.flag(ban_round=ban_round))
            await conv.ask("q2")
            assert conv.messages == ()
            assert conv.last_flag == mpt_async.ConversationFlag(
                ban_round=ban_round, removed=tuple(_rounds(("q1", "a1"))), cleared=True
            )


@pytest.mark.parametrize("ban_round", [-1, 1])
async def test_clear_on_flag_drops_everything(emulator: Emulator, ban_round: int) -> None:
    """With clear_on_flag, any flag clears the history: on the question alone or on a round."""
    history = _rounds(("q1", "a1"), ("q2", "a2"))
    async with token_client(emulator) as client:
        conv = Conversation(client, clear_on_flag=True, history=history)
        emulator.inject(Fault.flag(ban_round=ban_round))
        await conv.ask("bad words")
    assert conv.messages == ()
    assert conv.last_flag == mpt_async.ConversationFlag(
        ban_round=ban_round, removed=tuple(history), cleared=True
    )


# -- turns --------------------------------------------------------------------------------


async def test_concurrent_asks_take_turns(emulator: Emulator) -> None:
    """Two asks at once on one conversation run one after the other, never interleaved."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conv.ask, "first")
            tg.start_soon(conv.ask, "second")
    first, second = (r.body["messages"] for r in chat_requests(emulator))
    assert len(first) == 1
    assert len(second) == 3
    assert second[0] == first[0]
    assert [m.content for m in conv.messages[::2]] == [first[0]["content"], second[2]["content"]]


async def test_ask_inside_own_stream_raises(emulator: Emulator) -> None:
    """Asking again inside the conversation's own stream block fails fast, not deadlocks."""
    async with token_client(emulator) as client:
        conv = Conversation(client)
        async with conv.ask_stream("one") as stream:
            with pytest.raises(RuntimeError, match="leave the block"):
                await conv.ask("two")
            await stream.get_final_response()
    assert len(conv) == 1
    assert emulator.stats.chat_requests == 1


async def test_clear_while_answering_drops_that_answer(emulator: Emulator) -> None:
    """clear() takes effect at once: an answer still arriving is not kept."""
    async with token_client(emulator) as client:
        conv = Conversation(client, history=_rounds(("q0", "a0")))
        async with conv.ask_stream("in flight") as stream:
            async for _ in stream:
                conv.clear()
        assert stream.finished
    assert conv.messages == ()
