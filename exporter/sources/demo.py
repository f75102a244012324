"""The demo AI workload: a simulated agent platform, so a new user sees every AI metric move.

It runs only under ``ai-metrics-exporter demo``; its series carry ``demo="true"`` so they
cannot be mistaken for real activity. Failure episodes (``provider_outage``,
``cost_spike``, ``stuck_loop``) come either one at a time on request or in a cycle.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.config import ConfigError
from exporter.events import (
    AnyEvent,
    ComponentStatus,
    Error,
    Guardian,
    Intervention,
    LlmCall,
    McpCall,
    McpSession,
    ProviderLimit,
    QualityGate,
    Resolution,
    SecurityEvent,
    Task,
    ToolCall,
)
from exporter.ingest import Ingestor
from exporter.sources.base import Source

log = logging.getLogger(__name__)

EPISODES = ("provider_outage", "cost_spike", "stuck_loop")
OUTAGE_PROVIDER = "anthropic"
STUCK_COMPONENT = "remediator"
TICK_SECONDS = 0.25
HEARTBEAT_SECONDS = 2.0
BASE_RATE = 40.0  # events/s at which the slow processes run at their nominal pace
MAX_RATE = 100_000.0
QUEUE_TARGET = 25  # tasks waiting at most, per 40 events/s
WORKERS = 12  # tasks running at most, per 40 events/s

# provider → [(model, USD per 1k input tokens, USD per 1k output tokens)]. The demo's calls
# carry no cost: the price table (genai-prices) computes it from their tokens, as it would
# for a real client that reports none. The prices here are used only for the cost-spike
# episode (which reports an inflated cost).
MODELS = {
    "openai": [("gpt-4o", 0.0025, 0.01), ("gpt-4o-mini", 0.00015, 0.0006)],
    "anthropic": [("claude-sonnet-4", 0.003, 0.015), ("claude-haiku-4-5", 0.001, 0.005)],
    "gcp.gemini": [("gemini-2.5-pro", 0.00125, 0.01)],
    # self-hosted: one model free by its own account (cost 0 given), one that nobody has
    # priced yet, counted as unpriced (ai_llm_unpriced_requests_total, AiLlmUnpricedModel)
    "vllm": [("llama-3.1-8b-instruct", 0.0, 0.0), ("qwen2.5-coder-32b", 0.0, 0.0)],
}
AGENTS = ("planner", "coder", "reviewer", "researcher")
COMPONENTS = (("planner", "agent"), ("coder", "agent"), ("reviewer", "agent"),
              ("researcher", "agent"), ("mcp-filesystem", "mcp_server"),
              ("mcp-github", "mcp_server"), ("llm-gateway", "gateway"),
              ("qdrant", "vector_db"), ("vllm", "model_server"))
QUEUES = ("default", "priority", "batch")
# requested model → the dated model id the provider answers with (gen_ai.response.model)
RESPONSE_MODELS = {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}
MCP_TOOLS = ("read_file", "list_directory", "search_code", "create_issue")
TOOLS = ("read_file", "write_file", "run_tests", "search_web", "git_commit", "query_vectors")
GATES = ("code_review", "test_coverage", "spec_compliance")
GUARDIANS = (("pass_thru", "identity"), ("criteria_gate", "threshold"),
             ("ttl_check", "ttl"), ("directional_filter", "routing"),
             ("composite", "composite"), ("cerberus", "sync"))
VERDICTS = (("allow", 0.80), ("deny", 0.06), ("modify", 0.06), ("warn", 0.06),
            ("escalate", 0.02))
INTERVENTION_TYPES = ("approval", "clarification", "escalation", "review")
PRIORITIES = (("low", 0.3), ("medium", 0.4), ("high", 0.2), ("critical", 0.1))
SECURITY_CATEGORIES = ("prompt_injection", "secret_exposure", "auth_failure",
                       "policy_violation", "data_exfiltration")
SEVERITIES = (("info", 0.3), ("low", 0.3), ("medium", 0.25), ("high", 0.12),
              ("critical", 0.03))
ERROR_CATEGORIES = ("client", "server", "tool", "provider", "network", "timeout",
                    "validation", "auth", "rate_limit", "internal")

if TYPE_CHECKING:
    from exporter.sources import SourceDeps


def _weighted(rng: random.Random, pairs: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


@dataclass
class Schedule:
    """Which episode is active at a time since start: one on request, or a cycle of all."""

    episode: str
    after: float
    duration: float

    def active(self, elapsed: float) -> str:
        if self.episode == "none":
            return ""
        if self.episode:
            return self.episode if self.after <= elapsed < self.after + self.duration else ""
        period = self.after + self.duration
        index = int(elapsed // period)
        return EPISODES[index % len(EPISODES)] if elapsed % period >= self.after else ""


@dataclass
class World:
    """The simulated platform's open items between ticks."""

    queued: deque[tuple[str, str, str]] = field(default_factory=deque)
    running: list[tuple[str, str, str, float]] = field(default_factory=list)
    loops: dict[str, tuple[str, int]] = field(default_factory=dict)
    interventions: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)
    security: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    stuck_loop: str = ""


class DemoWorkload:
    """Generates one tick of events; pure given its random seed and the clock passed in."""

    def __init__(self, rate_per_second: float, schedule: Schedule, seed: int = 0) -> None:
        self.rate = rate_per_second
        self.schedule = schedule
        self.rng = random.Random(seed)  # noqa: S311 - synthetic demo data, not security
        self.world = World()
        self.ids = itertools.count(1)
        self.last_heartbeat = -1e9
        self.heartbeats = 0
        self.episode = ""
        # Arrivals of loops, interventions and security events scale with the rate, so a
        # fast demo (as the tests run it) moves every series within seconds.
        self.scale = rate_per_second / BASE_RATE

    def _arrivals(self, per_second: float, dt: float) -> int:
        """How many new items arrive in ``dt`` at ``per_second`` (scaled), rounded randomly."""
        mean = per_second * self.scale * dt
        whole = int(mean)
        return whole + (1 if self.rng.random() < mean - whole else 0)

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    def tick(self, elapsed: float, dt: float) -> list[AnyEvent]:
        """Events for ``dt`` seconds of platform activity at ``elapsed`` since start."""
        rng = self.rng
        episode = self.schedule.active(elapsed)
        if episode != self.episode:
            log.info("demo episode %s", f"started: {episode}" if episode else "ended")
            self.episode = episode
        events: list[AnyEvent] = []
        budget = self.rate * dt
        n = int(budget) + (1 if rng.random() < budget - int(budget) else 0)
        for _ in range(n):
            roll = rng.random()
            if roll < 0.45:
                events.append(self._llm_call(episode))
            elif roll < 0.60:
                events.append(self._tool_call())
            elif roll < 0.70:
                events.append(self._guardian())
            elif roll < 0.76:
                events.append(self._quality_gate())
            elif roll < 0.78:
                events.append(self._mcp_call(episode))
            elif roll < 0.785:
                events.append(McpSession(
                    duration_seconds=round(rng.uniform(5.0, 600.0), 2),
                    side=rng.choice(("client", "server")), protocol_version="2025-06-18",
                    transport="stdio", session_id=self._id("mcp-session")))
            elif roll < 0.80:
                events.append(Error(component=rng.choice(AGENTS),
                                    category=rng.choice(ERROR_CATEGORIES)))  # type: ignore[arg-type]
            else:
                events.extend(self._task_step(episode))
        events.extend(self._slow_processes(elapsed, dt, episode))
        return events

    # --- generators -------------------------------------------------------------------
    def _llm_call(self, episode: str) -> LlmCall:
        rng = self.rng
        provider = rng.choices(list(MODELS), weights=[4, 3, 2, 1])[0]
        model, usd_in, usd_out = rng.choice(MODELS[provider])
        input_tokens = int(rng.lognormvariate(7.0, 0.8))
        output_tokens = int(rng.lognormvariate(5.5, 0.7))
        cached = int(input_tokens * rng.random() * 0.5) if rng.random() < 0.3 else 0
        duration = max(0.05, rng.lognormvariate(0.0, 0.6) * (1 + output_tokens / 800))
        streaming = rng.random() < 0.6
        error = ""
        if episode == "provider_outage" and provider == OUTAGE_PROVIDER and rng.random() < 0.8:
            error = rng.choice(("503", "timeout", "overloaded"))
            output_tokens, duration = 0, rng.uniform(5.0, 30.0)
        elif rng.random() < 0.02:
            error = rng.choice(("429", "500", "timeout"))
            output_tokens = 0
        cost: float | None = None  # priced by the exporter's price table
        if model == "llama-3.1-8b-instruct":
            cost = 0.0  # self-hosted: free, and said so (not "unpriced")
        elif episode == "cost_spike":
            cost = round(20 * (input_tokens * usd_in + output_tokens * usd_out) / 1000.0, 6)
        cache_write = (int((input_tokens - cached) * rng.uniform(0.1, 0.4))
                       if provider == "anthropic" and rng.random() < 0.15 else 0)
        reasoning = (int(output_tokens * rng.uniform(0.2, 0.6))
                     if model in {"gpt-4o", "gemini-2.5-pro"} and rng.random() < 0.3 else 0)
        chunks = max(output_tokens // 8, 1)
        ttft = round(duration * rng.uniform(0.05, 0.3), 4) if streaming and not error else None
        trace_id, span_id = self._trace()
        return LlmCall(provider=provider, model=model, operation=rng.choice(
            ("chat", "chat", "chat", "embeddings") if provider != "vllm" else ("chat",)),
            input_tokens=input_tokens, output_tokens=output_tokens,
            cache_read_input_tokens=cached, cache_creation_input_tokens=cache_write,
            reasoning_output_tokens=reasoning, duration_seconds=round(duration, 4),
            time_to_first_token_seconds=ttft,
            time_per_output_chunk_seconds=round((duration - ttft) / chunks, 5)
            if ttft is not None and chunks > 1 else None,
            response_model=RESPONSE_MODELS.get(model, model),
            cost_usd=cost, error_type=error, component=rng.choice(AGENTS),
            trace_id=trace_id, span_id=span_id)

    def _trace(self) -> tuple[str, str]:
        """A trace and span id (W3C sizes), so that the demo's histograms carry exemplars."""
        rng = self.rng
        return f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"

    def _mcp_call(self, episode: str) -> McpCall:
        """An MCP operation against one of the demo's MCP servers, seen by the agent
        (client) or the server; a failed tool call is ``tool_error``, as the spec says."""
        rng = self.rng
        method = rng.choices(("tools/call", "tools/list", "resources/read"),
                             weights=(8, 1, 1))[0]
        failed = rng.random() < 0.04
        tool = rng.choice(MCP_TOOLS) if method == "tools/call" else ""
        trace_id, span_id = self._trace()
        return McpCall(method=method, tool=tool, side=rng.choice(("client", "server")),
                       duration_seconds=round(rng.lognormvariate(-2.0, 0.9), 4),
                       error_type=("tool_error" if tool else "-32603") if failed else "",
                       protocol_version="2025-06-18", transport="stdio",
                       session_id=f"mcp-session-{rng.randrange(8)}",
                       trace_id=trace_id, span_id=span_id)

    def _tool_call(self) -> ToolCall:
        rng = self.rng
        failed = rng.random() < 0.05
        trace_id, span_id = self._trace()
        return ToolCall(tool=rng.choice(TOOLS), agent=rng.choice(AGENTS), tool_type="function",
                        trace_id=trace_id, span_id=span_id,
                        duration_seconds=round(rng.lognormvariate(-1.5, 1.0), 4),
                        error_type=rng.choice(("timeout", "tool_error")) if failed else "")

    def _guardian(self) -> Guardian:
        rng = self.rng
        name, gtype = rng.choice(GUARDIANS)
        return Guardian(guardian=name, guardian_type=gtype,
                        verdict=_weighted(rng, VERDICTS),  # type: ignore[arg-type]
                        duration_seconds=round(rng.lognormvariate(-6.0, 0.8), 6))

    def _quality_gate(self) -> QualityGate:
        rng = self.rng
        score = min(1.0, max(0.0, rng.gauss(0.78, 0.12)))
        return QualityGate(gate=rng.choice(GATES),
                           decision="approved" if score >= 0.6 else "rejected",
                           score=round(score, 3))

    def _task_step(self, episode: str = "") -> list[AnyEvent]:
        """One task transition; the queue hovers around its target depth (never grows).

        Healthy, 0.4 % of finished tasks fail (inside a 99 % objective); during a provider
        outage 15 % do, which burns the error budget the way a real outage would.
        """
        rng, w = self.rng, self.world
        roll = rng.random()
        size = max(self.scale, 1.0)
        full = len(w.queued) >= QUEUE_TARGET * size
        busy = len(w.running) >= WORKERS * size
        if (roll < 0.34 and not full) or not (w.queued or w.running):
            tid = self._id("task")
            component, queue = rng.choice(AGENTS), rng.choice(QUEUES)
            w.queued.append((tid, component, queue))
            return [Task(component=component, queue=queue, status="queued", task_id=tid)]
        if w.queued and not busy and (roll < 0.67 or not w.running):
            tid, component, queue = w.queued.popleft()
            w.running.append((tid, component, queue, time.time()))
            return [Task(component=component, queue=queue, status="started", task_id=tid)]
        if not w.running:
            return []
        index = rng.randrange(len(w.running))
        w.running[index], w.running[-1] = w.running[-1], w.running[index]
        tid, component, queue, _ = w.running.pop()
        outcome = rng.random()
        duration = round(rng.lognormvariate(2.5, 0.9), 3)
        if outcome < 0.05:
            w.queued.append((tid, component, queue))
            return [Task(component=component, queue=queue, status="retried", task_id=tid)]
        fail_share = 0.15 if episode == "provider_outage" else 0.004
        if outcome < 0.98 - fail_share:
            status = "succeeded"
        else:
            status = "failed" if outcome < 0.98 else "cancelled"
        trace_id, span_id = self._trace()
        # every demo task is an agent run: it also feeds gen_ai.invoke_agent.duration
        return [Task(component=component, queue=queue, status=status,  # type: ignore[arg-type]
                     task_id=tid, duration_seconds=duration, operation="invoke_agent",
                     trace_id=trace_id, span_id=span_id)]

    def _slow_processes(self, elapsed: float, dt: float, episode: str) -> list[AnyEvent]:
        """Loops, interventions, security events, limits and heartbeats: a few per second."""
        rng, w = self.rng, self.world
        out: list[AnyEvent] = []
        now = time.time()
        for _ in range(self._arrivals(0.5, dt)):
            loop = self._id("loop")
            w.loops[loop] = (rng.choice(AGENTS), 0)
            out.append(Resolution(loop_id=loop, action="incident", component=w.loops[loop][0]))
        for loop, (component, attempts) in list(w.loops.items()):
            if rng.random() < 0.8 * dt:
                w.loops[loop] = (component, attempts + 1)
                out.append(Resolution(loop_id=loop, action="attempt", component=component))
            if attempts >= 2 and rng.random() < 0.5 * dt:
                del w.loops[loop]
                out.append(Resolution(loop_id=loop, action="closed", component=component,
                                      outcome=rng.choice(("resolved", "resolved", "resolved",
                                                          "escalated", "failed"))))
        if episode == "stuck_loop":
            if not w.stuck_loop:
                w.stuck_loop = self._id("loop")
                out.append(Resolution(loop_id=w.stuck_loop, action="incident",
                                      component=STUCK_COMPONENT))
            if rng.random() < 1.0 * dt:
                out.append(Resolution(loop_id=w.stuck_loop, action="attempt",
                                      component=STUCK_COMPONENT))
        elif w.stuck_loop:
            out.append(Resolution(loop_id=w.stuck_loop, action="closed",
                                  component=STUCK_COMPONENT, outcome="resolved"))
            w.stuck_loop = ""

        for _ in range(self._arrivals(0.3, dt)):
            iid = self._id("intervention")
            itype, prio = rng.choice(INTERVENTION_TYPES), _weighted(rng, PRIORITIES)
            w.interventions[iid] = (itype, prio, "requested", now)
            out.append(Intervention(intervention_id=iid, type=itype, priority=prio,
                                    status="requested"))
        for iid, (itype, prio, status, since) in list(w.interventions.items()):
            if status == "requested" and rng.random() < 0.3 * dt:
                w.interventions[iid] = (itype, prio, "acknowledged", since)
                out.append(Intervention(intervention_id=iid, type=itype, priority=prio,
                                        status="acknowledged"))
            elif status == "acknowledged" and rng.random() < 0.2 * dt:
                del w.interventions[iid]
                final = "resolved" if rng.random() < 0.9 else "expired"
                out.append(Intervention(intervention_id=iid, type=itype, priority=prio,
                                        status=final))  # type: ignore[arg-type]

        for _ in range(self._arrivals(0.2, dt)):
            eid = self._id("sec")
            category, severity = rng.choice(SECURITY_CATEGORIES), _weighted(rng, SEVERITIES)
            w.security[eid] = (category, severity, now)
            out.append(SecurityEvent(category=category, severity=severity,  # type: ignore[arg-type]
                                     event_id=eid))
        for eid, (category, severity, _since) in list(w.security.items()):
            if rng.random() < 0.1 * dt:
                del w.security[eid]
                out.append(SecurityEvent(category=category, severity=severity,  # type: ignore[arg-type]
                                         event_id=eid, resolved=True))

        if elapsed - self.last_heartbeat >= HEARTBEAT_SECONDS:
            self.last_heartbeat = elapsed
            out.extend(self._heartbeats(episode, now))
        return out

    def _heartbeats(self, episode: str, now: float) -> list[AnyEvent]:
        """Component heartbeats and provider rate-limit headroom, every couple of seconds.

        One component at a time (round robin) has a rough patch: degraded on every fifth
        heartbeat, down on every fifteenth, so status series and alerts have something
        to show; a rolling upgrade moves one component to a new version every 30
        heartbeats; the self-hosted model server scales between 2 and 4 replicas.
        """
        rng = self.rng
        n = self.heartbeats
        self.heartbeats += 1
        out: list[AnyEvent] = []
        flapping = COMPONENTS[(n // 5) % len(COMPONENTS)][0]
        upgraded = (n // 30) % (len(COMPONENTS) + 1)
        for index, (name, kind) in enumerate(COMPONENTS):
            status = "up"
            if name == flapping and n % 5 == 0:
                status = "down" if n % 15 == 0 else "degraded"
            if episode == "provider_outage" and name == "llm-gateway":
                status = "degraded"
            version = "1.5.0" if index < upgraded else "1.4.2"
            out.append(ComponentStatus(component=name, component_kind=kind,  # type: ignore[arg-type]
                                       version=version, status=status))  # type: ignore[arg-type]
        replicas = 2 + (n // 3) % 3
        for provider in MODELS:
            starved = (episode == "provider_outage" and provider == OUTAGE_PROVIDER)
            cap_req, cap_tok = 10_000, 2_000_000
            if provider == "vllm":
                cap_req, cap_tok = 600 * replicas, 400_000 * replicas
            used = rng.uniform(0.95, 1.0) if starved else rng.uniform(0.1, 0.6)
            out.append(ProviderLimit(
                provider=provider, limit_requests=cap_req, limit_tokens=cap_tok,
                remaining_requests=int(cap_req * (1 - used)),
                remaining_tokens=int(cap_tok * (1 - used)), reset_at=round(now + 60)))
        return out


class DemoSource(Source):
    """Feeds the demo workload into the ingestor from a background thread."""

    name = "demo"

    def __init__(self, ingestor: Ingestor, workload: DemoWorkload) -> None:
        super().__init__(ingestor)
        self.workload = workload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="demo", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        last = started
        while not self._stop.wait(TICK_SECONDS):
            now = time.monotonic()
            try:
                events = self.workload.tick(now - started, now - last)
                self.ingestor.apply(self.name, events)
            except Exception:  # a bug in the generator must not end the demo silently
                log.exception("demo tick failed")
            last = now

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def ready(self) -> tuple[bool, str]:
        alive = self._thread is not None and self._thread.is_alive()
        episode = self.workload.episode or "none"
        return alive, f"running, episode: {episode}" if alive else "stopped"


def from_config(deps: SourceDeps) -> list[Source]:
    config, ingestor = deps.config, deps.ingestor
    demo = config.demo
    if not demo.enabled:
        return []
    if demo.rate_per_second > MAX_RATE:
        raise ConfigError(f"demo.rate_per_second: at most {MAX_RATE:.0f} events/s, got "
                          f"{demo.rate_per_second:g}")
    if demo.episode not in ("", "none", *EPISODES):
        raise ConfigError(f"demo.episode: expected one of {', '.join(EPISODES)} or none, "
                          f"got {demo.episode!r}")
    schedule = Schedule(demo.episode, demo.episode_after_seconds, demo.episode_duration_seconds)
    return [DemoSource(ingestor, DemoWorkload(demo.rate_per_second, schedule, demo.seed))]
