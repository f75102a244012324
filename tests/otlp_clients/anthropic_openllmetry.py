"""The real ``anthropic`` SDK, instrumented by OpenLLMetry's (traceloop's)
opentelemetry-instrumentation-anthropic, against the stand-in provider.

    STANDIN_URL=http://127.0.0.1:PORT OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT2 \\
        python tests/otlp_clients/anthropic_openllmetry.py

Calls, each count from the environment (0 skips): MESSAGES_CALLS messages (default 2),
STREAM_CALLS streamed messages (1), ERROR_CALLS messages that the stand-in answers 429 (1; no
retries). Model: MODEL (``claude-standin-out6-cached3-cwrite2``: 6 output tokens, 3 cache-read
and 2 cache-write input tokens at the stand-in). Prompt: PROMPT (``say hello to the
exporter``: 5 input tokens), MAX_TOKENS (64). Exporter protocol: OTEL_EXPORTER_OTLP_PROTOCOL,
see otel_setup.py. TRACELOOP_TRACE_CONTENT (the instrumentation's own switch, default on)
says whether prompts and completions go on the spans. Prints one JSON line of what it did.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anthropic
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

from tests.otlp_clients.otel_setup import count, setup, standin_url


def main() -> None:
    telemetry = setup()
    AnthropicInstrumentor().instrument(tracer_provider=telemetry.tracer_provider,
                                       meter_provider=telemetry.meter_provider,
                                       logger_provider=telemetry.logger_provider)
    client = anthropic.Anthropic(base_url=standin_url(), api_key="standin", max_retries=0,
                                 timeout=10)
    model = os.environ.get("MODEL", "claude-standin-out6-cached3-cwrite2")
    prompt = os.environ.get("PROMPT", "say hello to the exporter")
    max_tokens = int(os.environ.get("MAX_TOKENS", "64"))
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": prompt}]
    done = {"messages": 0, "stream": 0, "errors": 0}
    try:
        for _ in range(count("MESSAGES_CALLS", 2)):
            client.messages.create(model=model, max_tokens=max_tokens, messages=messages)
            done["messages"] += 1
        for _ in range(count("STREAM_CALLS", 1)):
            stream = client.messages.create(model=model, max_tokens=max_tokens,
                                            messages=messages, stream=True)
            for _event in stream:
                pass
            done["stream"] += 1
        for _ in range(count("ERROR_CALLS", 1)):
            try:
                client.messages.create(model="fail-429", max_tokens=max_tokens,
                                       messages=messages)
            except anthropic.RateLimitError:
                done["errors"] += 1
            else:
                raise SystemExit("the fail-429 call did not fail")
    finally:
        client.close()
        telemetry.shutdown()
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
