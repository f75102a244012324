"""Schemathesis over docs/openapi.yaml against the real exporter process, bounded.

Every operation gets generated requests (tests/apifuzz.py), with authentication off and
with it on (a static admin token sent, random credentials on top in half the cases): no
5xx, and every answer's status, content type and body as the description says. The long
run (10,000 requests a route) is benchmarks/fuzz_api.py; ``AI_EXPORTER_FUZZ_EXAMPLES``
raises the count here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import apifuzz, apimutate
from tests.procs import Exporter
from tests.websec import sha256_line

pytestmark = pytest.mark.e2e

TOKEN = "openapi-fuzz-token-3b9e71c0"
HEALTH = {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}
OPEN_ROUTES = ("/livez", "/readyz", "/healthz")  # web.security.open_routes' default
EXAMPLES = int(os.environ.get("AI_EXPORTER_FUZZ_EXAMPLES", "0"))
# Seconds per authentication mode, shared by the routes: the run stops at the examples or
# at this, whichever comes first, however loaded the machine is.
BUDGET = float(os.environ.get("AI_EXPORTER_FUZZ_SECONDS", "30"))
MIN_REQUESTS = 10  # per route, even on a loaded machine


def exporter_config(workdir: Path, secured: bool) -> dict[str, Any]:
    web: dict[str, Any] = {"enable_lifecycle": True, "max_request_bytes": 256 * 1024}
    if secured:
        (workdir / "tokens").write_text(sha256_line("admin", TOKEN, "fuzzer"))
        web["security"] = {"tokens_file": str(workdir / "tokens")}
    return {"web": web, "health": HEALTH, "ai": {"max_series_per_metric": 200},
            "sources": {"otlp": {"enabled": True}}}


@pytest.fixture(scope="module", params=[False, True], ids=["open", "token"])
def exporter(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exporter, bool]]:
    secured: bool = request.param
    workdir = tmp_path_factory.mktemp("openapi-fuzz")
    proc = Exporter(workdir, config=exporter_config(workdir, secured))
    try:
        yield proc, secured
    finally:
        proc.stop()


def test_no_route_answers_a_server_error_or_off_its_description(
        exporter: tuple[Exporter, bool]) -> None:
    proc, secured = exporter
    examples = EXAMPLES or 200
    headers = {"Authorization": f"Bearer {TOKEN}"} if secured else None
    schema = apifuzz.load(proc.url, headers)
    ops = apifuzz.operations(schema)
    assert len(ops) >= 20
    report: list[str] = []
    failures: list[str] = []
    refused = 0
    for operation in ops:
        result = apifuzz.fuzz_operation(operation, proc.url, examples, headers,
                                        time_limit=BUDGET / len(ops),
                                        minimum=MIN_REQUESTS)
        label = apifuzz.label(operation)
        report.append(f"{label}: {result.requests} {dict(result.statuses)}")
        failures += [f"{label}: {f}" for f in result.failures]
        assert result.requests >= min(examples, MIN_REQUESTS), label
        assert not any(status >= 500 for status in result.statuses), label
        if secured and operation.path not in OPEN_ROUTES:
            assert result.statuses[401] < result.requests, label  # the token opens it
        refused += result.statuses[401]
    if secured:  # and the random credentials sent on top are refused
        assert refused > 0
    assert not failures, "\n".join(failures[:30])
    assert proc.alive()
    assert "Traceback" not in proc.log()
    print("\n".join(report))  # shown with -s: the requests and statuses per route


MUTATED = int(os.environ.get("AI_EXPORTER_FUZZ_MUTATED", "50"))  # requests per route


def test_mutated_requests_get_only_described_answers(exporter: tuple[Exporter, bool]) -> None:
    """Schemathesis's cases as seeds, each mutated (tests/apimutate.py): many more requests
    a route in the same time, every answer checked against the description."""
    proc, secured = exporter
    headers = {"Authorization": f"Bearer {TOKEN}"} if secured else None
    schema = apifuzz.load(proc.url, headers)
    failures: list[str] = []
    total = 0
    for index, operation in enumerate(apifuzz.operations(schema)):
        result = apimutate.run_route(operation, schema.raw_schema, proc.url, MUTATED,
                                     headers=headers,
                                     seeds=5, seed=index + 1, time_limit=BUDGET / 2,
                                     minimum=MIN_REQUESTS)
        label = apifuzz.label(operation)
        assert result.requests >= MIN_REQUESTS, label
        assert result.distinct > result.requests // 2, label  # mutations, not repeats
        assert not any(status >= 500 and status != 503 for status in result.statuses), label
        failures += [f"{label}: {f}" for f in result.failures]
        total += result.requests
    assert not failures, "\n".join(failures[:30])
    assert total >= 20 * MIN_REQUESTS
    assert proc.alive()
    assert "Traceback" not in proc.log()
