"""The event model: decoding, every rejection reason, the duplicate-key proof, the schema."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import catalog, eventdocs
from exporter.aggregator import CONFIG_FED, FEEDS
from exporter.events import (
    EVENT_TYPES,
    KIND_OF,
    KINDS,
    REASONS,
    Error,
    EventDecoder,
    LlmCall,
    Rejection,
    json_schema,
    key_count,
)
from exporter.sources import snapshot

DECODER = EventDecoder()
ERROR = b'{"kind":"error","component":"planner","category":"timeout"}'


def reason(raw: bytes, decoder: EventDecoder = DECODER) -> str:
    result = decoder.decode_one(raw)
    assert isinstance(result, Rejection), f"{raw[:80]!r} was accepted as {result!r}"
    assert result.reason in REASONS
    assert result.detail
    return result.reason


# --- generated documentation --------------------------------------------------------


def test_published_schema_and_reference_are_current() -> None:
    for path, expected in eventdocs.outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        assert current == expected, (
            f"{path} is stale; regenerate it with: .venv/bin/python -m exporter.eventdocs")
    assert eventdocs.main(["--check"]) == 0


def test_schema_is_the_model() -> None:
    schema = json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["discriminator"]["mapping"]) == set(KINDS)
    for cls in EVENT_TYPES:
        definition = schema["$defs"][cls.__name__]
        assert definition["additionalProperties"] is False
        for name, prop in definition["properties"].items():
            assert name == "kind" or prop.get("description"), f"{cls.__name__}.{name}"


def test_every_kind_is_documented_with_an_example_that_decodes() -> None:
    text = eventdocs.render_markdown()
    assert set(eventdocs.EXAMPLES) == set(KINDS) == set(FEEDS) == set(KIND_OF.values())
    for kind, example in eventdocs.EXAMPLES.items():
        event = DECODER.decode_one(json.dumps(example).encode())
        assert not isinstance(event, Rejection), (kind, event)
        assert KIND_OF[type(event)] == kind
        assert f"### `{kind}`" in text
        for spec in FEEDS[kind]:
            assert f"| `{spec.name}` |" in text
    for reason_name in REASONS:
        assert f"| `{reason_name}` |" in text


def test_every_ai_metric_is_fed_by_events_or_configuration() -> None:
    """Each AI metric in the catalog is fed by an event kind, by configuration, or by a
    source that is not an event (probes, process matching, JSON snapshot files)."""
    fed = {spec.name for specs in FEEDS.values() for spec in specs}
    fed |= {spec.name for spec in CONFIG_FED}
    fed |= set(snapshot.CATALOG_GAUGES)
    not_events = {"ai_component_up", "ai_component_probe_", "ai_process_"}
    for spec in catalog.all_metrics():
        if spec.area not in (catalog.Area.AI, catalog.Area.GENAI, catalog.Area.COMPONENTS):
            continue
        if any(spec.name.startswith(prefix) for prefix in not_events):
            continue
        assert spec.name in fed, f"{spec.name} is fed by nothing"


# --- decoding -------------------------------------------------------------------------


def test_valid_event_decodes_with_defaults() -> None:
    event = DECODER.decode_one(b'{"kind":"llm_call","provider":"openai","model":"gpt-4o"}')
    assert event == LlmCall(provider="openai", model="gpt-4o")
    assert isinstance(event, LlmCall) and event.operation == "chat"
    assert DECODER.decode_one(memoryview(ERROR)) == Error(component="planner",
                                                          category="timeout")


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"kind":"error","component":"a"', "malformed_json"),
    (b'{"kind":"error","component":"a","category":"client"} {}', "malformed_json"),
    (b"", "malformed_json"),
    (b'{"kind":"error","component":"\xff\xfe","category":"client"}', "invalid_utf8"),
    (b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":NaN}', "non_finite_number"),
    (b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":Infinity}',
     "non_finite_number"),
    (b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":-Infinity}',
     "non_finite_number"),
    (b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":1e999}', "non_finite_number"),
    (b'[{"kind":"error","component":"a","category":"client"}]', "not_an_object"),
    (b'"error"', "not_an_object"),
    (b"42", "not_an_object"),
    (b'{"kind":"llm_cal","provider":"p","model":"m"}', "unknown_kind"),
    (b'{"kind":7,"provider":"p","model":"m"}', "unknown_kind"),
    (b'{"provider":"p","model":"m"}', "missing_field"),
    (b'{"kind":"llm_call","provider":"p"}', "missing_field"),
    (b'{"kind":"llm_call","provider":"p","model":"m","tokens":3}', "unknown_field"),
    (b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":"3"}', "wrong_type"),
    (b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":1.5}', "wrong_type"),
    (b'{"kind":"llm_call","provider":3,"model":"m"}', "wrong_type"),
    (b'{"kind":"security_event","category":"c","severity":"high","resolved":"yes"}',
     "wrong_type"),
    (b'{"kind":"llm_call","provider":"p","model":"m","input_tokens":-1}', "invalid_value"),
    (b'{"kind":"llm_call","provider":"p","model":"m","cost_usd":-0.5}', "invalid_value"),
    (b'{"kind":"task","component":"c","status":"paused"}', "invalid_value"),
    (b'{"kind":"quality_gate","gate":"g","decision":"approved","score":1.5}',
     "invalid_value"),
    (b'{"kind":"llm_call","provider":"","model":"m"}', "invalid_value"),
    (b'{"kind":"error","component":"a","category":"client","component":"b"}',
     "duplicate_key"),
    (b'{"kind":"error","component":"a","component" :"b","category":"client"}',
     "duplicate_key"),
    (b'{"kind":"error","kind":"error","component":"a","category":"client"}',
     "duplicate_key"),
    (b'{"kind":"error","component":"a","\\u0063omponent":"b","category":"client"}',
     "duplicate_key"),
    (b'{"kind":"error","component":"a:b","category":"client","component":"a:b"}',
     "duplicate_key"),
    (b'{"kind":"llm_call","provider":"p","model":"m","operation":"chat",'
     b'"operation":"chat"}', "duplicate_key"),
])
def test_bad_input_is_rejected_with_its_reason(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_event_over_the_size_limit_is_too_large() -> None:
    small = EventDecoder(max_event_bytes=len(ERROR))
    assert not isinstance(small.decode_one(ERROR), Rejection)
    padded = ERROR[:-1] + b" " * 10 + b"}"
    assert reason(padded, small) == "too_large"
    huge = (b'{"kind":"error","component":"' + b"x" * (1024 * 1024) +
            b'","category":"client"}')
    assert reason(huge) == "too_large"


@pytest.mark.parametrize("raw", [
    # colons and quotes inside values, explicit defaults, escapes, whitespace: no duplicate
    b'{"kind":"llm_call","provider":"ollama","model":"llama3:8b","operation":"chat"}',
    b'{"kind":"llm_call","provider":"p","model":"a\\":b","error_type":"x\\\\"}',
    b'{ "kind" : "task" , "component" : "c" , "status" : "queued" , "queue" : "default" }',
    b'{"kind":"error","component":"\\u0063:\\"","category":"client"}',
    b'{"kind":"error","component":"\\\\","category":"client","ts":null}',
    b'{\n  "kind": "error",\n  "component": "x",\n  "category": "auth"\n}',
])
def test_no_false_duplicates(raw: bytes) -> None:
    assert not isinstance(DECODER.decode_one(raw), Rejection), DECODER.decode_one(raw)


def test_key_count_ignores_colons_in_strings() -> None:
    assert key_count(b'{"a":"x:y","b\\":":1,"c":"\\\\"}') == 3


def test_decode_array_takes_the_fast_path_only_when_everything_is_valid() -> None:
    good = b"[" + b",".join([ERROR] * 3) + b"]"
    events = DECODER.decode_array(good)
    assert events is not None and len(events) == 3
    assert DECODER.decode_array(b"[" + ERROR + b',{"kind":"nope"}]') is None
    duplicate = b'{"kind":"error","component":"a","component":"b","category":"client"}'
    assert DECODER.decode_array(b"[" + ERROR + b"," + duplicate + b"]") is None
    assert DECODER.decode_array(b"[]") == []


def test_decode_lines_takes_the_fast_path_only_when_every_line_is_one_valid_event() -> None:
    events = DECODER.decode_lines(b"\n".join([ERROR] * 3))
    assert events is not None and len(events) == 3
    assert DECODER.decode_lines(ERROR + b"\r\n" + b"  " + ERROR + b" ") is not None
    duplicate = b'{"kind":"error","component":"a","component":"b","category":"client"}'
    for body in (
        ERROR + b"\n" + duplicate,  # duplicate key
        ERROR + b"\n\n" + ERROR,  # blank line
        ERROR + b"," + ERROR,  # two events on one line
        b'{"kind":"error","component":"a\n","category":"client"}',  # split inside a string
        # ... two lines that, joined with a plain comma, would read as two events
        b'{"kind":"error","component":"a\nb","category":"client"},' + ERROR,
        ERROR + b"\n[]",  # not an object
        ERROR + b'\n{"kind":"error","component":"\xff","category":"client"}',  # bad UTF-8
        b"",
    ):
        assert DECODER.decode_lines(body) is None, body
    # a line over the limit (max_event_bytes, or max_line if lower) is left to decode_one
    assert DECODER.decode_lines(ERROR + b"\n" + ERROR, max_line=len(ERROR)) is not None
    assert DECODER.decode_lines(ERROR + b"\n" + ERROR + b" ", max_line=len(ERROR)) is None
    assert DECODER.decode_lines(b"\n".join([ERROR] * 100), max_line=len(ERROR)) is not None
    padded = b"\n".join([ERROR] * 50 + [ERROR + b"  "] + [ERROR] * 50)
    assert DECODER.decode_lines(padded, max_line=len(ERROR) + 1) is None
    assert EventDecoder(max_event_bytes=len(ERROR)).decode_lines(padded) is None


# --- properties -------------------------------------------------------------------------

labels = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20)
seconds = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
tokens = st.integers(min_value=0, max_value=10**9)

VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "llm_call": st.fixed_dictionaries(
        {"provider": labels, "model": labels},
        optional={"operation": labels, "input_tokens": tokens, "output_tokens": tokens,
                  "cached_input_tokens": tokens, "duration_seconds": seconds,
                  "time_to_first_token_seconds": seconds, "error_type": st.text(max_size=10),
                  "cost_usd": st.floats(min_value=0, max_value=100, allow_nan=False),
                  "ts": st.none() | st.floats(min_value=0, max_value=2e9)}),
    "task": st.fixed_dictionaries(
        {"component": labels,
         "status": st.sampled_from(["queued", "started", "succeeded", "failed", "retried",
                                    "cancelled"])},
        optional={"queue": labels, "task_id": st.text(max_size=12),
                  "duration_seconds": seconds}),
    "error": st.fixed_dictionaries(
        {"component": labels,
         "category": st.sampled_from(["client", "server", "tool", "provider", "network",
                                      "timeout", "validation", "auth", "rate_limit",
                                      "internal"])}),
    "quality_gate": st.fixed_dictionaries(
        {"gate": labels, "decision": st.sampled_from(["approved", "rejected"])},
        optional={"score": st.none() | st.floats(min_value=0, max_value=1)}),
    "provider_limit": st.fixed_dictionaries(
        {"provider": labels},
        optional={"remaining_requests": tokens, "limit_tokens": tokens,
                  "reset_at": st.floats(min_value=0, max_value=4e9)}),
}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(VALID)))
    fields = draw(VALID[kind])
    items = [("kind", kind), *fields.items()]
    return dict(draw(st.permutations(items)))


def encode(obj: dict[str, Any], spaced: bool) -> bytes:
    separators = (" , ", " : ") if spaced else (",", ":")
    return json.dumps(obj, separators=separators, ensure_ascii=spaced).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events(), st.booleans())
def test_valid_events_round_trip(obj: dict[str, Any], spaced: bool) -> None:
    event = DECODER.decode_one(encode(obj, spaced))
    assert not isinstance(event, Rejection), (obj, event)
    assert KIND_OF[type(event)] == obj["kind"]
    built = msgspec.to_builtins(event)
    for key, value in obj.items():
        assert built[key] == value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events(), st.booleans(), st.data())
def test_any_repeated_key_is_a_duplicate(obj: dict[str, Any], spaced: bool,
                                         data: st.DataObject) -> None:
    raw = encode(obj, spaced)
    key = data.draw(st.sampled_from(sorted(obj)))
    value = json.dumps(obj[key]).encode()
    # Re-insert the key (same or other value) just before the closing brace.
    repeated = raw[:raw.rindex(b"}")] + b',"' + key.encode() + b'":' + value + b"}"
    assert reason(repeated) == "duplicate_key"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    result = DECODER.decode_one(raw)
    assert isinstance(result, Rejection) or type(result) in EVENT_TYPES
    if isinstance(result, Rejection):
        assert result.reason in REASONS


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from(sorted(KINDS)))
def test_arbitrary_json_never_raises(value: Any, kind: str) -> None:
    if isinstance(value, dict):
        value = {"kind": kind, **value}
    result = DECODER.decode_one(json.dumps(value).encode())
    if isinstance(result, Rejection):
        assert result.reason in REASONS
    else:
        assert KIND_OF[type(result)] == kind


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events() | json_values, max_size=8))
def test_array_fast_path_agrees_with_element_by_element(items: list[Any]) -> None:
    body = json.dumps(items).encode()
    per_element = [DECODER.decode_one(json.dumps(item).encode()) for item in items]
    fast = DECODER.decode_array(body)
    if any(isinstance(r, Rejection) for r in per_element):
        assert fast is None
    elif key_count(body) == body.count(b":"):  # no colon inside a string: fast path taken
        assert fast == per_element
    else:  # a colon inside a string value: the per-element path decides, same outcome
        assert fast is None or fast == per_element


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_events() | json_values, min_size=1, max_size=8), st.booleans(),
       st.sampled_from([b"\n", b"\r\n", b" \n"]))
def test_lines_fast_path_agrees_with_line_by_line(items: list[Any], spaced: bool,
                                                  end: bytes) -> None:
    raws = [encode(item, spaced) if isinstance(item, dict) else json.dumps(item).encode()
            for item in items]
    body = end.join(raws)
    per_line = [DECODER.decode_one(raw) for raw in body.split(b"\n")]
    fast = DECODER.decode_lines(body)
    if any(isinstance(r, Rejection) for r in per_line):
        assert fast is None
    elif key_count(body) == body.count(b":"):  # no colon inside a string: fast path taken
        assert fast == per_line
    else:
        assert fast is None or fast == per_line


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-4, max_value=2), min_size=1, max_size=30),
       st.integers(min_value=len(ERROR) + 4, max_value=len(ERROR) + 40))
def test_lines_over_the_limit_are_always_found(deltas: list[int], limit: int) -> None:
    lengths = [limit + delta for delta in deltas]  # around the limit, some over it
    body = b"\n".join(ERROR + b" " * (length - len(ERROR)) for length in lengths)
    fast = DECODER.decode_lines(body, max_line=limit)
    assert (fast is None) == (max(lengths) > limit)
