"""OpenTelemetry spans and metrics of calls, read back from the SDK's in-memory exporters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import mpt_async
from mpt_async import _telemetry
from mpt_async.testing import Emulator, Fault

from .clientkit import HI, scrubbed_env, token_client

SECONDS_BUCKETS = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
]  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent
CONTENT_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Where the slow call's trace is written, when set (``benchmarks/_telemetry_trace.py``).
TRACE_OUT_VAR = "MPT_ASYNC_TRACE_OUT"


class Recorded:
    """What the SDK received: finished spans and collected metric points."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def call_span(self) -> ReadableSpan:
        """The one call span (children excluded)."""
        calls = [s for s in self.finished() if s.name.startswith("chat ")]
        assert len(calls) == 1, [s.name for s in self.finished()]
        return calls[0]

    def points(self, name: str) -> list[tuple[HistogramDataPoint, Any]]:
        """Each histogram point of metric ``name``, with the metric itself."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(p, metric) for p in metric.data.data_points]  # type: ignore[union-attr]
        return found


@pytest.fixture
def otel() -> Iterator[Recorded]:
    """Route mpt_async's telemetry to fresh SDK providers with in-memory exporters."""
    recorded = Recorded()
    with _telemetry.use_providers(recorded.tracer_provider, recorded.meter_provider):
        yield recorded
    recorded.tracer_provider.shutdown()
    recorded.meter_provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_server_of_takes_host_and_port_only() -> None:
    """server.address/port come from the base URL's host and port, defaulted by scheme."""
    assert _telemetry.server_of("https://aip.baidubce.com") == ("aip.baidubce.com", 443)
    assert _telemetry.server_of("http://127.0.0.1:8123/prefix?x=1") == ("127.0.0.1", 8123)
    assert _telemetry.server_of("http://user:pw@example.com/") == ("example.com", 80)


@pytest.mark.anyio
async def test_chat_is_one_client_span_with_genai_attributes(
    emulator: Emulator, otel: Recorded
) -> None:
    """A chat is one CLIENT span 'chat {endpoint}' carrying the conventions' attributes."""
    async with token_client(emulator) as client:
        reply = await client.chat(HI, temperature=0.5, top_p=0.9, top_k=3, stop=["end"])
    span = otel.call_span()
    assert span.name == "chat mpt-30b-instruct"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    got = attributes(span)
    assert got == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "baidu.qianfan",
        "gen_ai.request.model": "mpt-30b-instruct",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 3,
        "gen_ai.request.stop_sequences": ("end",),
        "server.address": "127.0.0.1",
        "server.port": emulator.port,
        "gen_ai.response.id": reply.id,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
    }
    # The first token fetch is a child span of the call.
    (fetch,) = [s for s in otel.finished() if s.name == "mpt_async.token_fetch"]
    assert fetch.parent is not None
    assert fetch.parent.span_id == span.context.span_id


@pytest.mark.anyio
async def test_chat_metrics_follow_the_conventions(emulator: Emulator, otel: Recorded) -> None:
    """Duration and token usage are histograms with the conventions' names, units, buckets."""
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
    ((duration, metric),) = otel.points("gen_ai.client.operation.duration")
    assert metric.unit == "s"
    assert list(duration.explicit_bounds) == SECONDS_BUCKETS
    assert duration.count == 1
    assert dict(duration.attributes)["gen_ai.request.model"] == "mpt-30b-instruct"
    assert "error.type" not in dict(duration.attributes)
    tokens = {
        dict(p.attributes)["gen_ai.token.type"]: (p.sum, m.unit)
        for p, m in otel.points("gen_ai.client.token.usage")
    }
    assert tokens == {
        "input": (reply.usage.prompt_tokens, "{token}"),
        "output": (reply.usage.completion_tokens, "{token}"),
    }
    assert otel.points("gen_ai.client.operation.time_to_first_chunk") == []


@pytest.mark.anyio
async def test_stream_span_covers_the_whole_stream(emulator: Emulator, otel: Recorded) -> None:
    """A stream's span starts when entered, ends at its end, and counts its chunks."""
    emulator.set_stream_chunks(5)
    async with token_client(emulator) as client:
        stream = client.chat_stream(HI)
        assert otel.finished() == []  # nothing is sent before the stream is entered
        async with stream:
            final = await stream.get_final_response()
            span = otel.call_span()  # ended at is_end, before the block is left
    got = attributes(span)
    assert got["gen_ai.request.stream"] is True
    assert got["mpt_async.stream.chunks"] == 5
    assert got["gen_ai.response.id"] == final.id
    assert got["gen_ai.usage.output_tokens"] == final.usage.completion_tokens
    assert 0 < got["gen_ai.response.time_to_first_chunk"] < (span.end_time - span.start_time) / 1e9  # type: ignore[operator]
    ((first, metric),) = otel.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1
    assert list(first.explicit_bounds) == SECONDS_BUCKETS
    assert metric.unit == "s"
    ((per_chunk, _),) = otel.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count == 4  # every chunk after the first


@pytest.mark.anyio
async def test_stream_left_early_ends_its_span(emulator: Emulator, otel: Recorded) -> None:
    """Breaking out of a stream ends its span as closed early, not as an error."""
    emulator.set_stream_chunks(10)
    async with token_client(emulator) as client, client.chat_stream(HI) as stream:
        async for chunk in stream:
            if chunk.sentence_id == 1:
                break
        assert otel.finished() != []  # ended when the block is left, not later
    got = attributes(otel.call_span())
    assert got["mpt_async.stream.closed_early"] is True
    assert got["mpt_async.stream.chunks"] == 2
    assert "error.type" not in got
    assert otel.call_span().status.status_code is StatusCode.UNSET
    ((duration, _),) = otel.points("gen_ai.client.operation.duration")
    assert "error.type" not in dict(duration.attributes)
    assert otel.points("gen_ai.client.token.usage") == []  # no final count: none reported


@pytest.mark.anyio
async def test_cancelled_stream_ends_its_span_as_cancelled(
    emulator: Emulator, otel: Recorded
) -> None:
    """A stream whose task is cancelled mid-way ends its span with error.type=cancelled."""
    emulator.inject(Fault.stall(5, after=1))
    async with token_client(emulator) as client:
        with anyio.CancelScope() as scope:
            async with client.chat_stream(HI) as stream:
                async for _ in stream:
                    # Cancelled while waiting for the second chunk, which never comes.
                    scope.deadline = anyio.current_time() + 0.1
        assert scope.cancelled_caught
    span = otel.call_span()
    assert attributes(span)["error.type"] == "cancelled"
    assert attributes(span)["mpt_async.stream.chunks"] == 1
    assert span.status.status_code is StatusCode.ERROR
    ((duration, _),) = otel.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes)["error.type"] == "cancelled"


@pytest.mark.anyio
async def test_retried_call_has_a_retry_event(emulator: Emulator, otel: Recorded) -> None:
    """A retry is an event on the one call span, naming the error that caused it."""
    emulator.inject(Fault.error(336100))
    async with token_client(emulator, max_retries=1) as client:
        await client.chat(HI)
    span = otel.call_span()
    (event,) = [e for e in span.events if e.name == "mpt_async.retry"]
    got = dict(event.attributes or {})
    assert got["mpt_async.retry.attempt"] == 1
    assert got["error.type"] == "InternalServerError"
    assert got["mpt_async.retry.delay"] >= 0
    assert "error.type" not in attributes(span)  # the call itself succeeded


@pytest.mark.anyio
async def test_refused_call_records_the_error(emulator: Emulator, otel: Recorded) -> None:
    """A call the service refuses ends its span and duration with the error's class."""
    emulator.inject(Fault.error(336003, "bad params"))
    async with token_client(emulator) as client:
        with pytest.raises(mpt_async.InvalidRequestError):
            await client.chat(HI)
    span = otel.call_span()
    assert attributes(span)["error.type"] == "InvalidRequestError"
    assert span.status.status_code is StatusCode.ERROR
    assert "bad params" in (span.status.description or "")
    ((duration, _),) = otel.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes)["error.type"] == "InvalidRequestError"
    assert otel.points("gen_ai.client.token.usage") == []


@pytest.mark.anyio
async def test_slow_call_shows_refresh_and_rate_limit_wait(
    emulator: Emulator, otel: Recorded
) -> None:
    """A refused token and a rate-limit wait show in the call's span, as event and children."""
    # Calls 0.5 s apart: a replay and a call refused by the quota, each sent at once, must
    # wait for their place.
    limits = mpt_async.RateLimits(qps=2, adopt_server_limits=False)
    async with token_client(emulator, rate_limits=limits, max_retries=1) as client:
        await client.chat(HI)
        otel.spans.clear()
        emulator.revoke_tokens()
        emulator.inject(Fault.error(18))
        await client.chat(HI)
    span = otel.call_span()
    names = [e.name for e in span.events]
    assert sorted(names) == ["mpt_async.quota_refused", "mpt_async.token_refused"]
    (refused,) = (e for e in span.events if e.name == "mpt_async.quota_refused")
    assert dict(refused.attributes or {})["mpt_async.quota.kind"] == "second"
    children = [s for s in otel.finished() if s.parent and s.parent.span_id == span.context.span_id]
    kinds = sorted(s.name for s in children)
    assert "mpt_async.token_fetch" in kinds
    assert "mpt_async.rate_limit_wait" in kinds
    for child in children:
        assert span.start_time <= child.start_time <= child.end_time <= span.end_time  # type: ignore[operator]
    if out := os.environ.get(TRACE_OUT_VAR):  # for the README's picture
        await anyio.Path(out).write_text(json.dumps(timeline(span, children)))


def timeline(span: ReadableSpan, children: list[ReadableSpan]) -> dict[str, Any]:
    """A call span and its children as seconds from the call's start (for a chart)."""
    t0 = span.start_time or 0

    def at(ns: int | None) -> float:
        return ((ns or 0) - t0) / 1e9

    return {
        "name": span.name,
        "end": at(span.end_time),
        "attributes": {k: v for k, v in attributes(span).items() if not k.startswith("server.")},
        "children": [
            {"name": c.name, "start": at(c.start_time), "end": at(c.end_time)} for c in children
        ],
        "events": [
            {"name": e.name, "at": at(e.timestamp), "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


@pytest.mark.anyio
@pytest.mark.parametrize("capture", [False, True], ids=["content-off", "content-on"])
async def test_message_content_only_when_opted_in(
    emulator: Emulator, otel: Recorded, monkeypatch: pytest.MonkeyPatch, capture: bool
) -> None:
    """Messages are on the span only with the conventions' opt-in variable set to true."""
    if capture:
        monkeypatch.setenv(CONTENT_VAR, "true")
    else:
        monkeypatch.delenv(CONTENT_VAR, raising=False)
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            final = await stream.get_final_response()
    chat, streamed = sorted(
        (s for s in otel.finished() if s.name.startswith("chat ")),
        key=lambda s: s.start_time or 0,
    )
    for span, text in ((chat, reply.result), (streamed, final.result)):
        got = attributes(span)
        if not capture:
            assert "gen_ai.input.messages" not in got
            assert "gen_ai.output.messages" not in got
            continue
        assert json.loads(got["gen_ai.input.messages"]) == [
            {"role": "user", "parts": [{"type": "text", "content": HI[0]["content"]}]}
        ]
        assert json.loads(got["gen_ai.output.messages"]) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": text}],
                "finish_reason": "stop",
            }
        ]


@pytest.mark.anyio
async def test_no_secret_reaches_the_spans(emulator: Emulator, otel: Recorded) -> None:
    """No access token, secret key, Authorization header or URL query is ever recorded."""
    async with token_client(emulator, max_retries=1) as client:
        emulator.inject(Fault.error(336100))
        await client.chat(HI)
        emulator.revoke_tokens()
        async with client.chat_stream(HI) as stream:
            await stream.get_final_response()
    tokens = [r.query.get("access_token") for r in emulator.requests if r.kind == "chat"]
    secrets = {t for t in tokens if t} | {emulator.secret_key, emulator.api_key}
    dumped = "\n".join(s.to_json() for s in otel.finished())
    assert len(otel.finished()) >= 4
    for secret in secrets:
        assert secret not in dumped
    for word in ("access_token", "Authorization", "client_secret", "?"):
        assert word not in dumped.replace('"?"', "")


@pytest.mark.anyio
async def test_telemetry_false_records_nothing(emulator: Emulator, otel: Recorded) -> None:
    """Client(telemetry=False) emits no span and no measurement, copies included."""
    async with token_client(emulator, telemetry=False) as client:
        await client.chat(HI)
        async with client.with_options(max_retries=0).chat_stream(HI) as stream:
            await stream.get_final_response()
    assert otel.finished() == []
    assert otel.points("gen_ai.client.operation.duration") == []


def test_telemetry_must_be_a_bool() -> None:
    """Client(telemetry=...) takes True or False only, refused before any I/O."""
    with pytest.raises(mpt_async.ConfigurationError, match="telemetry"):
        mpt_async.Client(auth="t", base_url="http://127.0.0.1:9", telemetry="no")  # type: ignore[arg-type]


def test_without_the_api_nothing_is_imported_or_emitted(emulator: Emulator) -> None:
    """Without opentelemetry importable, calls and streams work and nothing OTel is loaded."""
    program = textwrap.dedent(
        """
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Blocker())

        import anyio
        import mpt_async

        async def main():
            async with mpt_async.Client() as client:
                reply = await client.chat([{"role": "user", "content": "hi"}])
                async with client.chat_stream([{"role": "user", "content": "hi"}]) as s:
                    final = await s.get_final_response()
            assert reply.result and final.result
            print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))

        anyio.run(main)
        """
    )
    env = scrubbed_env(**emulator.env())
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_global_providers_are_used_once_configured(emulator: Emulator) -> None:
    """With no provider set calls are not observed; once the app sets them, they are."""
    program = textwrap.dedent(
        """
        import anyio
        from opentelemetry import metrics, trace

        import mpt_async
        from mpt_async import _telemetry
        from tests.test_telemetry import Recorded

        HI = [{"role": "user", "content": "hi"}]

        async def main():
            async with mpt_async.Client() as client:
                await client.chat(HI)  # nothing configured: a no-op
                request = mpt_async.ChatRequest(messages=HI)
                assert _telemetry.observe("x", ("h", 1), request) is None
                recorded = Recorded()
                trace.set_tracer_provider(recorded.tracer_provider)
                metrics.set_meter_provider(recorded.meter_provider)
                await client.chat(HI)
            span = recorded.call_span()
            (duration, _), = recorded.points("gen_ai.client.operation.duration")
            print(span.name, duration.count)

        anyio.run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=scrubbed_env(**emulator.env()),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "chat mpt-30b-instruct 1\n"
