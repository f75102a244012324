"""Run inside an interpreter whose ``exporter._otlp`` is a sanitizer build (argument 1:
the module file): the span reader over valid requests (compared with the protobuf
binding) and over mangled ones (truncated, bytes flipped, random), each of which it must
read or refuse with ValueError. Prints ``checked N`` at the end."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.otlp_intake.spantree import from_message
from tests.otlpcases import chat_attrs, traces


def main(path: str) -> int:
    spec = importlib.util.spec_from_file_location("exporter._otlp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = random.Random(7)
    bodies = [traces([{"attrs": chat_attrs(model=f"m{i}", extra={"k": "é" * i, "f": i / 3,
                                                                 "b": i % 2 == 0})}
                      for i in range(n)], service=f"s{n}").SerializeToString()
              for n in range(0, 40, 3)]
    # cache, reasoning, the agent, a cost, parent ids, an agent
    issue16 = {"gen_ai.usage.cache_read.input_tokens": 3,
               "gen_ai.usage.cache_write.input_tokens": 40,
               "gen_ai.usage.reasoning.output_tokens": 9, "gen_ai.agent.name": "a",
               "gen_ai.usage.cost": 0.5, "gen_ai.response.model": "r"}
    bodies += [traces([{"attrs": chat_attrs(model=f"m{i}", extra=issue16), "span": i,
                        "parent": max(i - 1, 0)} for i in range(n)], trace=n).SerializeToString()
               for n in range(1, 20, 4)]
    bodies.append(traces([{"attrs": {"gen_ai.operation.name": "invoke_agent",
                                     "gen_ai.agent.name": "p"}, "span": 1},
                          {"attrs": chat_attrs(extra=issue16), "span": 2, "parent": 1}]
                         ).SerializeToString())
    checked = 0
    for body in bodies:
        parsed_body = ExportTraceServiceRequest.FromString(body)
        assert module.spans(body, False) == from_message(parsed_body)
        assert len(module.spans(body)) == len(parsed_body.resource_spans)  # the fast path
        checked += 1
        for _ in range(300):
            data = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            if data and rng.random() < 0.5:
                del data[rng.randrange(len(data)):]
            mangled = bytes(data)
            try:
                got = module.spans(mangled, False)
            except ValueError:
                got = None
            with contextlib.suppress(ValueError):
                assert isinstance(module.spans(mangled), list)  # the fast path, same bytes
            try:
                parsed = ExportTraceServiceRequest.FromString(mangled)
            except DecodeError:
                parsed = None
            if got is not None and parsed is not None:
                # Both read it; a flipped byte inside a string may be invalid UTF-8, which
                # upb refuses first, so only bodies both accept are compared.
                assert got == from_message(parsed), mangled.hex()
            checked += 1
    for _ in range(2000):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        try:
            result = module.spans(noise, rng.random() < 0.5)
        except ValueError:
            result = []
        assert isinstance(result, list)
        checked += 1
    print(f"checked {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
