"""PromQL fragments every dashboard shares: selectors that carry the dashboard's filters.

Every selector filters ``job=~"$job"`` and ``instance=~"$instance"`` and every counter is read
through ``rate(...[$__rate_interval])``; building queries from these helpers keeps those rules
true by construction (tests/test_dashboards.py checks them on the generated JSON).

Several exporter replicas may share one event stream, each counting the events it consumed:
a panel sums them (``sum by (<domain labels>)``, never ``by (instance)``), so the
``instance`` variable on All shows the whole platform and one instance shows that replica's
share. Series recorded at the ``job`` level (``job_*:...``, already summed over the
replicas by prometheus/rules/) carry no ``instance``; ``jsel`` selects them by job alone.
"""

from __future__ import annotations

RI = "[$__rate_interval]"

COMP = 'component=~"$component"'
PROV = 'gen_ai_provider_name=~"$provider"'
MODEL = 'gen_ai_request_model=~"$model"'
CRITICAL = 'severity="critical"'
FAILED = 'outcome="error"'
APPROVED = 'decision="approved"'


def sel(metric: str, *matchers: str) -> str:
    """A selector filtered by the dashboard's job and instance, plus ``matchers``."""
    parts = ['job=~"$job"', 'instance=~"$instance"', *matchers]
    return f"{metric}{{{', '.join(parts)}}}"


def jsel(metric: str, *matchers: str) -> str:
    """A selector for a series recorded at the job level (summed over every replica, no
    ``instance`` label), filtered by the dashboard's job plus ``matchers``."""
    parts = ['job=~"$job"', *matchers]
    return f"{metric}{{{', '.join(parts)}}}"


def rate(metric: str, *matchers: str) -> str:
    """``rate()`` over Grafana's ``$__rate_interval`` (never a fixed window in a panel)."""
    return f"rate({sel(metric, *matchers)}{RI})"


def quantile(q: float, bucket: str, by: str, *matchers: str) -> str:
    """``histogram_quantile`` of a classic histogram's bucket rates, grouped by ``by``."""
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(bucket, *matchers)}))"


def component_up(*matchers: str) -> str:
    """1/0 per component: the HTTP probe when there is one, else the heartbeat."""
    return (f"(max by (component, kind) ({sel('ai_component_up', COMP, *matchers)}) "
            f"or max by (component, kind) ({sel('ai_component_heartbeat_up', COMP, *matchers)}))")


def task_ratio(numerator_status: str, denominator_status: str, *matchers: str) -> str:
    """Share of task transitions in ``numerator_status`` among ``denominator_status``."""
    numerator = rate("ai_tasks_total", *matchers, f'status=~"{numerator_status}"')
    denominator = rate("ai_tasks_total", *matchers, f'status=~"{denominator_status}"')
    return f"sum({numerator}) / sum({denominator})"
