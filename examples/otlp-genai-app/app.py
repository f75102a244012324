"""An example instrumented application: GenAI spans over OTLP to ai-metrics-exporter.

A small, real OpenTelemetry SDK program that plays an agent calling LLM providers and a
tool, and exports its spans with the SDK's OTLP/HTTP exporter, configured entirely by the
standard environment variables:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://ai-metrics-exporter:10102   # the SDK appends /v1/traces
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
    OTEL_SERVICE_NAME=otlp-genai-app                               # becomes the component
    python examples/otlp-genai-app/app.py

In a real application you write none of the span code below: the official instrumentation
(``opentelemetry-instrumentation-genai-openai`` for the ``openai`` SDK, OpenLLMetry's for
Anthropic, MCP and others) emits these spans around each real call, with the same
attributes of the current GenAI semantic conventions: ``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens``, ``error.type`` on a failed call, and
``execute_tool`` spans for tool calls. Here no provider is called: latencies and token counts
are drawn from a seeded generator, every ``ERROR_EVERY``-th call fails with a rate limit.

The loop is bounded: ``CALLS`` iterations (default 1000), ``INTERVAL_SECONDS`` apart
(default 5), then every span is flushed and the program exits; SIGTERM (``docker compose
stop``) ends it early, flushed too. With ``HEARTBEAT_FILE`` set, the file is touched after each
iteration (the compose health check reads its age). Needs only ``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``, which the exporter's image contains.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


@dataclass(frozen=True)
class Model:
    provider: str  # gen_ai.provider.name
    name: str  # gen_ai.request.model
    response: str  # gen_ai.response.model: the version the provider answered with
    server: str  # server.address


MODELS = (
    Model("openai", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "api.openai.com"),
    Model("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "api.openai.com"),
    Model("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "api.anthropic.com"),
)
TOOLS = ("web_search", "read_file")
AGENT = "example-agent"


def _int_env(name: str, default: int) -> int:
    value = int(os.environ.get(name, str(default)))
    if value < 0:
        raise SystemExit(f"{name} must be >= 0, got {value}")
    return value


def _float_env(name: str, default: float) -> float:
    value = float(os.environ.get(name, str(default)))
    if value < 0:
        raise SystemExit(f"{name} must be >= 0, got {value}")
    return value


class App:
    def __init__(self, tracer: trace.Tracer, seed: int, error_every: int,
                 latency_scale: float) -> None:
        self.tracer = tracer
        self.random = random.Random(seed)  # noqa: S311 - simulated latencies, not secrets
        self.error_every = error_every
        self.latency_scale = latency_scale
        self.calls = 0

    def _work(self, low: float, high: float) -> None:
        """The time the provider (or the tool) takes to answer."""
        time.sleep(self.random.uniform(low, high) * self.latency_scale)

    def chat(self, model: Model) -> None:
        """One chat completion, as the instrumentation traces it."""
        self.calls += 1
        failing = self.error_every > 0 and self.calls % self.error_every == 0
        with self.tracer.start_as_current_span(
                f"chat {model.name}", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": model.provider,
                    "gen_ai.request.model": model.name,
                    "gen_ai.request.max_tokens": 512,
                    "server.address": model.server,
                    "server.port": 443,
                }) as span:
            if failing:
                self._work(0.02, 0.1)
                span.set_attribute("error.type", "rate_limit_exceeded")
                span.set_status(Status(StatusCode.ERROR, "429 Too Many Requests"))
                return
            self._work(0.2, 1.5)
            span.set_attributes({
                "gen_ai.response.model": model.response,
                "gen_ai.response.id": f"resp-{uuid.uuid4().hex}",
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.usage.input_tokens": self.random.randint(200, 2000),
                "gen_ai.usage.output_tokens": self.random.randint(20, 400),
            })

    def tool(self, name: str) -> None:
        with self.tracer.start_as_current_span(
                f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.agent.name": AGENT,
                }):
            self._work(0.01, 0.3)

    def step(self) -> None:
        """One agent step: a model call, sometimes a tool call and a second model call."""
        model = self.random.choice(MODELS)
        self.chat(model)
        if self.random.random() < 0.5:
            self.tool(self.random.choice(TOOLS))
            self.chat(model)


def main() -> int:
    calls = _int_env("CALLS", 1000)
    interval = _float_env("INTERVAL_SECONDS", 5.0)
    heartbeat = os.environ.get("HEARTBEAT_FILE", "")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # service.name from OTEL_SERVICE_NAME, endpoint and protocol from OTEL_EXPORTER_OTLP_*:
    # Resource.create() and the exporter read the standard variables.
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    app = App(provider.get_tracer("otlp-genai-app"), seed=_int_env("SEED", 1),
              error_every=_int_env("ERROR_EVERY", 10),
              latency_scale=_float_env("LATENCY_SCALE", 1.0))
    done = 0
    try:
        while done < calls and not stop.is_set():
            app.step()
            done += 1
            if heartbeat:
                Path(heartbeat).touch()
            if done < calls:
                stop.wait(interval)
    finally:
        provider.shutdown()  # exports what the batch processor still holds
    print(f"otlp-genai-app: {done} steps, {app.calls} chat calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
