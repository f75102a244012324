"""Prices per token, looked up once per (provider, model) label set.

Where a price comes from, first match wins:

1. ``ai.pricing.overrides`` (config): self-hosted models, negotiated prices;
2. ``ai.pricing.price_file``: a YAML or JSON list of entries of the same shape;
3. the price table bundled with the ``genai-prices`` package (``ai.pricing.enabled``).

Within 1 and 2 an entry naming the event's provider beats one naming no provider.

genai-prices ships its data as Python code (``genai_prices.data``) and can also fetch
newer data from GitHub in a background thread (``genai_prices.UpdatePrices``), which then
replaces the snapshot ``genai_prices.calc_price`` uses. The exporter never reaches out:
it reads ``genai_prices.data.providers`` itself and resolves providers and models with
the library's pure matching functions, so neither ``UpdatePrices`` nor a snapshot someone
else installed (``data_snapshot.set_custom_snapshot``) is ever involved.
tests/test_pricing.py checks that building and querying the table opens no socket.

The event path (handlers, exporter/_lines.c through the native table's ``price_for``)
keeps the ``Rates`` of each label set it has seen, so ``PriceTable.rates`` runs once per
label set, not per event; it memoises its own answers too (bounded), for the label sets
the event path folds or forgets.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from exporter.config import (
    ConfigError,
    PriceOverrideConfig,
    PricingConfig,
    check_price_entries,
    read_yaml_file,
    validation_problem,
)

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider

log = logging.getLogger(__name__)

LIBRARY = "genai-prices"
# (provider, model) answers kept by one table. The event path asks once per label set,
# and label sets are capped per metric (ai.max_series_per_metric), so this is only
# reached by a stream of distinct unknown models; the oldest answer is dropped then.
MAX_MEMO = 4096
_PER_MILLION = Decimal(1_000_000)

# gen_ai.provider.name (OTel GenAI semantic conventions, "well-known values") -> the
# genai-prices provider id. A value not listed is offered to the library's own matching
# (its ids and ``provider_match`` rules: "azure", "bedrock", "together-ai", "xai", ...);
# None: known to have no table there, so the model is unpriced unless configured.
PROVIDER_IDS: dict[str, str | None] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    # Azure's table falls back to OpenAI's (and Anthropic's, DeepSeek's, xAI's) models.
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "x_ai": "x-ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "ibm.watsonx.ai": None,
    "moonshot_ai": "moonshotai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "cerebras": "cerebras",
    "openrouter": "openrouter",
    "huggingface": None,
}


class Rates(NamedTuple):
    """US dollars per token for each token type of one model.

    ``cache_read`` and ``cache_write`` tokens are a subset of ``input_tokens``;
    ``reasoning`` tokens are a subset of ``output_tokens``. So a call costs::

        (input - cache_read - cache_write, floored at 0) * input
        + cache_read * cache_read + cache_write * cache_write
        + (output - reasoning, floored at 0) * output + reasoning * reasoning

    The native path (exporter/_lines.c) computes the same expression in the same order.
    """

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int,
             cache_write: int, reasoning: int) -> float:
        """What a call with these token counts costs, in US dollars."""
        uncached = max(input_tokens - cache_read - cache_write, 0)
        plain_output = max(output_tokens - reasoning, 0)
        return (uncached * self.input + cache_read * self.cache_read
                + cache_write * self.cache_write + plain_output * self.output
                + reasoning * self.reasoning)

    @classmethod
    def per_million(cls, input: float, output: float, cache_read: float | None = None,
                    cache_write: float | None = None,
                    reasoning: float | None = None) -> Rates:
        """Rates from prices per million tokens; an unset cache price is the input
        price, an unset reasoning price the output price."""
        m = 1_000_000.0
        return cls(input / m, output / m,
                   (input if cache_read is None else cache_read) / m,
                   (input if cache_write is None else cache_write) / m,
                   (output if reasoning is None else reasoning) / m)


class PriceTableInfo(NamedTuple):
    """What ``ai_exporter_price_table_info`` says: the table in force."""

    source: str      # "genai-prices", or "config" when only overrides/price_file price
    version: str     # the genai-prices package version ("" when it is off)
    overrides: str   # how many ai.pricing.overrides entries, as text
    price_file: str  # ai.pricing.price_file ("" when none)


def _entry_rates(entry: PriceOverrideConfig) -> Rates:
    return Rates.per_million(entry.input, entry.output, entry.cache_read,
                             entry.cache_write, entry.reasoning)


class _Entries:
    """Configured prices indexed by (provider, model), lowercased; provider "" = any."""

    __slots__ = ("by_key", "count")

    def __init__(self, entries: Sequence[PriceOverrideConfig]) -> None:
        self.count = len(entries)
        self.by_key = {(e.provider.lower(), e.model.lower()): _entry_rates(e)
                       for e in entries}

    def get(self, provider: str, model: str) -> Rates | None:
        if not self.by_key:
            return None
        return self.by_key.get((provider, model)) or self.by_key.get(("", model))


def _per_token(value: Any) -> float | None:
    """A genai-prices price (USD per million, a Decimal or tiered) as USD per token.

    Tiered prices (the whole call priced higher past some input size, e.g. Gemini and
    Claude past 200k input tokens) are taken at their base tier: rates are looked up once
    per label set, before any call's size is known, and most calls stay under the first
    threshold. Calls above it are under-priced by the tier difference.
    """
    if value is None:
        return None
    base = getattr(value, "base", value)  # TieredPrices -> its base tier
    if not isinstance(base, Decimal):
        return None
    return float(base / _PER_MILLION)


def library_rates(price: ModelPrice) -> Rates | None:
    """Rates from one genai-prices ``ModelPrice``: input, output, cache read and cache
    write (``cache_write_mtok``, the 5-minute write where the provider has two) per token;
    cache prices missing are the input price, reasoning (``output_reasoning_mtok``) missing
    is the output price. None when it prices neither input nor output tokens (per-request,
    audio-hour or image-only models)."""
    fields = vars(price)
    input_rate = _per_token(fields.get("input_mtok"))
    output_rate = _per_token(fields.get("output_mtok"))
    if input_rate is None and output_rate is None:
        return None
    input_rate = input_rate or 0.0
    output_rate = output_rate or 0.0
    cache_read = _per_token(fields.get("cache_read_mtok"))
    cache_write = _per_token(fields.get("cache_write_mtok"))
    reasoning = _per_token(fields.get("output_reasoning_mtok"))
    return Rates(input_rate, output_rate,
                 input_rate if cache_read is None else cache_read,
                 input_rate if cache_write is None else cache_write,
                 output_rate if reasoning is None else reasoning)


class _Library:
    """The bundled genai-prices data, queried offline with its pure matching rules; one per
    process (``_library``), its answers memoised (bounded) for every table that uses it, so
    an aggregator built afresh (a test, a benchmark round) does not search again."""

    def __init__(self) -> None:
        from genai_prices import data, data_snapshot  # ~0.5 s: the data is Python code

        self.providers: list[Provider] = data.providers
        self._by_id = data_snapshot.find_provider_by_id
        self._memo: dict[tuple[str, str], Rates | None] = {}

    def provider(self, provider: str, model: str) -> Provider | None:
        """The library's provider for a gen_ai.provider.name value; with none given,
        the provider whose model pattern matches (genai-prices' own inference)."""
        if not provider:
            for candidate in self.providers:
                if candidate.model_match is not None and candidate.model_match.is_match(model):
                    return candidate
            return None
        if provider in PROVIDER_IDS:
            mapped = PROVIDER_IDS[provider]
            return None if mapped is None else self._by_id(self.providers, mapped)
        return self._by_id(self.providers, provider)

    def model(self, provider: str, model: str) -> ModelInfo | None:
        if provider == "litellm" and "/" in model:  # "openai/gpt-4o" through LiteLLM
            provider, model = model.split("/", 1)
        found = self.provider(provider, model)
        if found is None:
            return None
        return found.find_model(model, all_providers=self.providers)

    def rates(self, provider: str, model: str, now: datetime) -> Rates | None:
        """Prices in force at ``now`` (a model's dated price changes apply from the first
        lookup after them, which in practice means from the next start)."""
        key = (provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        info = self.model(provider, model)
        found = None if info is None else library_rates(info.get_prices(now))
        _remember(self._memo, key, found)
        return found


_LIBRARY_LOCK = threading.Lock()
_LIBRARY: list[_Library] = []


def _library() -> _Library:
    """The process's one ``_Library`` (its data imported on first use)."""
    if not _LIBRARY:
        with _LIBRARY_LOCK:
            if not _LIBRARY:
                _LIBRARY.append(_Library())
    return _LIBRARY[0]


def _remember(memo: dict[tuple[str, str], Rates | None], key: tuple[str, str],
              found: Rates | None) -> None:
    """Keep ``found``, dropping the oldest answer past MAX_MEMO."""
    if len(memo) >= MAX_MEMO:
        # Another thread may have dropped or added one meanwhile: either is fine.
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):
            del memo[next(iter(memo))]
    memo[key] = found


@functools.cache
def library_version() -> str:
    """The installed genai-prices version; its data is the snapshot of that release (the
    package records no separate data date)."""
    try:
        return package_version(LIBRARY)
    except PackageNotFoundError:  # pragma: no cover - a runtime dependency
        return ""


class PriceTable:
    """The prices in force: overrides, then the price file, then genai-prices."""

    def __init__(self, overrides: Sequence[PriceOverrideConfig] = (),
                 file_entries: Sequence[PriceOverrideConfig] = (), *,
                 library: bool = True, price_file: str = "") -> None:
        self._overrides = _Entries(overrides)
        self._file = _Entries(file_entries)
        self._use_library = library
        self._library: _Library | None = None
        self._memo: dict[tuple[str, str], Rates | None] = {}
        self._price_file = price_file

    @classmethod
    def from_settings(cls, settings: PricingConfig) -> PriceTable:
        """The table ``ai.pricing`` describes, its library data loaded now (at start-up,
        not on the first event). ``ConfigError`` names the price file entry at fault."""
        entries = read_price_file(settings.price_file) if settings.price_file else []
        table = cls(settings.overrides, entries, library=settings.enabled,
                    price_file=settings.price_file)
        table.load()
        return table

    def load(self) -> None:
        """Import the bundled data now when the library is in use (else on first use)."""
        if self._use_library and self._library is None:
            self._library = _library()

    def info(self) -> PriceTableInfo:
        return PriceTableInfo(LIBRARY if self._use_library else "config",
                              library_version() if self._use_library else "",
                              str(self._overrides.count), self._price_file)

    def rates(self, provider: str, model: str) -> Rates | None:
        """The rates of ``model`` at ``provider``, or None when it has no price."""
        key = (provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._lookup(provider.lower().strip(), model.lower().strip())
        _remember(self._memo, key, found)
        return found

    def _lookup(self, provider: str, model: str) -> Rates | None:
        if not model:
            return None
        found = self._overrides.get(provider, model) or self._file.get(provider, model)
        if found is not None or not self._use_library:
            return found
        self.load()
        assert self._library is not None
        try:
            return self._library.rates(provider, model, datetime.now(UTC))
        except Exception as exc:  # a data entry the matching chokes on: unpriced, said once
            log.warning("price lookup failed provider=%s model=%s err=%s", provider, model,
                        exc)
            return None


def check_price_file(settings: PricingConfig) -> None:
    """What ``check-config`` and a reload check: the price file reads and validates
    (``ConfigError`` naming the entry), without loading the library's data."""
    if settings.price_file:
        read_price_file(settings.price_file)


def read_price_file(path: str, field: str = "ai.pricing.price_file"
                    ) -> list[PriceOverrideConfig]:
    """The entries of a price file: a YAML (or JSON) list shaped like
    ``ai.pricing.overrides``. ``ConfigError`` names the field and, for a bad entry, its
    index and key (``ai.pricing.price_file: prices.yml: 2.input: ...``)."""
    data = read_yaml_file(path, field)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"{field}: {path} must hold a list of price entries (each with "
                          "model, input, output and optionally provider, cache_read, "
                          "cache_write, reasoning)")
    try:
        entries = msgspec.convert(data, list[PriceOverrideConfig])
    except msgspec.ValidationError as exc:
        at, detail = validation_problem(exc, "entries")
        raise ConfigError(f"{field}: {path}: entry {at.lstrip('.')}: {detail}") from None
    check_price_entries(entries, f"{field}: {path}: entry ")
    return entries
