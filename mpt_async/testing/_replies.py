"""Deterministic replies: the same question always gets the same answer.

The text is derived from a hash of the last user message, so tests can compare a
streamed answer with a non-streamed one, and benchmarks get realistic sizes
(roughly 100-200 words) without any model.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string
from collections.abc import Iterable

__all__ = ["count_tokens", "new_id", "reply_text", "split_text"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A "token" is a whitespace-separated word, or a single CJK character (CJK text has no
# spaces): the API page's "Please introduce The Great Wall" counts 5, as Baidu reports.
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_rng = random.Random()

_SENTENCES = (
    "This is a deterministic answer from the local Qianfan emulator.",
    "The same question always receives exactly the same words.",
    "MPT-30B-instruct is a decoder-only transformer tuned to follow short instructions.",
    "It was trained by MosaicML on a large mix of instruction data.",
    "Long answers arrive sentence by sentence when streaming is enabled.",
    "Every chunk of a stream carries a sentence id, counting up from zero.",
    "Only the last chunk of a stream is marked as the end.",
    "Usage figures count the words of the question and of the answer.",
    "History must alternate between the user and the assistant.",
    "The total length of all messages may not exceed 4800 characters.",
    "An access token stays valid for thirty days after it is issued.",
    "Requests may also be signed with an access key and a secret key.",
    "Temperature controls how random the generated text is.",
    "Top-p sampling keeps the smallest set of likely tokens.",
    "A penalty score above one discourages repeated phrases.",
    "Stop words end the generation early when they appear.",
    "Nothing here was produced by a real language model.",
    "Network faults can be injected to test how a client recovers.",
    "A well-behaved client retries overloaded servers with a growing delay.",
    "Broken streams must surface as errors instead of short answers.",
    "The Great Wall of China stretches for thousands of miles.",
    "Beijing has been the capital of China for centuries.",
    "Good tests assert on behaviour rather than on implementation details.",
    "Connection pools save a handshake on every request.",
)


@functools.lru_cache(maxsize=4096)
def reply_text(question: str) -> str:
    """The emulator's answer to ``question``, a pure function of it.

    Args:
        question: The content of the last user message.
    """
    digest = hashlib.blake2b(question.encode("utf-8", "surrogatepass"), digest_size=32).digest()
    # Lone surrogates (valid in JSON strings) cannot be encoded back to UTF-8.
    words = question.encode("utf-8", "replace").decode("utf-8").split()
    topic = " ".join(words[:12])
    if len(topic) > 80 or len(words) > 12:
        topic = topic[:80].rstrip() + "..."
    sentences = [f'Hello! You asked: "{topic}".']
    sentences += [_SENTENCES[b % len(_SENTENCES)] for b in digest[1 : 9 + digest[0] % 6]]
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    closing = "I hope this helps! Is there anything else you would like to know?"
    # A leading space, as in every result in Baidu's examples.
    return " " + "\n\n".join([*paragraphs, closing])


def count_tokens(texts: Iterable[str]) -> int:
    """Count the emulator's tokens (words, and CJK characters) in ``texts``.

    Args:
        texts: The strings to count.
    """
    return sum(len(_TOKEN.findall(text)) for text in texts)


@functools.lru_cache(maxsize=4096)
def split_text(text: str, parts: int) -> tuple[str, ...]:
    """Cut ``text`` into ``parts`` pieces whose concatenation is ``text``.

    Pieces end on word boundaries (each keeps its trailing whitespace, as in the API page's
    stream example) when there are enough words; otherwise on characters, and only a
    text shorter than ``parts`` characters yields empty pieces.

    Args:
        text: The full answer.
        parts: How many pieces (at least 1).
    """
    pieces = _BOUNDARY.split(text)
    if len(pieces) > 1 and not pieces[0].strip():
        pieces[:2] = [pieces[0] + pieces[1]]
    if len(pieces) < parts:
        pieces = list(text)
    count = len(pieces)
    bounds = [count * i // parts for i in range(parts + 1)]
    return tuple("".join(pieces[bounds[i] : bounds[i + 1]]) for i in range(parts))


def new_id() -> str:
    """A fresh response id: ``as-`` and ten lower-case letters or digits."""
    return "as-" + "".join(_rng.choices(_ID_ALPHABET, k=10))
