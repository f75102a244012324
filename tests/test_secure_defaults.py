"""Secure defaults in process: writes and reloads closed to non-loopback clients without a
credential, the lifecycle switch, and scoped credentials (each event checked on its own).

The same rules against a real second address (a network namespace) are in
``tests/test_security_matrix.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient

from exporter import config
from exporter.config import ConfigError, ScopeConfig
from exporter.events import (
    AnyEvent,
    ComponentStatus,
    Error,
    Rejection,
    SecurityEvent,
    Task,
    ToolCall,
)
from exporter.runtime import Runtime
from exporter.scopes import Scope, build_scopes, scope_from
from exporter.security import build_policy, exposure, in_networks
from exporter.web import create_app
from tests.procs import sample_value
from tests.websec import basic, bcrypt_hash, bearer, sha256_line, write_yaml

OTHER = "10.254.19.2"  # a client that is not loopback
EVENT = {"kind": "error", "component": "api", "category": "client"}
HEALTH = {"max_memory_utilization": 1.0, "max_disk_utilization": 1.0}
SECRET = "hs256-secret-for-scopes-0123456789abcdef"


def runtime_of(settings: dict[str, Any]) -> Runtime:
    runtime = Runtime(config.build({"health": HEALTH, **settings}))
    runtime.start()
    return runtime


@pytest.fixture
def default_app() -> Iterator[FlaskClient]:
    runtime = runtime_of({})
    yield create_app(runtime).test_client()
    runtime.stop()


def from_peer(client: FlaskClient, method: str, path: str, peer: str, **kw: Any) -> Any:
    return client.open(path, method=method, environ_base={"REMOTE_ADDR": peer}, **kw)


# --- closed writes, open reads ------------------------------------------------------------
def test_a_default_exporter_refuses_writes_from_another_network_and_names_the_setting(
        default_app: FlaskClient) -> None:
    refused = from_peer(default_app, "POST", "/api/v1/events", OTHER, json=[EVENT])
    assert refused.status_code == 403
    body = refused.get_json()
    assert body["setting"] == "web.write_allowed_networks"
    assert "web.write_allowed_networks" in body["detail"] and "127.0.0.0/8" in body["detail"]
    assert OTHER not in refused.get_data(as_text=True)  # the input is not echoed
    for path in ("/metrics", "/api/status/ai", "/livez", "/api/v1/schema"):
        assert from_peer(default_app, "GET", path, OTHER).status_code == 200, path
    for peer in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        ok = from_peer(default_app, "POST", "/api/v1/events", peer, json=[EVENT])
        assert ok.status_code == 200, peer
    metrics = default_app.get("/metrics").get_data(as_text=True)
    assert sample_value(metrics, "ai_exporter_http_auth_failures_total",
                        {"reason": "network_not_allowed"}) == 1
    assert sample_value(metrics, "ai_errors_total",
                        {"component": "api", "category": "client"}) == 4


def test_an_allow_list_opens_writes_to_its_networks_only() -> None:
    runtime = runtime_of({"web": {"write_allowed_networks": ["10.254.19.0/30"]}})
    try:
        client = create_app(runtime).test_client()
        assert from_peer(client, "POST", "/api/v1/events", OTHER, json=[EVENT]).status_code == 200
        assert from_peer(client, "POST", "/api/v1/events", "10.254.19.9",
                         json=[EVENT]).status_code == 403
        # The list replaces the default: loopback is no longer in it.
        assert from_peer(client, "POST", "/api/v1/events", "127.0.0.1",
                         json=[EVENT]).status_code == 403
    finally:
        runtime.stop()


def test_an_authenticated_writer_may_write_from_any_network(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(sha256_line("operator", "op-token", "ci"))
    runtime = runtime_of({"web": {"security": {"tokens_file": str(tokens)}}})
    try:
        client = create_app(runtime).test_client()
        assert from_peer(client, "POST", "/api/v1/events", OTHER, json=[EVENT],
                         headers=bearer("op-token")).status_code == 200
        assert from_peer(client, "POST", "/api/v1/events", OTHER,
                         json=[EVENT]).status_code == 401
    finally:
        runtime.stop()


def test_an_anonymous_writer_role_is_still_bound_to_the_allowed_networks(
        tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(sha256_line("admin", "admin-token", "ops"))
    runtime = runtime_of({"web": {"security": {"tokens_file": str(tokens),
                                               "anonymous_role": "operator"}}})
    try:
        client = create_app(runtime).test_client()
        assert from_peer(client, "POST", "/api/v1/events", "127.0.0.1",
                         json=[EVENT]).status_code == 200
        refused = from_peer(client, "POST", "/api/v1/events", OTHER, json=[EVENT])
        assert refused.status_code == 403
        assert refused.get_json()["setting"] == "web.write_allowed_networks"
    finally:
        runtime.stop()


@pytest.mark.parametrize(("networks", "field"), [(["10.0.0.0/33"], "web.write_allowed_networks.0"),
                                                 (["::1", "nonsense"],
                                                  "web.write_allowed_networks.1")])
def test_a_bad_network_is_a_config_error_naming_the_entry(networks: list[str],
                                                           field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config.build({"web": {"write_allowed_networks": networks}})


def test_peer_addresses_are_matched_as_addresses() -> None:
    nets = config.parse_networks(["10.0.0.0/8", "fd00::/8"])
    assert in_networks("10.1.2.3", nets) and in_networks("::ffff:10.0.0.1", nets)
    assert in_networks("fd00::1%eth0", nets)
    assert not in_networks("11.0.0.1", nets) and not in_networks("unknown", nets)
    assert not in_networks("", nets)


# --- the lifecycle switch -----------------------------------------------------------------
def test_reload_is_off_by_default_even_from_loopback(default_app: FlaskClient) -> None:
    refused = default_app.post("/-/reload")
    assert refused.status_code == 403
    body = refused.get_json()
    assert body["setting"] == "web.enable_lifecycle"
    assert "--web.enable-lifecycle" in body["detail"] and "SIGHUP" in body["detail"]
    assert default_app.get("/-/reload").status_code == 405  # not a lifecycle method


def test_enable_lifecycle_serves_reload_to_loopback_only_without_a_credential() -> None:
    runtime = runtime_of({"web": {"enable_lifecycle": True}})
    try:
        client = create_app(runtime).test_client()
        # No loader in this runtime: 400 "rejected" means the request reached the route.
        assert from_peer(client, "POST", "/-/reload", "127.0.0.1").status_code == 400
        refused = from_peer(client, "POST", "/-/reload", OTHER)
        assert refused.status_code == 403
        assert refused.get_json()["setting"] == "web.write_allowed_networks"
    finally:
        runtime.stop()


def test_the_lifecycle_flag_sets_the_config_key() -> None:
    from exporter.cli import build_parser, flags_layer

    args = build_parser().parse_args(["serve", "--web.enable-lifecycle"])
    assert config.build(flags_layer(args)).web.enable_lifecycle is True
    assert config.build({}).web.enable_lifecycle is False


# --- scoped credentials -------------------------------------------------------------------
def refused(result: AnyEvent | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason == "forbidden_scope"
    return result


def scope(**kw: Any) -> Scope:
    return scope_from("token:agent-a", ScopeConfig(**kw), "web.security.scopes.token:agent-a")


def test_a_scope_admits_its_components_and_fills_in_the_only_one() -> None:
    bound = scope(components=["agent-a"])
    assert bound.admit(Task(component="agent-a", status="queued")) == Task(
        component="agent-a", status="queued")
    assert "agent-b" in refused(bound.admit(Task(component="agent-b", status="queued"))).detail
    filled = bound.admit(SecurityEvent(category="auth_failure", severity="critical"))
    assert isinstance(filled, SecurityEvent) and filled.component == "agent-a"
    refused(bound.admit(SecurityEvent(category="x", severity="critical", component="agent-b")))
    tool = bound.admit(ToolCall(tool="search"))
    assert isinstance(tool, ToolCall) and tool.agent == "agent-a"


def test_a_scope_with_two_components_needs_the_event_to_name_one() -> None:
    bound = scope(components=["a", "b"])
    refused(bound.admit(SecurityEvent(category="x", severity="high")))
    assert isinstance(bound.admit(Error(component="b", category="tool")), Error)


def test_a_scope_limits_kinds_and_pins_label_fields() -> None:
    bound = scope(kinds=["task", "component_status"], labels={"queue": "team-a"})
    queued = bound.admit(Task(component="x", status="queued"))
    assert isinstance(queued, Task) and queued.queue == "team-a"  # "default" is filled in
    other_queue = refused(bound.admit(Task(component="x", status="queued", queue="team-b")))
    assert "queue='team-a'" in other_queue.detail
    assert isinstance(bound.admit(ComponentStatus(component="x")), ComponentStatus)
    page = refused(bound.admit(SecurityEvent(category="x", severity="critical")))
    assert "may not send security_event" in page.detail


def test_a_scope_survives_the_write_ahead_log_encoding() -> None:
    bound = scope(components=["a"], kinds=["task"], labels={"queue": "q"},
                  service_names=["svc"])
    assert Scope.decode(bound.encode()) == bound


@pytest.mark.parametrize(("scopes", "field"), [
    ({"agent-a": {"components": ["a"]}}, "web.security.scopes.agent-a"),
    ({"token:": {"components": ["a"]}}, "web.security.scopes.token:"),
    ({"token:a": {}}, "web.security.scopes.token:a"),
    ({"token:a": {"kinds": ["llm_call", "bogus"]}}, "web.security.scopes.token:a.kinds.1"),
    ({"token:a": {"labels": {"tenant": "t"}}}, "web.security.scopes.token:a.labels.tenant"),
    ({"token:a": {"components": [" "]}}, "web.security.scopes.token:a.components.0"),
])
def test_a_bad_scope_is_a_config_error_naming_the_field(scopes: dict[str, Any],
                                                         field: str) -> None:
    cfg = config.build({"web": {"security": {"scopes": scopes}}})
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_policy(cfg)


def scoped_runtime(tmp_path: Path) -> Runtime:
    tokens = tmp_path / "tokens"
    tokens.write_text(sha256_line("operator", "agent-a-token", "agent-a")
                      + sha256_line("operator", "free-token", "free"))
    (tmp_path / "secret").write_text(SECRET)
    web = write_yaml(tmp_path / "web.yml", {"basic_auth_users": {
        "agent-b": bcrypt_hash("b-pass")}})
    return runtime_of({"web": {"security": {
        "tokens_file": str(tokens), "web_config_file": str(web),
        "basic_auth_roles": {"agent-b": "operator"},
        "jwt": {"hs256_secret_file": str(tmp_path / "secret"), "audience": "exp",
                "scope_claim": "ai.scope"},
        "scopes": {"token:agent-a": {"components": ["agent-a"]},
                   "user:agent-b": {"components": ["agent-b"],
                                    "labels": {"queue": "tenant-b"}}}}}})


def errors_of(client: FlaskClient, component: str) -> float:
    text = client.get("/metrics", headers=bearer("free-token")).get_data(as_text=True)
    return sample_value(text, "ai_errors_total",
                        {"component": component, "category": "tool"}) or 0.0


def test_a_scoped_token_counts_its_own_events_and_rejects_the_rest(tmp_path: Path) -> None:
    runtime = scoped_runtime(tmp_path)
    try:
        client = create_app(runtime).test_client()
        batch = [{"kind": "error", "component": "agent-a", "category": "tool"},
                 {"kind": "error", "component": "agent-b", "category": "tool"},
                 {"kind": "error", "category": "tool"},  # no component: bad JSON event
                 {"kind": "security_event", "category": "auth", "severity": "critical",
                  "component": "agent-b"},
                 {"kind": "error", "component": "agent-a", "category": "tool"}]
        answer = client.post("/api/v1/events", json=batch, headers=bearer("agent-a-token"))
        assert answer.status_code == 207
        body = answer.get_json()
        assert body["accepted"] == 2 and body["rejected"] == 3
        assert [(e["index"], e["reason"]) for e in body["errors"]] == [
            (1, "forbidden_scope"), (2, "missing_field"), (3, "forbidden_scope")]
        assert errors_of(client, "agent-a") == 2 and errors_of(client, "agent-b") == 0
        # NDJSON and a single object go the same way; the unscoped token is unbounded.
        ndjson = b'{"kind":"error","component":"agent-b","category":"tool"}\n'
        refused = client.post("/api/v1/events", data=ndjson,
                              headers={**bearer("agent-a-token"),
                                       "Content-Type": "application/x-ndjson"})
        assert refused.status_code == 400
        assert refused.get_json()["errors"][0] == {
            "index": 0, "line": 1, "reason": "forbidden_scope",
            "detail": "token:agent-a may not report for component 'agent-b'"}
        assert client.post("/api/v1/events", json=batch[1],
                           headers=bearer("free-token")).status_code == 200
        assert errors_of(client, "agent-b") == 1
        text = client.get("/metrics", headers=bearer("free-token")).get_data(as_text=True)
        assert sample_value(text, "ai_exporter_events_rejected_total",
                            {"source": "push", "reason": "forbidden_scope"}) == 3
    finally:
        runtime.stop()


def test_basic_auth_users_and_jwt_claims_are_scoped_too(tmp_path: Path) -> None:
    runtime = scoped_runtime(tmp_path)
    try:
        client = create_app(runtime).test_client()
        task = {"kind": "task", "component": "agent-b", "status": "queued"}
        answer = client.post("/api/v1/events", json=[task, {**task, "component": "agent-a"}],
                             headers=basic("agent-b", "b-pass"))
        assert answer.get_json()["accepted"] == 1
        text = client.get("/metrics", headers=bearer("free-token")).get_data(as_text=True)
        assert sample_value(text, "ai_tasks_total", {"component": "agent-b",
                                                     "queue": "tenant-b",
                                                     "status": "queued"}) == 1
        claims = {"aud": "exp", "exp": 2_000_000_000, "sub": "agent-c", "role": "operator",
                  "ai": {"scope": {"components": ["agent-c"]}}}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        answer = client.post("/api/v1/events",
                             json=[{"kind": "error", "component": "agent-c", "category": "tool"},
                                   {"kind": "error", "component": "agent-a", "category": "tool"}],
                             headers=bearer(token))
        assert answer.get_json()["accepted"] == 1
        assert answer.get_json()["errors"][0]["detail"] == (
            "jwt:agent-c may not report for component 'agent-a'")
        bad = jwt.encode({**claims, "ai": {"scope": {"kinds": ["nope"]}}}, SECRET,
                         algorithm="HS256")
        assert client.post("/api/v1/events", json=[], headers=bearer(bad)).status_code == 401
    finally:
        runtime.stop()


def test_the_push_tokens_take_the_token_push_scope() -> None:
    runtime = runtime_of({"sources": {"push": {"tokens": ["legacy-token"]}},
                          "web": {"security": {"scopes": {
                              "token:push": {"components": ["legacy"]}}}}})
    try:
        client = create_app(runtime).test_client()
        answer = client.post("/api/v1/events", json=[
            {"kind": "error", "component": "legacy", "category": "tool"},
            {"kind": "error", "component": "other", "category": "tool"}],
            headers=bearer("legacy-token"))
        assert answer.status_code == 207 and answer.get_json()["accepted"] == 1
    finally:
        runtime.stop()


def test_a_replayed_batch_is_judged_by_the_scope_it_was_sent_with(tmp_path: Path) -> None:
    """Logged with its scope, replayed after a crash before any commit: the same events
    count, and the forbidden one is rejected again, not counted."""
    from exporter.aggregator import Aggregator
    from exporter.ingest import Ingestor
    from exporter.sources.push import PushSource
    from exporter.storage import StateStore

    store = StateStore(tmp_path / "data")
    ingestor = Ingestor(Aggregator())
    store.open(ingestor)
    source = PushSource(ingestor, 1 << 20, wal=store.wal)
    body = (b'[{"kind":"error","component":"a","category":"tool"},'
            b'{"kind":"error","component":"b","category":"tool"}]')
    bounded = scope_from("token:a", ScopeConfig(components=["a"]), "x")
    assert source.handle(body, "application/json", "", bounded).body["accepted"] == 1
    store.wal.close()
    store.lock.release()  # kill -9: no commit holds the batch, only the log
    again = StateStore(tmp_path / "data")
    replayed = Ingestor(Aggregator())
    again.open(replayed)
    assert again.replay({"push": PushSource(replayed, 1 << 20, wal=again.wal).replay}) == 1
    counts = replayed.snapshot()
    assert intake_counts(counts) == intake_counts(ingestor.snapshot())
    assert "forbidden_scope" in repr(counts)
    again.close()


def intake_counts(snapshot: dict[str, Any]) -> str:
    return repr(sorted((k, v) for k, v in snapshot.items() if "time" not in k))


def test_build_scopes_keys_by_credential_name() -> None:
    scopes = build_scopes({"user:ops": ScopeConfig(kinds=["task"])})
    assert scopes["user:ops"].kinds == frozenset({"task"})


# --- what start-up says -------------------------------------------------------------------
def test_start_up_says_what_is_open_to_whom() -> None:
    open_all = exposure(build_policy(config.build({})), ":10102")
    assert open_all[0][0] == logging.WARNING
    assert "every client that reaches port 10102" in open_all[0][1]
    assert "127.0.0.0/8, ::1/128" in open_all[0][1]
    local = exposure(build_policy(config.build({})), "127.0.0.1:10102")
    assert local[0][0] == logging.INFO and "clients on 127.0.0.1:10102" in local[0][1]
    lifecycle = exposure(build_policy(config.build({"web": {"enable_lifecycle": True}})),
                         ":10102")
    assert any("lifecycle API on" in line for _level, line in lifecycle)
