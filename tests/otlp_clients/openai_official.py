"""The real ``openai`` SDK, instrumented by the official OTel GenAI instrumentation
(opentelemetry-instrumentation-genai-openai), against the stand-in provider.

    STANDIN_URL=http://127.0.0.1:PORT OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT2 \\
        python tests/otlp_clients/openai_official.py

Calls, each count from the environment (0 skips): CHAT_CALLS chat completions (default 2),
STREAM_CALLS streamed ones with the usage chunk (1), EMBEDDING_CALLS embeddings (1),
ERROR_CALLS chat completions that the stand-in answers 429 (1; no retries). Models:
CHAT_MODEL (``gpt-standin-out5-cached2-reason1``), EMBEDDING_MODEL (``text-embedding-standin``).
Prompt: PROMPT (``say hello to the exporter``: 5 input tokens at the stand-in). Exporter
protocol: OTEL_EXPORTER_OTLP_PROTOCOL (``http/protobuf`` or ``grpc``), see otel_setup.py.
Prints one JSON line of what it did.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import openai
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

from tests.otlp_clients.otel_setup import count, setup, standin_url


def main() -> None:
    telemetry = setup()
    OpenAIInstrumentor().instrument(tracer_provider=telemetry.tracer_provider,
                                    meter_provider=telemetry.meter_provider,
                                    logger_provider=telemetry.logger_provider)
    client = openai.OpenAI(base_url=f"{standin_url()}/v1", api_key="standin", max_retries=0,
                           timeout=10)
    model = os.environ.get("CHAT_MODEL", "gpt-standin-out5-cached2-reason1")
    embedding_model = os.environ.get("EMBEDDING_MODEL", "text-embedding-standin")
    prompt = os.environ.get("PROMPT", "say hello to the exporter")
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": prompt}]
    done = {"chat": 0, "stream": 0, "embeddings": 0, "errors": 0}
    try:
        for _ in range(count("CHAT_CALLS", 2)):
            client.chat.completions.create(model=model, messages=messages)
            done["chat"] += 1
        for _ in range(count("STREAM_CALLS", 1)):
            stream = client.chat.completions.create(
                model=model, messages=messages, stream=True,
                stream_options={"include_usage": True})
            for _chunk in stream:
                pass
            done["stream"] += 1
        for _ in range(count("EMBEDDING_CALLS", 1)):
            client.embeddings.create(model=embedding_model, input=prompt)
            done["embeddings"] += 1
        for _ in range(count("ERROR_CALLS", 1)):
            try:
                client.chat.completions.create(model="fail-429", messages=messages)
            except openai.RateLimitError:
                done["errors"] += 1
            else:
                raise SystemExit("the fail-429 call did not fail")
    finally:
        client.close()
        telemetry.shutdown()
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
