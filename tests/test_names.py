"""Naming conventions the catalog keeps: Unix times end in
``_timestamp_seconds``, the provider label has one name, renamed series stay gone."""

from __future__ import annotations

import re

from exporter import catalog

# Renamed in 0.x (CHANGELOG.md): none of these may come back.
RENAMED = {
    "ai_provider_rate_limit_reset_seconds": "ai_provider_rate_limit_reset_timestamp_seconds",
    "ai_component_probe_tls_cert_expiry_seconds":
        "ai_component_probe_tls_cert_expiry_timestamp_seconds",
    "ai_component_heartbeat_last_seen_seconds":
        "ai_component_heartbeat_last_seen_timestamp_seconds",
    "ai_process_start_time_seconds": "ai_process_start_timestamp_seconds",
    "system_boot_time_seconds": "system_boot_timestamp_seconds",
}
UNIX_TIME = re.compile(r"Unix (seconds|epoch)|since the epoch", re.IGNORECASE)


def test_unix_times_end_in_timestamp_seconds() -> None:
    unix = [m for m in catalog.all_metrics() if UNIX_TIME.search(m.description)]
    assert len(unix) >= 10
    wrong = [m.name for m in unix if not m.name.endswith("_timestamp_seconds")
             or m.kind is not catalog.Kind.GAUGE]
    assert wrong == []


def test_timestamp_names_hold_unix_times() -> None:
    """The other way round: a ``_timestamp_seconds`` gauge says it holds a Unix time."""
    for m in catalog.all_metrics():
        if m.name.endswith("_timestamp_seconds"):
            assert UNIX_TIME.search(m.description), m.name


def test_renamed_metrics_are_served_under_their_new_names() -> None:
    names = catalog.by_name()
    assert not set(RENAMED) & set(names)
    assert set(RENAMED.values()) <= set(names)


def test_one_name_for_the_provider_label() -> None:
    labels = {label for m in catalog.all_metrics() for label in m.labels}
    assert "gen_ai_provider_name" in labels
    assert not {label for label in labels if "provider" in label} - {"gen_ai_provider_name"}
