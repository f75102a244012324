"""Which metrics each event kind feeds, and which come from configuration: the contract
documented in docs/events.md (generated from here) and checked by the tests."""

from __future__ import annotations

from exporter import catalog
from exporter.catalog import MetricSpec

# Which metrics each event kind feeds: the contract documented in docs/events.md and
# checked by the tests (every metric listed here moves when its kind is ingested).
FEEDS: dict[str, tuple[MetricSpec, ...]] = {
    "llm_call": (catalog.GEN_AI_CLIENT_OPERATION_DURATION, catalog.GEN_AI_CLIENT_TOKEN_USAGE,
                 catalog.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK, catalog.AI_LLM_REQUESTS,
                 catalog.AI_LLM_TOKENS, catalog.AI_LLM_COST, catalog.AI_BUDGET_SPEND,
                 catalog.GEN_AI_CLIENT_TIME_PER_OUTPUT_CHUNK, catalog.AI_LLM_UNPRICED_REQUESTS,
                 catalog.AI_LLM_UNPRICED_TOKENS, catalog.AI_LLM_CACHE_SAVINGS,
                 catalog.AI_AGENT_TOKENS),
    "task": (catalog.AI_TASKS, catalog.AI_TASK_DURATION, catalog.AI_TASK_IN_PROGRESS,
             catalog.AI_TASK_QUEUE_DEPTH, catalog.AI_TASK_QUEUE_OLDEST_AGE,
             catalog.GEN_AI_INVOKE_AGENT_DURATION),  # operation invoke_agent
    "tool_call": (catalog.GEN_AI_EXECUTE_TOOL_DURATION, catalog.AI_TOOL_CALLS),
    "quality_gate": (catalog.AI_QUALITY_GATE_DECISIONS, catalog.AI_QUALITY_GATE_SCORE),
    "resolution": (catalog.AI_RESOLUTION_ATTEMPTS, catalog.AI_RESOLUTION_INCIDENTS,
                   catalog.AI_RESOLUTION_CLOSURES, catalog.AI_RESOLUTION_ACTIVE,
                   catalog.AI_RESOLUTION_OLDEST_ACTIVE_AGE),
    "guardian": (catalog.AI_GUARDIAN_DECISIONS, catalog.AI_GUARDIAN_DURATION),
    "intervention": (catalog.AI_INTERVENTIONS, catalog.AI_INTERVENTION_OPEN,
                     catalog.AI_INTERVENTION_OLDEST_OPEN_AGE,
                     catalog.AI_INTERVENTION_TIME_TO_RESOLVE),
    "security_event": (catalog.AI_SECURITY_EVENTS, catalog.AI_SECURITY_UNRESOLVED),
    "error": (catalog.AI_ERRORS,),
    "provider_limit": (catalog.AI_PROVIDER_RATE_LIMIT_REMAINING,
                       catalog.AI_PROVIDER_RATE_LIMIT_CAPACITY,
                       catalog.AI_PROVIDER_RATE_LIMIT_RESET),
    "component_status": (catalog.AI_COMPONENT_HEARTBEAT_UP,
                         catalog.AI_COMPONENT_HEARTBEAT_LAST_SEEN, catalog.AI_COMPONENT_INFO),
    "mcp_call": (catalog.MCP_CLIENT_OPERATION_DURATION, catalog.MCP_SERVER_OPERATION_DURATION),
    "mcp_session": (catalog.MCP_CLIENT_SESSION_DURATION, catalog.MCP_SERVER_SESSION_DURATION),
}

# Served by the aggregator from configuration, not from events.
CONFIG_FED: tuple[MetricSpec, ...] = (catalog.AI_BUDGET_LIMIT, catalog.AI_LLM_LATENCY_THRESHOLD,
                                      catalog.AI_TASK_SUCCESS_OBJECTIVE)
