"""Prices from tokens (exporter/pricing.py): the genai-prices table read offline, provider
names mapped from gen_ai.provider.name, overrides over the price file over the library,
and a bad price configuration ending the real process with exit 2 naming the field."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.exposition import generate_latest

from exporter import catalog, config, pricing
from exporter.aggregator import Aggregator
from exporter.collectors.base import CollectorContext, CollectorDeps
from exporter.collectors.pricing import PricingCollector
from exporter.config import ConfigError, PriceOverrideConfig, PricingConfig
from exporter.events import LlmCall
from exporter.ingest import Ingestor
from exporter.pricing import PriceTable, Rates, read_price_file
from exporter.scrape import StaticFamilies
from tests.procs import EXPORTER_BIN, LOOPBACK, free_port, sample_value

M = 1e-6  # one US dollar per million tokens, per token


def _close(rates: Rates | None, input: float, output: float, cache_read: float,
           cache_write: float, reasoning: float) -> None:
    """``rates`` equal these prices per million tokens."""
    assert rates is not None
    expected = (input, output, cache_read, cache_write, reasoning)
    for got, want in zip(rates, expected, strict=True):
        assert math.isclose(got, want * M, rel_tol=1e-12), (rates, expected)


@pytest.fixture(scope="module")
def library() -> PriceTable:
    return PriceTable.from_settings(PricingConfig())


# --- the bundled genai-prices data ---------------------------------------------------------

def test_openai_gpt_4o_library_prices(library: PriceTable) -> None:
    # $2.50 in, $10 out, $1.25 cached in; no cache-write price (input), no reasoning (output).
    _close(library.rates("openai", "gpt-4o"), 2.5, 10.0, 1.25, 2.5, 10.0)
    _close(library.rates("openai", "gpt-4o-mini"), 0.15, 0.6, 0.075, 0.15, 0.6)


def test_anthropic_claude_library_prices(library: PriceTable) -> None:
    # Claude Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write (5 minutes);
    # tiered past 200k input tokens: the base tier is taken.
    _close(library.rates("anthropic", "claude-sonnet-4-5"), 3.0, 15.0, 0.3, 3.75, 15.0)
    _close(library.rates("anthropic", "claude-3-5-haiku-latest"), 0.8, 4.0, 0.08, 1.0, 4.0)


def test_gemini_library_prices_at_the_base_tier(library: PriceTable) -> None:
    # Gemini 2.5 Pro: $1.25 in / $10 out up to 200k input tokens ($2.50 / $15 above).
    _close(library.rates("gcp.gemini", "gemini-2.5-pro"), 1.25, 10.0, 0.125, 1.25, 10.0)
    _close(library.rates("gcp.gemini", "gemini-2.0-flash"), 0.1, 0.4, 0.025, 0.1, 0.4)


def test_library_rates_read_tiers_reasoning_and_missing_prices() -> None:
    from genai_prices.types import ModelPrice, Tier, TieredPrices
    tiered = ModelPrice(input_mtok=TieredPrices(base=D("2"), tiers=[Tier(200_000, D("4"))]),
                        output_mtok=D("8"), output_reasoning_mtok=D("12"),
                        cache_write_mtok=D("2.5"))
    _close(pricing.library_rates(tiered), 2.0, 8.0, 2.0, 2.5, 12.0)
    assert pricing.library_rates(ModelPrice(requests_kcount=D("1"))) is None
    embeddings = pricing.library_rates(ModelPrice(input_mtok=D("0.02")))
    _close(embeddings, 0.02, 0.0, 0.02, 0.02, 0.0)


PROVIDERS = {
    # gen_ai.provider.name -> a model and its input price per million at that provider.
    ("gcp.vertex_ai", "gemini-2.0-flash"): 0.1,
    ("gcp.gen_ai", "gemini-2.0-flash"): 0.1,
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"): 3.0,
    ("azure.ai.openai", "gpt-4o"): 2.5,        # Azure's table falls back to OpenAI's
    ("azure.ai.inference", "gpt-4o"): 2.5,
    ("mistral_ai", "mistral-large-latest"): 2.0,
    ("x_ai", "grok-3"): 3.0,
    ("deepseek", "deepseek-chat"): 0.27,
    ("OpenAI", "GPT-4o"): 2.5,                 # case does not matter
    ("", "gpt-4o"): 2.5,                       # no provider: inferred from the model name
    ("litellm", "openai/gpt-4o"): 2.5,         # LiteLLM's provider/model form
    ("azure", "gpt-4o"): 2.5,                  # a library id given as is
}


@pytest.mark.parametrize(("provider", "model"), sorted(PROVIDERS))
def test_provider_names_map_to_library_ids(library: PriceTable, provider: str,
                                           model: str) -> None:
    rates = library.rates(provider, model)
    assert rates is not None, (provider, model)
    assert math.isclose(rates.input, PROVIDERS[provider, model] * M, rel_tol=1e-12)


def test_every_mapped_provider_id_exists_in_the_library() -> None:
    from genai_prices import data

    ids = {p.id for p in data.providers}
    assert {v for v in pricing.PROVIDER_IDS.values() if v is not None} <= ids


@pytest.mark.parametrize(("provider", "model"), [
    ("ibm.watsonx.ai", "ibm/granite-13b-chat-v2"),  # no watsonx table in the library
    ("vllm", "gpt-4o"),                             # an unknown provider is not guessed
    ("openai", "no-such-model-xyz"),
    ("openai", ""),
    ("", "no-such-model-xyz"),
])
def test_unknown_models_and_providers_are_unpriced(library: PriceTable, provider: str,
                                                   model: str) -> None:
    assert library.rates(provider, model) is None


# --- Rates ---------------------------------------------------------------------------------

def test_cost_prices_each_token_type_at_its_rate() -> None:
    rates = Rates.per_million(2.0, 8.0, cache_read=0.5, cache_write=2.5, reasoning=10.0)
    # 1000 input of which 600 cache read and 100 cache write; 300 output of which 200
    # reasoning.
    cost = rates.cost(1000, 300, 600, 100, 200)
    assert math.isclose(cost, (300 * 2.0 + 600 * 0.5 + 100 * 2.5 + 100 * 8.0
                               + 200 * 10.0) * M)
    # Subsets larger than their total are floored, never negative.
    assert rates.cost(10, 0, 20, 0, 5) == pytest.approx((20 * 0.5 + 5 * 10.0) * M)
    defaults = Rates.per_million(3.0, 6.0)
    assert defaults == Rates(3 * M, 6 * M, 3 * M, 3 * M, 6 * M)


# --- overrides, the price file, precedence -------------------------------------------------

def _entry(model: str, input: float, output: float, **extra: Any) -> PriceOverrideConfig:
    return PriceOverrideConfig(model=model, input=input, output=output, **extra)


def _price_file(tmp_path: Path, entries: list[dict[str, Any]], name: str = "prices.yml"
                ) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(entries) if name.endswith(".json") else yaml.safe_dump(entries))
    return path


def test_overrides_beat_the_file_which_beats_the_library(tmp_path: Path) -> None:
    path = _price_file(tmp_path, [
        {"model": "gpt-4o", "input": 1.0, "output": 4.0},                 # over the library
        {"model": "gpt-4o-mini", "input": 0.1, "output": 0.2},            # under an override
        {"model": "house-model", "provider": "vllm", "input": 0.3, "output": 0.9,
         "cache_read": 0.03},
    ])
    settings = PricingConfig(price_file=str(path), overrides=[
        _entry("gpt-4o-mini", 0.05, 0.1, reasoning=0.4)])
    table = PriceTable.from_settings(settings)
    _close(table.rates("openai", "gpt-4o"), 1.0, 4.0, 1.0, 1.0, 4.0)
    _close(table.rates("openai", "gpt-4o-mini"), 0.05, 0.1, 0.05, 0.05, 0.4)
    _close(table.rates("vllm", "house-model"), 0.3, 0.9, 0.03, 0.3, 0.9)
    assert table.rates("ollama", "house-model") is None  # the entry names its provider
    _close(table.rates("anthropic", "claude-sonnet-4-5"), 3.0, 15.0, 0.3, 3.75, 15.0)
    assert table.info() == pricing.PriceTableInfo("genai-prices", pricing.library_version(),
                                                  "1", str(path))


def test_an_entry_naming_the_provider_beats_one_for_any_provider() -> None:
    table = PriceTable([_entry("Llama-3", 1.0, 1.0), _entry("llama-3", 2.0, 2.0,
                                                            provider="Groq")])
    _close(table.rates("groq", "LLAMA-3"), 2.0, 2.0, 2.0, 2.0, 2.0)
    _close(table.rates("together_ai", "llama-3"), 1.0, 1.0, 1.0, 1.0, 1.0)


def test_library_off_prices_only_what_is_configured() -> None:
    table = PriceTable.from_settings(PricingConfig(enabled=False, overrides=[
        _entry("local", 0.0, 0.0)]))
    assert table.rates("openai", "gpt-4o") is None
    assert table.rates("vllm", "local") == Rates(0.0, 0.0, 0.0, 0.0, 0.0)  # priced at 0
    assert table.info() == pricing.PriceTableInfo("config", "", "1", "")


def test_json_price_file(tmp_path: Path) -> None:
    path = _price_file(tmp_path, [{"model": "m", "input": 1.5, "output": 3}], "p.json")
    assert read_price_file(str(path)) == [_entry("m", 1.5, 3.0)]


@pytest.mark.parametrize(("content", "message"), [
    ("- {model: m, input: 1}\n", "ai.pricing.price_file: {path}: entry 0: Object missing "
                                 "required field `output`"),
    ("- {model: m, input: -1, output: 1}\n", "ai.pricing.price_file: {path}: entry "
                                             "0.input: Expected `float` >= 0"),
    ("- {model: m, input: .inf, output: 1}\n", "ai.pricing.price_file: {path}: entry 0: "
                                               "input: must be a finite number"),
    ("- {model: m, input: 1, output: 1, typo: 2}\n", "ai.pricing.price_file: {path}: entry "
                                                     "0.typo: Object contains unknown field"),
    ("- {model: m, input: 1, output: 1}\n- {model: M, input: 2, output: 2}\n",
     "ai.pricing.price_file: {path}: entry 1: model 'M' is already listed as entry 0"),
    ("{model: m}\n", "ai.pricing.price_file: {path} must hold a list of price entries"),
    ("- [unclosed\n", "ai.pricing.price_file: {path} is not valid YAML"),
])
def test_bad_price_file_names_the_entry(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.yml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_price_file(str(path))
    assert str(caught.value).startswith(message.format(path=path)), str(caught.value)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ai\.pricing\.price_file: cannot read .*missing"):
        PriceTable.from_settings(PricingConfig(price_file=str(tmp_path / "missing.yml")))


@pytest.mark.parametrize(("layer", "field"), [
    ({"overrides": [{"model": "m", "input": -1, "output": 1}]}, "ai.pricing.overrides.0.input"),
    ({"overrides": [{"model": "m", "input": 1}]}, "ai.pricing.overrides.0"),
    ({"overrides": [{"model": "", "input": 1, "output": 1}]}, "ai.pricing.overrides.0.model"),
    ({"overrides": [{"model": "m", "input": 1, "output": 1},
                    {"model": "m", "input": 2, "output": 1}]}, "ai.pricing.overrides.1"),
    ({"enabled": "sometimes"}, "ai.pricing.enabled"),
    ({"price_fil": "x"}, "ai.pricing.price_fil"),
])
def test_bad_pricing_config_names_the_field(layer: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.build({"ai": {"pricing": layer}})
    assert str(caught.value).startswith(f"{field}: "), str(caught.value)


def test_pricing_config_from_the_environment() -> None:
    cfg = config.build(config.from_environment({
        "AI_EXPORTER_AI__PRICING__ENABLED": "false",
        "AI_EXPORTER_AI__PRICING__OVERRIDES": "[{model: m, input: 1, output: 2}]"}))
    assert cfg.ai.pricing == PricingConfig(enabled=False, overrides=[_entry("m", 1.0, 2.0)])


# --- memoised, bounded, offline ------------------------------------------------------------

def test_lookups_are_memoised_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    table = PriceTable([_entry("m", 1.0, 1.0)], library=False)
    calls: list[tuple[str, str]] = []
    real = table._lookup

    def counting(provider: str, model: str) -> Rates | None:
        calls.append((provider, model))
        return real(provider, model)

    monkeypatch.setattr(table, "_lookup", counting)
    for _ in range(3):
        assert table.rates("p", "m") is not None
        assert table.rates("p", "unknown") is None
    assert calls == [("p", "m"), ("p", "unknown")]
    monkeypatch.setattr(pricing, "MAX_MEMO", 10)
    for i in range(50):
        table.rates("p", f"model-{i}")
    assert len(table._memo) <= 10
    assert table.rates("p", "model-49") is None and len(calls) == 52  # the newest is kept


def test_no_socket_is_opened_building_and_querying(monkeypatch: pytest.MonkeyPatch) -> None:
    """genai-prices can fetch prices from GitHub (UpdatePrices); the exporter never does."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"network use: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    table = PriceTable.from_settings(PricingConfig())
    for provider, model in [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"),
                            ("gcp.gemini", "gemini-2.5-pro"), ("vllm", "unknown"),
                            ("", "unknown-model")]:
        table.rates(provider, model)
    assert attempts == []
    assert not [t for t in threading.enumerate() if t.name.startswith("genai_prices")]
    from genai_prices import update_prices

    assert update_prices._shared_updater.thread is None
    assert update_prices._shared_updater.ref_count == 0


@pytest.mark.e2e
def test_fresh_process_opens_no_socket() -> None:
    """The same in a fresh interpreter, socket refused before anything is imported."""
    script = (
        "import socket, threading\n"
        "def refuse(*a, **k):\n"
        "    raise SystemExit('network use: %r' % (a,))\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from exporter.config import PricingConfig\n"
        "from exporter.pricing import PriceTable\n"
        "t = PriceTable.from_settings(PricingConfig())\n"
        "assert t.rates('openai', 'gpt-4o') is not None\n"
        "assert t.rates('x', 'y') is None\n"
        "assert not [x for x in threading.enumerate() if x.name.startswith('genai_prices')]\n"
        "print('offline ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "offline ok" in result.stdout


# --- wired into the aggregator and the info metric -----------------------------------------

def _text(agg: Aggregator) -> str:
    return bytes(generate_latest(StaticFamilies(agg.families()))).decode()


def test_aggregator_prices_a_call_without_a_cost() -> None:
    table = PriceTable([_entry("house", 1.0, 2.0, cache_read=0.25, provider="vllm")],
                       library=False)
    agg = Aggregator(prices=table)
    agg.ingest([
        LlmCall(provider="vllm", model="house", input_tokens=1000, output_tokens=100,
                cache_read_input_tokens=400),
        LlmCall(provider="vllm", model="house", input_tokens=10, cost_usd=5.0),  # given wins
        LlmCall(provider="vllm", model="nameless", input_tokens=30, output_tokens=3)])
    out = _text(agg)
    pm = {"gen_ai_provider_name": "vllm", "gen_ai_request_model": "house"}
    computed = (600 * 1.0 + 400 * 0.25 + 100 * 2.0) * M
    assert sample_value(out, "ai_llm_cost_usd_total", pm) == pytest.approx(computed + 5.0)
    assert sample_value(out, "ai_llm_cache_savings_usd_total", pm) == pytest.approx(
        400 * 0.75 * M)
    unpriced = {"gen_ai_provider_name": "vllm", "gen_ai_request_model": "nameless"}
    assert sample_value(out, "ai_llm_unpriced_requests_total", unpriced) == 1.0
    assert sample_value(out, "ai_llm_unpriced_requests_total", pm) is None


def test_the_default_aggregator_uses_the_library() -> None:
    agg = Aggregator()
    agg.ingest([LlmCall(provider="openai", model="gpt-4o", input_tokens=1_000_000,
                        output_tokens=100_000)])
    assert sample_value(_text(agg), "ai_llm_cost_usd_total", {
        "gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o"}) == pytest.approx(
            2.5 + 1.0)


def test_price_table_info_collector(tmp_path: Path) -> None:
    path = _price_file(tmp_path, [{"model": "m", "input": 1, "output": 1}])
    table = PriceTable.from_settings(PricingConfig(price_file=str(path), overrides=[
        _entry("a", 1, 1), _entry("b", 1, 1)]))
    ctx = CollectorContext(config.build(), CollectorDeps(
        ingestor=Ingestor(Aggregator(prices=table))))
    families = list(PricingCollector(ctx).collect())
    out = bytes(generate_latest(StaticFamilies(families))).decode()
    spec = catalog.EXPORTER_PRICE_TABLE_INFO
    assert spec.name == "ai_exporter_price_table_info"
    assert sample_value(out, spec.name, {
        "source": "genai-prices", "version": pricing.library_version(), "overrides": "2",
        "price_file": str(path)}) == 1.0
    assert pricing.library_version().startswith("0.2.")
    assert list(PricingCollector(CollectorContext(config.build())).collect()) == []


# --- the real process: exit 2 naming the field -----------------------------------------------

PREFIX = "ai-metrics-exporter: invalid configuration: "


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXPORTER_BIN, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(("case", "field"), [
    ("override", "ai.pricing.overrides.0.output"),
    ("file", "ai.pricing.price_file: "),
    ("missing_file", "ai.pricing.price_file: cannot read"),
])
def test_bad_pricing_exits_2_naming_the_field(tmp_path: Path, command: str, case: str,
                                              field: str) -> None:
    prices = tmp_path / "prices.yml"
    prices.write_text("- {model: m, input: 1, output: nope}\n")
    sections: dict[str, dict[str, Any]] = {
        "override": {"overrides": [{"model": "m", "input": 1, "output": -2}]},
        "file": {"price_file": str(prices)},
        "missing_file": {"price_file": str(tmp_path / "missing.yml")},
    }
    pricing_section = sections[case]
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"ai": {"pricing": pricing_section},
                                    "storage": {"path": str(tmp_path / "data")}}))
    result = _run([command, f"--config.file={path}",
                   f"--web.listen-address={LOOPBACK}:{free_port()}"])
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PREFIX + field), lines[0]
    if case == "file":
        assert f"{prices}: entry 0.output" in lines[0]


def test_reload_refuses_a_bad_price_file_and_keeps_the_prices(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from exporter.runtime import Runtime

    prices = _price_file(tmp_path, [{"model": "house", "input": 1, "output": 2}])
    layer: dict[str, Any] = {"storage": {"path": str(tmp_path / "data")},
                             "ai": {"pricing": {"price_file": str(prices)}}}
    loaded = [config.build(layer)]
    runtime = Runtime(loaded[0], lambda: loaded[-1])
    try:
        table = runtime.aggregator.state.prices
        _close(table.rates("vllm", "house"), 1.0, 2.0, 1.0, 1.0, 2.0)
        prices.write_text("- {model: house, input: 1}\n")
        ok, detail = runtime.reload()
        assert not ok and detail.startswith(f"ai.pricing.price_file: {prices}: entry 0"), detail
        loaded.append(config.build({**layer, "ai": {"pricing": {"overrides": [
            {"model": "house", "input": 9, "output": 9}]}}}))
        with caplog.at_level("WARNING", logger="exporter.runtime"):
            assert runtime.reload()[0]
        assert "take effect at restart" in caplog.text
        assert runtime.aggregator.state.prices is table  # kept until restart
    finally:
        runtime.stop()
