"""A stand-in LLM provider on loopback for the GenAI client tests.

A threaded HTTP server on 127.0.0.1 (a free port) that answers like the providers' APIs, so
the real ``openai`` and ``anthropic`` SDKs (and the OTel instrumentations that wrap them) run
unchanged against it:

- OpenAI: ``POST /v1/chat/completions`` (a JSON answer, or Server-Sent Events with
  ``"stream": true``; the usage chunk last when ``stream_options.include_usage``) and
  ``POST /v1/embeddings``;
- Anthropic: ``POST /v1/messages`` (a JSON answer, or its event stream with ``"stream": true``).

Token counts are deterministic, so a test can assert exact sums:

- input tokens: the number of whitespace-separated words in the request's text (every
  message's text content, the Anthropic ``system`` prompt, the embeddings inputs);
- output tokens: ``DEFAULT_OUTPUT_TOKENS``, or N where the model name has a ``-outN`` part
  (``"gpt-test-out7"`` answers 7 tokens, 7 words); the answer text has that many words;
- cached input tokens: N for a ``-cachedN`` part (OpenAI ``prompt_tokens_details.cached_tokens``,
  at most the input tokens, which include them; Anthropic ``cache_read_input_tokens``, on top
  of ``input_tokens`` as Anthropic counts them);
- Anthropic cache writes: N for a ``-cwriteN`` part (``cache_creation_input_tokens``);
- OpenAI reasoning tokens: N for a ``-reasonN`` part
  (``completion_tokens_details.reasoning_tokens``, part of the output tokens).

A model named ``fail-CODE`` (``"fail-429"``, ``"fail-500"``) gets that HTTP status with the
provider's error body (and ``Retry-After: 0`` for 429). The answer's model is the request's.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.procs import LOOPBACK, free_port

DEFAULT_OUTPUT_TOKENS = 5
EMBEDDING_DIMENSIONS = 4
MAX_KEPT = 1000
MAX_BODY = 1 << 20
_PART = re.compile(r"-(out|cached|cwrite|reason)(\d+)")
_FAIL = re.compile(r"^fail-(\d{3})$")


@dataclass(frozen=True)
class Tokens:
    """The usage the stand-in answers for one request."""

    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Call:
    """One request the stand-in answered."""

    path: str
    model: str
    stream: bool
    status: int
    tokens: Tokens | None


def words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_words(body: dict[str, Any]) -> int:
    """Input tokens of a chat or messages request: the words of every message (and system)."""
    text = [_text_of(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)]
    text.append(_text_of(body.get("system", "")))
    return sum(words(t) for t in text)


def tokens_for(model: str, input_tokens: int) -> Tokens:
    """The usage for ``model`` (its ``-outN``/``-cachedN``/``-cwriteN``/``-reasonN`` parts)."""
    parts = {kind: int(n) for kind, n in _PART.findall(model)}
    return Tokens(input=input_tokens, output=parts.get("out", DEFAULT_OUTPUT_TOKENS),
                  cached=parts.get("cached", 0), cache_write=parts.get("cwrite", 0),
                  reasoning=parts.get("reason", 0))


def answer_text(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def openai_usage(tokens: Tokens) -> dict[str, Any]:
    cached = min(tokens.cached, tokens.input)
    return {
        "prompt_tokens": tokens.input,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.input + tokens.output,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": min(tokens.reasoning, tokens.output),
                                      "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def anthropic_usage(tokens: Tokens, output: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": tokens.input,
        "output_tokens": tokens.output if output is None else output,
        "cache_read_input_tokens": tokens.cached,
        "cache_creation_input_tokens": tokens.cache_write,
    }


@dataclass
class LlmStandin:
    """The stand-in server; ``start()``/``stop()`` or ``with LlmStandin() as llm:``.

    ``openai_base_url`` is what ``openai.OpenAI(base_url=...)`` takes, ``anthropic_base_url``
    what ``anthropic.Anthropic(base_url=...)`` takes. ``calls`` lists the answered requests
    (at most ``MAX_KEPT``). ``chunk_delay`` seconds pass before each streamed chunk."""

    port: int = field(default_factory=free_port)
    chunk_delay: float = 0.0
    calls: list[Call] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def start(self) -> LlmStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                standin._handle(self)

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name=f"llm-standin-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> LlmStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answered(self, path: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if path is None or c.path == path]

    # -- request handling -------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids:06d}"

    def _record(self, call: Call) -> None:
        with self._lock:
            if len(self.calls) < MAX_KEPT:
                self.calls.append(call)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        length = int(req.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            _send_json(req, 413, {"error": {"message": "body too large"}})
            return
        try:
            body = json.loads(req.rfile.read(length) or b"{}")
        except ValueError:
            _send_json(req, 400, {"error": {"message": "body is not JSON"}})
            return
        if not isinstance(body, dict):
            _send_json(req, 400, {"error": {"message": "body is not a JSON object"}})
            return
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        failing = _FAIL.match(model)
        if path not in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages"):
            _send_json(req, 404, {"error": {"message": f"no route {path}"}})
            return
        if failing:
            status = int(failing.group(1))
            self._record(Call(path, model, stream, status, None))
            if path == "/v1/messages":
                _send_json(req, status, _anthropic_error(status), retry=status == 429)
            else:
                _send_json(req, status, _openai_error(status), retry=status == 429)
            return
        if path == "/v1/embeddings":
            self._embeddings(req, body, model)
        elif path == "/v1/chat/completions":
            self._chat(req, body, model, stream)
        else:
            self._messages(req, body, model, stream)

    def _embeddings(self, req: BaseHTTPRequestHandler, body: dict[str, Any], model: str) -> None:
        raw = body.get("input", "")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw]
        n = sum(words(text) for text in inputs)
        dims = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        self._record(Call("/v1/embeddings", model, False, 200, Tokens(input=n, output=0)))
        _send_json(req, 200, {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i,
                      "embedding": [round(0.1 * (i + 1) * (d + 1), 3) for d in range(dims)]}
                     for i in range(len(inputs))],
            "usage": {"prompt_tokens": n, "total_tokens": n},
        })

    def _chat(self, req: BaseHTTPRequestHandler, body: dict[str, Any], model: str,
              stream: bool) -> None:
        tokens = tokens_for(model, prompt_words(body))
        self._record(Call("/v1/chat/completions", model, stream, 200, tokens))
        ident, created = self._next_id("chatcmpl-"), int(time.time())
        if not stream:
            _send_json(req, 200, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant",
                                         "content": answer_text(tokens.output),
                                         "refusal": None}}],
                "usage": openai_usage(tokens),
            })
            return
        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
            return {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_standin", "choices": choices,
                    "usage": usage}

        def events() -> Iterator[str]:
            yield _sse(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                               "finish_reason": None}]))
            for i in range(tokens.output):
                text = f"w{i}" if i == 0 else f" w{i}"
                yield _sse(chunk([{"index": 0, "delta": {"content": text},
                                   "finish_reason": None}]))
            yield _sse(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if include_usage:
                yield _sse(chunk([], openai_usage(tokens)))
            yield "data: [DONE]\n\n"

        self._send_stream(req, events())

    def _messages(self, req: BaseHTTPRequestHandler, body: dict[str, Any], model: str,
                  stream: bool) -> None:
        tokens = tokens_for(model, prompt_words(body))
        self._record(Call("/v1/messages", model, stream, 200, tokens))
        ident = self._next_id("msg_")
        message = {"id": ident, "type": "message", "role": "assistant", "model": model,
                   "stop_reason": "end_turn", "stop_sequence": None}
        if not stream:
            _send_json(req, 200, {**message,
                                  "content": [{"type": "text",
                                               "text": answer_text(tokens.output)}],
                                  "usage": anthropic_usage(tokens)})
            return

        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        def events() -> Iterator[str]:
            yield event("message_start", {"message": {
                **message, "content": [], "stop_reason": None,
                "usage": anthropic_usage(tokens, output=1)}})
            yield event("content_block_start",
                        {"index": 0, "content_block": {"type": "text", "text": ""}})
            for i in range(tokens.output):
                text = f"w{i}" if i == 0 else f" w{i}"
                yield event("content_block_delta",
                            {"index": 0, "delta": {"type": "text_delta", "text": text}})
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta",
                        {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": tokens.output}})
            yield event("message_stop", {})

        self._send_stream(req, events())

    def _send_stream(self, req: BaseHTTPRequestHandler, events: Iterator[str]) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "text/event-stream")
        req.send_header("Cache-Control", "no-cache")
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        for text in events:
            if self.chunk_delay:
                time.sleep(self.chunk_delay)
            data = text.encode()
            req.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            req.wfile.flush()
        req.wfile.write(b"0\r\n\r\n")
        req.wfile.flush()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _openai_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded", 400: "invalid_request_error",
            401: "invalid_api_key"}.get(status, "server_error")
    return {"error": {"message": f"stand-in error {status}", "type": kind, "param": None,
                      "code": kind}}


def _anthropic_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 400: "invalid_request_error",
            401: "authentication_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"stand-in error {status}"}}


def _send_json(req: BaseHTTPRequestHandler, status: int, payload: dict[str, Any],
               retry: bool = False) -> None:
    data = json.dumps(payload).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    if retry:
        req.send_header("Retry-After", "0")
    req.end_headers()
    req.wfile.write(data)
    req.wfile.flush()


def main() -> None:
    """``python -m tests.llm_standin``: serve on a free port (or $LLM_STANDIN_PORT) until
    interrupted, printing the base URL (a hand check of the clients)."""
    import os

    port = int(os.environ.get("LLM_STANDIN_PORT") or 0) or free_port()
    with LlmStandin(port=port) as standin:
        print(standin.base_url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
