"""LLM providers and cost: OpenTelemetry GenAI metrics by provider and model.

Traffic, errors, latency, time to first token, tokens, rate limits, spend and budgets.
"""

from __future__ import annotations

from .layout import UID_LLM, Board, Section, model_variable, provider_variable
from .panels import Target, bargauge, heatmap, rising, stat, steps, ts
from .parameters import Parameters
from .promql import MODEL, PROV, jsel, quantile, rate, sel


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    alert = params.threshold
    pm = (PROV, MODEL)
    bucket = "gen_ai_client_operation_duration_seconds_bucket"
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"
    requests = "ai_llm_requests_total"
    traffic = [
        ts("Requests per second by model", "LLM requests per second by provider and model.",
           "reqps",
           Target(f"sum by (gen_ai_provider_name, gen_ai_request_model) ({rate(requests, *pm)})",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}")),
        ts("Error ratio by error type", "Share of each provider's requests that failed, by "
           "error.type (HTTP status, timeout, ...). The critical alert threshold is red.",
           "percentunit",
           Target("sum by (gen_ai_provider_name, error_type) ("
                  + rate(requests, *pm, 'outcome="error"') + ") / on (gen_ai_provider_name) "
                  "group_left () sum by (gen_ai_provider_name) (" + rate(requests, *pm) + ")",
                  "{{gen_ai_provider_name}} {{error_type}}"),
           thresholds=rising(alert("ai_llm_error_ratio", "warning"),
                             alert("ai_llm_error_ratio", "critical")),
           dashed=True),
        ts("Errors per second by error type", "Failed LLM requests per second by error.type "
           "and provider.", "reqps",
           Target("sum by (error_type, gen_ai_provider_name) ("
                  + rate(requests, *pm, 'outcome="error"') + ")",
                  "{{gen_ai_provider_name}} {{error_type}}"), width=12, stack=True),
        stat("Error ratio by provider (5m)", "Share of each provider's requests that failed "
             "over the last 5 minutes, all error types together.", "percentunit",
             Target("sum by (gen_ai_provider_name) ("
                    + rate(requests, *pm, 'outcome="error"')
                    + ") / sum by (gen_ai_provider_name) ("
                    + rate(requests, *pm) + ")",
                    "{{gen_ai_provider_name}}"),
             width=12, height=8, decimals=2,
             thresholds=rising(alert("ai_llm_error_ratio", "warning"),
                               alert("ai_llm_error_ratio", "critical"))),
    ]
    latency = [
        ts("Latency quantiles", "p50, p95 and p99 duration of LLM calls for the selected "
           "providers and models, and the configured latency objective (p95). Points are "
           "exemplars: the trace of a call in that bucket (click to open it).", "s",
           Target(quantile(0.5, bucket, "", *pm), "p50"),
           Target(quantile(0.95, bucket, "", *pm), "p95", exemplar=True),
           Target(quantile(0.99, bucket, "", *pm), "p99"),
           Target(f"max({sel('ai_llm_latency_threshold_seconds')})", "objective")),
        ts("p95 latency by model (5m)", "95th percentile LLM call duration over the last 5 "
           "minutes, per provider and model.", "s",
           Target(quantile(0.95, bucket, "gen_ai_provider_name, gen_ai_request_model", *pm),
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}", exemplar=True)),
        heatmap("Latency distribution", "How LLM call durations are distributed over time "
                "(requests per second in each duration bucket).", "s",
                f"sum by (le) ({rate(bucket, *pm)})"),
        ts("Time to first token", "p50 and p95 time until the first streamed chunk of a "
           "response, streaming calls only. Points are exemplars (the trace of a call).", "s",
           Target(quantile(0.5, ttft, "", *pm), "p50"),
           Target(quantile(0.95, ttft, "", *pm), "p95", exemplar=True),
           Target(quantile(0.95, ttft, "gen_ai_provider_name", *pm),
                  "p95 {{gen_ai_provider_name}}")),
    ]
    tokens = [
        ts("Tokens per second by type", "Input, output and cached input tokens per second.",
           "short",
           Target(f"sum by (gen_ai_token_type) ({rate('ai_llm_tokens_total', *pm)})",
                  "{{gen_ai_token_type}}"), width=8, stack=True),
        ts("Tokens per second by model", "Input and output tokens per second per model.",
           "short",
           Target("sum by (gen_ai_request_model, gen_ai_token_type) ("
                  + rate("ai_llm_tokens_total", *pm, 'gen_ai_token_type=~"input|output"')
                  + ")", "{{gen_ai_request_model}} {{gen_ai_token_type}}"), width=8),
        ts("Mean tokens per call", "Average tokens per LLM call by token type (from the "
           "gen_ai.client.token.usage histogram).", "short",
           Target("sum by (gen_ai_token_type) ("
                  + rate("gen_ai_client_token_usage_sum", *pm) + ") / "
                  "sum by (gen_ai_token_type) (" + rate("gen_ai_client_token_usage_count", *pm)
                  + ")", "{{gen_ai_token_type}}"), width=8),
    ]
    capacity = [
        bargauge("Rate-limit headroom", "Share of each provider's current rate-limit window "
                 "(requests, tokens) still available. The alert fires below the orange "
                 "line.", "percentunit",
                 Target("min by (gen_ai_provider_name, limit_type) ("
                        + sel("ai_provider_rate_limit_remaining", PROV)
                        + ") / max by (gen_ai_provider_name, limit_type) ("
                        + sel("ai_provider_rate_limit_capacity", PROV) + " > 0)",
                        "{{gen_ai_provider_name}} {{limit_type}}"),
                 minimum=0, maximum=1,
                 thresholds=steps(("red", None),
                                  ("orange", alert("ai_provider_rate_limit_remaining_ratio",
                                                   "warning")),
                                  ("green", 0.25))),
        ts("Rate-limit remaining", "Requests and tokens left in each provider's current "
           "rate-limit window, as last reported by the provider.", "short",
           Target("min by (gen_ai_provider_name, limit_type) ("
                  + sel("ai_provider_rate_limit_remaining", PROV) + ")",
                  "{{gen_ai_provider_name}} {{limit_type}}"), width=8),
        stat("Rate-limit window resets in", "Seconds until each provider's rate-limit window "
             "resets.", "s",
             Target("min by (gen_ai_provider_name, limit_type) ("
                    + sel("ai_provider_rate_limit_reset_timestamp_seconds", PROV) + ") - time()",
                    "{{gen_ai_provider_name}} {{limit_type}}"), width=8, height=8),
    ]
    cost = [
        ts("Spend per hour by model", "LLM spend rate in US dollars per hour, by provider "
           "and model.", "currencyUSD",
           Target("3600 * sum by (gen_ai_provider_name, gen_ai_request_model) ("
                  + rate("ai_llm_cost_usd_total", *pm) + ")",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}"), stack=True),
        bargauge("Spend per hour by model (5m)", "Spend rate per model over the last 5 "
                 "minutes, in US dollars per hour.", "currencyUSD",
                 Target("3600 * sum by (gen_ai_request_model) ("
                        + rate("ai_llm_cost_usd_total", *pm) + ")",
                        "{{gen_ai_request_model}}"), width=6),
        stat("Cost per finished task (1h)", "LLM spend over the last hour divided by the "
             "tasks that finished in it, over every exporter replica of the job (the "
             "instance filter does not apply).", "currencyUSD",
             Target(jsel("job:ai_llm_cost_usd_per_task:ratio_rate1h"), "{{job}}"),
             width=6, height=8, decimals=4),
        ts("Spend today against budget", "Spend since 00:00 UTC per budget scope, the "
           "scope's daily budget, and the spend projected for 00:00 UTC at the last hour's "
           "rate (over every exporter replica: the instance filter does not apply to the "
           "projection).", "currencyUSD",
           Target(f"sum by (scope) ({sel('ai_budget_spend_usd')})", "{{scope}} spent"),
           Target(f"max by (scope) ({sel('ai_budget_limit_usd')})", "{{scope}} budget"),
           Target("max by (scope) ("
                  + jsel("job_scope:ai_budget_spend_usd:predict_end_of_day") + ")",
                  "{{scope}} projected")),
        ts("Budget burn rate", "Last hour's spend rate as a share of the daily budget "
           "per day: 1 means the budget is spent exactly by the end of a day at this "
           "rate. Over every exporter replica (the instance filter does not apply).",
           "percentunit",
           Target("86400 * max by (scope) ("
                  + jsel("job_scope:ai_llm_cost_usd:rate1h") + ") / max by (scope) ("
                  + sel("ai_budget_limit_usd") + " > 0)", "{{scope}}"),
           thresholds=rising(1.0), dashed=True),
    ]
    # --- priced against unpriced calls, savings from cached tokens ---
    unpriced = "ai_llm_unpriced_requests_total"
    savings = "ai_llm_cache_savings_usd_total"
    pricing = [
        ts("Requests priced and unpriced", "LLM calls per second with a cost (given in the "
           "event or computed from the price table) and without one: calls whose model has "
           "no price are counted at 0 USD (alert AiLlmUnpricedModel).", "reqps",
           Target(f"sum ({rate(requests, *pm)}) - (sum ({rate(unpriced, *pm)}) "
                  f"or 0 * sum ({rate(requests, *pm)}))", "priced"),
           Target(f"sum ({rate(unpriced, *pm)})", "unpriced"), width=8, stack=True),
        stat("Unpriced share of calls", "Share of LLM calls over the dashboard's rate "
             "interval whose spend reads 0 USD because their model has no price.",
             "percentunit",
             Target(f"sum ({rate(unpriced, *pm)}) / sum ({rate(requests, *pm)})",
                    "unpriced"),
             width=4, height=8, decimals=1, thresholds=rising(0.01)),
        bargauge("Unpriced requests by model", "Calls per second to each model without a "
                 "price: add it to ai.pricing.overrides or send cost_usd (runbook "
                 "AiLlmUnpricedModel).", "reqps",
                 Target("sum by (gen_ai_provider_name, gen_ai_request_model) ("
                        + rate(unpriced, *pm) + ")",
                        "{{gen_ai_provider_name}} {{gen_ai_request_model}}"), width=12),
        ts("Unpriced tokens by model", "Tokens per second of calls without a price, by "
           "model and token type: the usage the spend panels do not cover.", "short",
           Target("sum by (gen_ai_request_model, gen_ai_token_type) ("
                  + rate("ai_llm_unpriced_tokens_total", *pm) + ")",
                  "{{gen_ai_request_model}} {{gen_ai_token_type}}"), width=12),
        ts("Savings from cached tokens per hour", "US dollars per hour saved by cache-read "
           "input tokens (cached tokens x (input price - cache read price)), by model.",
           "currencyUSD",
           Target("3600 * sum by (gen_ai_provider_name, gen_ai_request_model) ("
                  + rate(savings, *pm) + ")",
                  "{{gen_ai_provider_name}} {{gen_ai_request_model}}"), width=8, stack=True),
        stat("Cache savings against spend", "Dollars saved by cached input tokens as a share "
             "of what the calls would have cost without the cache (spend + savings).",
             "percentunit",
             Target(f"sum ({rate(savings, *pm)}) / (sum ({rate('ai_llm_cost_usd_total', *pm)})"
                    f" + sum ({rate(savings, *pm)}))", "saved"),
             width=4, height=8, decimals=1),
    ]
    return Board(
        UID_LLM, "LLM providers and cost",
        "LLM calls by provider and model (OpenTelemetry GenAI metrics): traffic, errors, "
        "latency, time to first token, tokens, rate limits, spend and budgets.",
        ["llm", "cost"], [provider_variable(), model_variable()],
        [Section("Traffic and errors", traffic), Section("Latency", latency),
         Section("Tokens", tokens), Section("Rate limits", capacity),
         Section("Cost and budgets", cost), Section("Cost", pricing)])
