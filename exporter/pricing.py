"""Prices per token, looked up once per (provider, model) label set.

INTERFACE STUB (coordination): the pricing helper replaces the body with the
genai-prices backed table; the signatures below are what the event path (handlers,
exporter/_lines.c through the native table's ``price_for``) relies on.
"""

from __future__ import annotations

from typing import NamedTuple


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


class PriceTable:
    """The prices in force (STUB: knows no model)."""

    def rates(self, provider: str, model: str) -> Rates | None:
        """The rates of ``model`` at ``provider``, or None when it has no price."""
        return None
