"""A real MCP server and client (the ``mcp`` SDK, stdio transport), both instrumented by
OpenLLMetry's (traceloop's) opentelemetry-instrumentation-mcp.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT python tests/otlp_clients/mcp_openllmetry.py

The client starts this same script with ``--serve`` as its stdio MCP server (a FastMCP server
with the tools ``add``, ``word_count`` and ``fail``, which raises), then makes LIST_CALLS
``tools/list`` requests (default 1), ADD_CALLS ``tools/call add`` (2), WORD_COUNT_CALLS
``tools/call word_count`` (1) and FAIL_CALLS ``tools/call fail`` (1; a tool error,
``isError``). Both import the mcp SDK after instrumenting, as auto-instrumentation
would. The server exports its own telemetry with OTEL_SERVICE_NAME set to
MCP_SERVER_SERVICE_NAME (default: the client's service name + ``-server``). No stand-in
provider is needed. Exporter protocol: OTEL_EXPORTER_OTLP_PROTOCOL, see otel_setup.py.
Prints one JSON line of what it did.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.instrumentation.mcp import McpInstrumentor

from tests.otlp_clients.otel_setup import count, setup

CALL_TIMEOUT_S = 20.0


def serve() -> None:
    """The MCP server side, on stdin/stdout."""
    telemetry = setup()
    McpInstrumentor().instrument(  # type: ignore[no-untyped-call]
        tracer_provider=telemetry.tracer_provider)
    # imported after instrument(), as auto-instrumentation would: the instrumentation wraps
    # mcp.server.stdio.stdio_server etc. in post-import hooks, which miss a name already bound
    from mcp.server.fastmcp import FastMCP

    server = FastMCP("standin-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """The sum of two integers."""
        return a + b

    @server.tool()
    def word_count(text: str) -> int:
        """The number of words in a text."""
        return len(text.split())

    @server.tool()
    def fail(reason: str = "asked to fail") -> str:
        """Always fails (a tool error)."""
        raise RuntimeError(reason)

    try:
        server.run("stdio")
    finally:
        telemetry.shutdown()


async def client() -> dict[str, int]:
    from mcp import ClientSession, StdioServerParameters  # after instrument(), as in serve()
    from mcp.client.stdio import stdio_client

    service = os.environ.get("OTEL_SERVICE_NAME", "mcp_openllmetry")
    env = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    env["OTEL_SERVICE_NAME"] = os.environ.get("MCP_SERVER_SERVICE_NAME", f"{service}-server")
    params = StdioServerParameters(command=sys.executable, args=[__file__, "--serve"], env=env)
    done = {"list": 0, "add": 0, "word_count": 0, "fail": 0, "tools": 0}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(session.initialize(), CALL_TIMEOUT_S)
        for _ in range(count("LIST_CALLS", 1)):
            listed = await asyncio.wait_for(session.list_tools(), CALL_TIMEOUT_S)
            done["tools"] = len(listed.tools)
            done["list"] += 1
        for i in range(count("ADD_CALLS", 2)):
            result = await asyncio.wait_for(
                session.call_tool("add", {"a": i, "b": 2}), CALL_TIMEOUT_S)
            assert not result.isError, result
            done["add"] += 1
        for _ in range(count("WORD_COUNT_CALLS", 1)):
            result = await asyncio.wait_for(
                session.call_tool("word_count", {"text": "three little words"}), CALL_TIMEOUT_S)
            assert not result.isError, result
            done["word_count"] += 1
        for _ in range(count("FAIL_CALLS", 1)):
            result = await asyncio.wait_for(session.call_tool("fail", {}), CALL_TIMEOUT_S)
            assert result.isError, result
            done["fail"] += 1
    return done


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    telemetry = setup()
    McpInstrumentor().instrument(  # type: ignore[no-untyped-call]
        tracer_provider=telemetry.tracer_provider)
    try:
        done = asyncio.run(client())
    finally:
        telemetry.shutdown()
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
