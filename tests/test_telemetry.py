"""OpenTelemetry spans and metrics of calls, read back from the SDK's in-memory exporters."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
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

from .clientkit import HI, cancel_when, scrubbed_env, token_client
from .hostile import ANSWER, TOKEN, Wire, hostile, json_reply

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
        "mpt_async.priority": "interactive",
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


def gauge_points(otel: Recorded, port: int) -> list[Any]:
    """The learned-rate gauge's points for the server on ``port``.

    Other tests' clients may still be alive (a fixture or a kept traceback can hold one).
    """
    points = otel.points("mpt_async.quota.learned_rate")
    return [point for point, _ in points if dict(point.attributes or {})["server.port"] == port]


@pytest.mark.anyio
async def test_learned_rate_gauge_follows_the_client(otel: Recorded) -> None:
    """The gauge mpt_async.quota.learned_rate reads each client's rate, down after a refusal."""
    with Emulator() as own:  # its own port: the points of this test's client alone
        async with token_client(own) as client:
            await client.chat(HI)
            first = client.learned_limits().qps
            (before,) = gauge_points(otel, own.port)
            own.inject(Fault.error(18))
            await client.chat(HI)
            (after,) = gauge_points(otel, own.port)
            assert before.value == first
            assert after.value == client.learned_limits().qps
            assert after.value < before.value
            assert dict(after.attributes or {}) == {
                "gen_ai.request.model": "mpt-30b-instruct",
                "server.address": "127.0.0.1",
                "server.port": own.port,
            }
        del client
        gc.collect()
        assert gauge_points(otel, own.port) == []  # a client gone, its point too


@pytest.mark.anyio
async def test_a_client_with_telemetry_off_has_no_gauge_point(otel: Recorded) -> None:
    """``telemetry=False``: the learned-rate gauge does not report the client's rate."""
    with Emulator() as own:
        async with token_client(own, telemetry=False) as client:
            await client.chat(HI)
            assert client.learned_limits().qps is not None
            assert gauge_points(otel, own.port) == []


class _Steady:
    def learned(self) -> mpt_async.LearnedLimits:
        return mpt_async.LearnedLimits(qps=1.0, rpm=None, tpm=None, adaptive=True)


def test_the_gauge_reads_while_clients_are_made_in_another_thread() -> None:
    """A metric reader's thread reads the gauge while clients register: every read succeeds.

    Unguarded, an insertion during the read's copy failed it ("dictionary changed size").
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    made = [_Steady()]
    _telemetry.watch_quota(made[0], "mpt-30b-instruct", ("127.0.0.1", 1))
    stop = threading.Event()

    def make() -> None:
        while not stop.is_set():
            made.append(limiter := _Steady())
            del made[1:-100]  # the oldest are collected, and leave the gauge
            _telemetry.watch_quota(limiter, "mpt-30b-instruct", ("127.0.0.1", 1))

    thread = threading.Thread(target=make)
    thread.start()
    try:
        reads = [len(list(_telemetry._learned_rates(None))) for _ in range(2000)]
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert min(reads) >= 1


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


# -- an SDK that raises ------------------------------------------------------------------


class Broken(Exception):
    """What the broken SDK parts raise."""


class RaisingProcessor(SimpleSpanProcessor):
    """A span processor that raises in ``on_start`` or ``on_end``."""

    def __init__(self, exporter: InMemorySpanExporter, where: str) -> None:
        super().__init__(exporter)
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise Broken
        super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "on_end":
            raise Broken
        super().on_end(span)


class RaisingAttributes:
    """A span whose attribute and event setters raise; the rest is the real span's."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def set_attribute(self, *args: Any) -> None:
        raise Broken

    set_attributes = add_event = set_status = set_attribute

    def __getattr__(self, name: str) -> Any:
        return getattr(self._span, name)


class BrokenProviders:
    """A tracer provider and a meter provider, one of whose parts raises."""

    def __init__(self, recorded: Recorded, where: str) -> None:
        self.recorded, self.where = recorded, where
        if where in ("on_start", "on_end"):
            processor = RaisingProcessor(recorded.spans, where)
            recorded.tracer_provider = TracerProvider()
            recorded.tracer_provider.add_span_processor(processor)

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        tracer = self.recorded.tracer_provider.get_tracer(*args, **kwargs)
        if self.where != "set_attribute":
            return tracer
        outer = self

        class Tracer:
            def start_span(self, *args: Any, **kwargs: Any) -> Any:
                return RaisingAttributes(tracer.start_span(*args, **kwargs))

        del outer
        return Tracer()

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        meter = self.recorded.meter_provider.get_meter(*args, **kwargs)
        if self.where != "record":
            return meter

        class Histogram:
            def record(self, *args: Any, **kwargs: Any) -> None:
                raise Broken

        class Meter:
            def create_histogram(self, *args: Any, **kwargs: Any) -> Histogram:
                return Histogram()

            def create_observable_gauge(self, *args: Any, **kwargs: Any) -> None:
                return None

        return Meter()


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["on_start", "on_end", "set_attribute", "record"])
async def test_an_sdk_that_raises_never_fails_a_call(
    emulator: Emulator,
    where: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever part of the SDK raises, calls answer or fail as such; one warning is logged."""
    monkeypatch.setattr(_telemetry, "_reported", False)
    monkeypatch.setenv(CONTENT_VAR, "true")
    recorded = Recorded()
    broken = BrokenProviders(recorded, where)
    with _telemetry.use_providers(broken, broken):  # type: ignore[arg-type]
        async with token_client(emulator, max_retries=1) as client:
            for _ in range(2):
                emulator.inject(Fault.error(336100))  # a retry event too
                reply = await client.chat(HI)
                assert reply.result
                async with client.chat_stream(HI) as stream:
                    assert (await stream.get_final_response()).result
            emulator.inject(Fault.error(336003))  # a refusal ends the call as failed
            with pytest.raises(mpt_async.InvalidRequestError):
                await client.chat(HI)
    warnings = [r for r in caplog.records if "OpenTelemetry raised" in r.getMessage()]
    assert len(warnings) == 1
    assert "Broken" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_a_tracer_provider_that_raises_leaves_calls_unobserved(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A global tracer provider whose get_tracer raises: calls answer, one warning."""
    from opentelemetry import trace

    class Provider:
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            raise Broken

    monkeypatch.setattr(_telemetry, "_reported", False)
    monkeypatch.setattr(_telemetry, "_instruments", _telemetry._UNSET)
    monkeypatch.setattr(trace, "get_tracer_provider", Provider)
    async with token_client(emulator) as client:
        for _ in range(2):
            assert (await client.chat(HI)).result
    assert sum("OpenTelemetry raised" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
async def test_a_cancellation_is_not_swallowed_by_telemetry(
    emulator: Emulator, otel: Recorded
) -> None:
    """A call cancelled while observed is cancelled (telemetry swallows only Exceptions)."""
    emulator.inject(Fault.stall(30))
    async with token_client(emulator) as client, anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            tg.start_soon(cancel_when, scope, lambda: emulator.stats.chat_requests == 1)
            await client.chat(HI)
    assert scope.cancelled_caught
    assert attributes(otel.call_span())["error.type"] == "cancelled"


# -- what is recorded: never a secret, never unbounded ----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("echo", ["url", "bare"])
async def test_the_response_id_never_carries_the_access_token(
    otel: Recorded, echo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server echoing the URL, or the bare token, into id and result: the span masks it."""
    monkeypatch.setenv(CONTENT_VAR, "true")

    def reply(wire: Wire) -> None:
        said = wire.target if echo == "url" else TOKEN
        wire.send(json_reply({**ANSWER, "id": f"as-1 {said}", "result": f"I got {said}"}))

    with hostile(reply) as server:
        auth = mpt_async.FixedTokenAuth(TOKEN)
        async with mpt_async.Client(auth=auth, base_url=server.url, max_retries=0) as client:
            answer = await client.chat(HI)
    assert TOKEN in answer.id  # the reply is the caller's; the span is not
    assert TOKEN in answer.result
    recorded = attributes(otel.call_span())
    assert str(recorded["gen_ai.response.id"]).startswith("as-1 ")
    assert "I got " in str(recorded["gen_ai.output.messages"])
    assert TOKEN not in otel.call_span().to_json()


@pytest.mark.anyio
async def test_captured_content_is_capped(
    emulator: Emulator, otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1.6 MB answer is recorded as at most 1 MiB of valid JSON: its start, cut at the cap."""
    monkeypatch.setenv(CONTENT_VAR, "true")
    answer = 'é"' * 400_000  # 4 bytes a pair, as JSON
    emulator.add_reply(answer)
    async with token_client(emulator) as client:
        reply = await client.chat(HI)
    assert reply.result == answer
    output = attributes(otel.call_span())["gen_ai.output.messages"]
    assert isinstance(output, str)
    assert len(output.encode()) <= _telemetry.CONTENT_LIMIT
    (message,) = json.loads(output)
    kept = message["parts"][0]["content"]
    assert answer.startswith(kept)
    assert len(kept) > _telemetry.CONTENT_LIMIT // 8


@pytest.mark.parametrize(
    "contents",
    [
        ["a" * 10, "b" * (2 << 20)],
        ["x" * (2 << 20), "y" * 10],
        ['\n\x00"' * 600_000, "é" * 10],
        ["中" * 400_000, "文" * 400_000],
    ],
    ids=["latest-long", "earliest-long", "escaped", "multibyte"],
)
def test_bounded_content_is_valid_json_under_the_cap(contents: list[str]) -> None:
    """Cut content stays valid JSON within the cap; each message keeps a start of its own."""
    messages = [{"role": "user", "parts": [{"type": "text", "content": c}]} for c in contents]
    text = _telemetry._bounded(messages)
    assert len(text.encode()) <= _telemetry.CONTENT_LIMIT
    kept = [m["parts"][0]["content"] for m in json.loads(text)]
    assert all(c.startswith(k) for c, k in zip(contents, kept, strict=True))
    assert len(text.encode()) > _telemetry.CONTENT_LIMIT - 16  # the budget is used
    assert kept[-1] == contents[-1] or len(kept[-1]) >= len(kept[0])


# -- the call's span is current ------------------------------------------------------------


@pytest.mark.anyio
async def test_http_spans_of_an_instrumented_client_nest_under_the_call(
    emulator: Emulator, otel: Recorded
) -> None:
    """Instrumented httpx: the token POST nests under token_fetch, chat POSTs under the call."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    http = httpx.AsyncClient()
    HTTPXClientInstrumentor.instrument_client(http, tracer_provider=otel.tracer_provider)
    async with token_client(emulator, http_client=http, max_retries=1) as client:
        emulator.inject(Fault.error(336100))
        await client.chat(HI)
        async with client.chat_stream(HI) as stream:
            await stream.get_final_response()
    await http.aclose()
    spans = otel.finished()
    names = {s.context.span_id: s.name for s in spans}
    parents = sorted(
        (s.name, names.get(s.parent.span_id) if s.parent else None)
        for s in spans
        if s.name == "POST"
    )
    assert parents == [
        ("POST", "chat mpt-30b-instruct"),
        ("POST", "chat mpt-30b-instruct"),
        ("POST", "chat mpt-30b-instruct"),
        ("POST", "mpt_async.token_fetch"),
    ]
    calls = [s for s in spans if s.name == "chat mpt-30b-instruct"]
    assert len(calls) == 2
    assert all(s.parent is None for s in calls)  # nothing of the call leaks out of it


@pytest.mark.anyio
async def test_the_call_span_is_current_only_during_the_call(
    emulator: Emulator, otel: Recorded
) -> None:
    """Around a call, and while a stream's reader iterates, the caller's span is current."""
    from opentelemetry import trace

    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("app") as app:
        async with token_client(emulator) as client:
            await client.chat(HI)
            assert trace.get_current_span() is app
            async with client.chat_stream(HI) as stream:
                async for _ in stream:
                    assert trace.get_current_span() is app
            assert trace.get_current_span() is app
    calls = [s for s in otel.finished() if s.name.startswith("chat ")]
    assert [s.parent.span_id for s in calls if s.parent] == [app.get_span_context().span_id] * 2


@pytest.mark.anyio
async def test_the_span_and_the_wait_carry_the_priority(emulator: Emulator, otel: Recorded) -> None:
    """A batch call's span says mpt_async.priority "batch"; so does its rate-limit wait."""
    limits = mpt_async.RateLimits(qps=1, adopt_server_limits=False, adaptive=False)
    async with token_client(emulator, rate_limits=limits) as client:
        await client.chat(HI)  # takes the first slot: the next call waits about a second
        async with client.batch([HI]) as results:
            assert [r.error async for r in results] == [None]
    calls = [s for s in otel.finished() if s.name.startswith("chat ")]
    assert [attributes(s)["mpt_async.priority"] for s in calls] == ["interactive", "batch"]
    (wait,) = [s for s in otel.finished() if s.name == "mpt_async.rate_limit_wait"]
    assert attributes(wait)["mpt_async.priority"] == "batch"
    assert wait.parent is not None
    assert wait.parent.span_id == calls[1].context.span_id
