"""A running runtime whose AI state reads a test clock: heartbeat freshness and today's
spend as ``/metrics`` and ``/api/status/ai`` serve them, exact to the second, in process
and without waiting (the real process would need minutes of wall time, or a day).

Events are stamped when they are applied (the push path's batch time is the real one);
the clock decides how old they are at each scrape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from exporter import catalog, config
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.procs import sample_value

TIMEOUT = 120.0  # ai.heartbeat_timeout_seconds
DAY = 86_400.0


class Clock:
    """The real time shifted by a settable offset: events stamped with the real time age
    as the test moves the clock on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(clock: Clock) -> Iterator[Runtime]:
    rt = Runtime(config.build({"ai": {"heartbeat_timeout_seconds": TIMEOUT,
                                      "budgets": [{"scope": "openai", "usd_per_day": 5}]}}),
                 clock=clock)
    rt.start()
    yield rt
    rt.stop()


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def push(client: FlaskClient, *events: dict[str, Any]) -> None:
    response = client.post("/api/v1/events", data=json.dumps(list(events)),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def heartbeat_up(client: FlaskClient) -> float | None:
    return sample_value(client.get("/metrics").text, catalog.AI_COMPONENT_HEARTBEAT_UP.name,
                        {"component": "planner"})


def fresh(client: FlaskClient) -> bool:
    status = client.get("/api/status/ai").get_json(force=True)
    [row] = [c for c in status["components"] if c["component"] == "planner"]
    return bool(row["fresh"])


def test_a_heartbeat_goes_stale_past_the_timeout(client: FlaskClient, clock: Clock) -> None:
    push(client, {"kind": "component_status", "component": "planner",
                  "component_kind": "agent", "version": "1.0", "status": "up"})
    assert heartbeat_up(client) == 1.0 and fresh(client)
    clock.offset = TIMEOUT - 5
    assert heartbeat_up(client) == 1.0 and fresh(client)
    clock.offset = TIMEOUT + 5
    assert heartbeat_up(client) == 0.0 and not fresh(client)
    # A new heartbeat, stamped now, is fresh again at once.
    clock.offset = 0.0
    push(client, {"kind": "component_status", "component": "planner",
                  "component_kind": "agent", "version": "1.1", "status": "up"})
    assert heartbeat_up(client) == 1.0 and fresh(client)


def test_a_down_heartbeat_is_down_however_fresh(client: FlaskClient) -> None:
    push(client, {"kind": "component_status", "component": "planner",
                  "component_kind": "agent", "version": "1.0", "status": "down"})
    assert heartbeat_up(client) == 0.0 and fresh(client)


def test_todays_spend_is_served_until_utc_midnight(client: FlaskClient, clock: Clock) -> None:
    push(client, {"kind": "llm_call", "provider": "openai", "model": "gpt-4o",
                  "duration_seconds": 0.3, "cost_usd": 0.75})

    def spend(scope: str) -> float | None:
        return sample_value(client.get("/metrics").text, catalog.AI_BUDGET_SPEND.name,
                            {"scope": scope})

    assert spend("openai") == pytest.approx(0.75) and spend("total") == pytest.approx(0.75)
    now = time.time()
    midnight = (now // DAY + 1) * DAY
    clock.offset = midnight - now - 60  # a minute before midnight UTC: still today
    assert spend("openai") == pytest.approx(0.75)
    clock.offset = midnight - now + 60  # a minute after: a new day, nothing spent yet
    assert spend("openai") == 0.0 and spend("total") == 0.0
