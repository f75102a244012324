"""The OpenAPI description: valid, current, served, and in step with the routes Flask has."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from flask import Flask
from openapi_spec_validator import validate

from exporter import config, openapi
from exporter.runtime import Runtime
from exporter.web import create_app
from tests.procs import ROOT

METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}  # HEAD and OPTIONS: Flask adds them


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    runtime = Runtime(config.build({"web": {"telemetry_path": "/custom-metrics"}}))
    try:
        yield create_app(runtime)
    finally:
        runtime.stop()


def described(doc: dict[str, object]) -> set[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {(path, method.upper()) for path, item in paths.items() for method in item}


def test_the_description_is_valid_openapi() -> None:
    validate(openapi.document())
    validate(openapi.document("/custom-metrics"))


def test_docs_openapi_yaml_is_current() -> None:
    """Regenerate with ``.venv/bin/python -m exporter.openapi``."""
    on_disk = (ROOT / "docs" / "openapi.yaml").read_text()
    assert yaml.safe_load(on_disk) == openapi.document(), \
        "docs/openapi.yaml is stale: run .venv/bin/python -m exporter.openapi"


def test_every_registered_route_is_described_and_nothing_else(app: Flask) -> None:
    registered = {(rule.rule, method) for rule in app.url_map.iter_rules()
                  if rule.endpoint != "static"
                  for method in (rule.methods or set()) & METHODS}
    assert registered == described(openapi.document("/custom-metrics"))


def test_the_exporter_serves_its_description(app: Flask) -> None:
    client = app.test_client()
    as_json = client.get(openapi.OPENAPI_JSON_PATH)
    assert as_json.status_code == 200
    assert as_json.mimetype == "application/json"
    as_yaml = client.get(openapi.OPENAPI_YAML_PATH)
    assert as_yaml.status_code == 200
    assert as_yaml.mimetype == "application/yaml"
    doc = json.loads(as_json.data)
    assert yaml.safe_load(as_yaml.data) == doc
    assert "/custom-metrics" in doc["paths"] and "/metrics" not in doc["paths"]


def test_the_event_schema_is_the_event_models(app: Flask) -> None:
    """The embedded event schema is the one /api/v1/schema serves, references moved."""
    served = json.loads(app.test_client().get("/api/v1/schema").data)
    schemas = openapi.document()["components"]["schemas"]
    for name, definition in served["$defs"].items():
        moved = json.loads(json.dumps(definition).replace('"#/$defs/',
                                                          '"#/components/schemas/'))
        assert schemas[name] == moved, name
    assert [r["$ref"].rsplit("/", 1)[1] for r in schemas["Event"]["anyOf"]] \
        == list(served["$defs"])
