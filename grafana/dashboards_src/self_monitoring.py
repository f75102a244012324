"""The exporter itself: scrapes, collectors, ingestion, tailed files, OTLP intake and export,
Redis, access."""

from __future__ import annotations

from .layout import UID_EXPORTER, Board, Section
from .panels import OK_FAIL, UP_DOWN, Target, rising, stat, status, table, ts
from .parameters import Parameters
from .promql import rate, sel


def build(params: Parameters) -> Board:
    """The dashboard, with the alert thresholds of ``params``."""
    alert = params.threshold
    scrape = [
        status("Exporter up", "Whether Prometheus scraped the exporter successfully.",
               Target(f"min by (instance) ({sel('up')})", "{{instance}}"), UP_DOWN,
               width=4, height=6),
        status("Configuration reload", "Whether the last configuration reload succeeded "
               "(SIGHUP or POST /-/reload).",
               Target(f"min by (instance) ({sel('ai_exporter_config_last_reload_successful')})",
                      "{{instance}}"), OK_FAIL, width=4, height=6),
        table("Build", "Version, git revision and Python version of each exporter.", "none",
              f"max by (instance, version, revision, python_version) "
              f"({sel('ai_exporter_build_info')})", width=16, hide=("Value",)),
        ts("Scrape duration", "How long Prometheus takes to scrape the exporter.", "s",
           Target(sel("scrape_duration_seconds"), "{{instance}}"), width=8),
        ts("Samples per scrape", "Samples in each scrape of the exporter.", "short",
           Target(sel("scrape_samples_scraped"), "{{instance}}"), width=8),
        ts("Exporter process", "CPU (cores) used by the exporter process.", "short",
           Target(f"sum by (instance) ({rate('process_cpu_seconds_total')})",
                  "{{instance}} CPU"), width=4),
        ts("Exporter memory", "Resident memory of the exporter process.", "bytes",
           Target(f"max by (instance) ({sel('process_resident_memory_bytes')})",
                  "{{instance}}"), width=4),
    ]
    collectors = [
        status("Collector status", "Whether each collector succeeded in the last scrape; "
               "one failing collector never fails the scrape.",
               Target(f"min by (collector) ({sel('ai_exporter_collector_success')})",
                      "{{collector}}"), OK_FAIL, width=12, height=8, names=True),
        ts("Collector duration", "Time each collector took in the last scrape.", "s",
           Target(f"max by (collector) ({sel('ai_exporter_collector_duration_seconds')})",
                  "{{collector}}")),
    ]
    ingest = [
        ts("Events accepted", "Events accepted per second by source and kind.", "cps",
           Target(f"sum by (source, kind) ({rate('ai_exporter_events_total')})",
                  "{{source}} {{kind}}"), width=8, stack=True),
        ts("Events rejected", "Events rejected per second by source and reason.", "cps",
           Target(f"sum by (source, reason) ({rate('ai_exporter_events_rejected_total')})",
                  "{{source}} {{reason}}"), width=8),
        ts("Rejected share (10m)", "Share of received events rejected over the last 10 "
           "minutes, per source; orange at the alert threshold.", "percentunit",
           Target(sel("instance_source:ai_exporter_events_rejected_per_received:ratio_rate10m"),
                  "{{instance}} {{source}}"), width=8,
           thresholds=rising(alert("ai_exporter_events_rejected_ratio", "warning")),
           dashed=True),
        stat("Seconds since last event", "Time since each source last delivered an event.",
             "s",
             Target("time() - max by (source) ("
                    + sel("ai_exporter_events_last_timestamp_seconds") + ")", "{{source}}"),
             width=8, height=6),
        ts("Series per AI metric", "Label sets the exporter holds per AI metric (capped by "
           "ai.max_series_per_metric).", "short",
           Target(f"max by (metric) ({sel('ai_exporter_series')})", "{{metric}}"), width=8,
           height=6),
        ts("Series overflow", "Observations per second folded into the 'other' label set "
           "because a metric reached its series cap.", "cps",
           Target(f"sum by (metric) ({rate('ai_exporter_series_overflow_total')})",
                  "{{metric}}"), width=8, height=6),
    ]
    tail = [
        ts("Tail lag", "Bytes written to each tailed file and not yet read; orange at the "
           "alert threshold.", "bytes",
           Target(f"max by (path) ({sel('ai_exporter_tail_lag_bytes')})", "{{path}}"),
           width=8, thresholds=rising(alert("ai_exporter_tail_lag_bytes", "warning")),
           dashed=True),
        ts("Tail read rate", "Bytes read per second from each tailed file.", "Bps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_read_bytes_total')})", "{{path}}"),
           width=8),
        ts("Tail lines, events and rejections", "Per second per tailed file: lines read, "
           "events accepted and lines rejected.", "cps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_lines_total')})", "{{path}} lines"),
           Target(f"sum by (path) ({rate('ai_exporter_tail_events_total')})",
                  "{{path}} events"),
           Target(f"sum by (path, reason) ({rate('ai_exporter_tail_rejected_total')})",
                  "{{path}} rejected {{reason}}"), width=8),
        ts("Rotations and truncations", "Rotations (new inode) and truncations seen per "
           "tailed file, per second.", "cps",
           Target(f"sum by (path) ({rate('ai_exporter_tail_rotations_total')})",
                  "{{path}} rotations"),
           Target(f"sum by (path) ({rate('ai_exporter_tail_truncations_total')})",
                  "{{path}} truncations"), width=8),
        stat("Seconds since last read", "Time since each tailed file was last read.", "s",
             Target("time() - max by (path) ("
                    + sel("ai_exporter_tail_last_read_timestamp_seconds") + ")", "{{path}}"),
             width=8, height=8),
        ts("Snapshot file reads", "Reads of JSON snapshot files per second, by outcome.",
           "cps",
           Target(f"sum by (path, outcome) ({rate('ai_exporter_snapshot_reads_total')})",
                  "{{path}} {{outcome}}"), width=8),
    ]
    intake = [
        ts("OTLP intake items", "Spans, metric points and log records received over OTLP "
           "per second, by signal and outcome (mapped; ignored: not GenAI/MCP or not the "
           "counted signal; duplicate: a retried export seen before; rejected).", "cps",
           Target(f"sum by (signal, outcome) "
                  f"({rate('ai_exporter_otlp_intake_items_total')})",
                  "{{signal}} {{outcome}}"), width=10),
        ts("OTLP intake requests", "OTLP export requests received per second, by transport "
           "and outcome (success, partial, rejected, too_large, unsupported, unavailable, "
           "unauthorized).", "reqps",
           Target(f"sum by (transport, outcome) "
                  f"({rate('ai_exporter_otlp_intake_requests_total')})",
                  "{{transport}} {{outcome}}"), width=8),
        ts("OTLP span identities kept", "Span and log identities remembered to drop retried "
           "exports (bounded by sources.otlp.dedup_window).", "short",
           Target(f"max by (instance) ({sel('ai_exporter_otlp_intake_dedup_ids')})",
                  "{{instance}}"), width=6),
    ]
    otlp = [
        ts("OTLP exports", "OTLP metric exports per second by outcome (success, failure, "
           "retry).", "cps",
           Target(f"sum by (outcome) ({rate('ai_exporter_otlp_exports_total')})",
                  "{{outcome}}"), width=6),
        ts("OTLP failure ratio (10m)", "Share of OTLP exports that failed over the last 10 "
           "minutes; orange at the alert threshold.", "percentunit",
           Target(sel("instance:ai_exporter_otlp_exports_failed_per_attempted:ratio_rate10m"),
                  "{{instance}}"), width=6,
           thresholds=rising(alert("ai_exporter_otlp_export_failure_ratio", "warning")),
           dashed=True),
        ts("OTLP export duration", "Duration of the last OTLP export.", "s",
           Target(f"max by (instance) ({sel('ai_exporter_otlp_export_duration_seconds')})",
                  "{{instance}}"), width=6),
        stat("Seconds since last OTLP success", "Time since the last successful OTLP "
             "export.", "s",
             Target("time() - max by (instance) ("
                    + sel("ai_exporter_otlp_last_success_timestamp_seconds") + ")",
                    "{{instance}}"), width=6, height=8),
    ]
    redis = [
        status("Redis source", "Whether the Redis Streams source is connected.",
               Target(f"min by (instance) ({sel('ai_exporter_redis_up')})", "{{instance}}"),
               UP_DOWN, width=4, height=8),
        ts("Redis stream length", "Entries in each Redis stream.", "short",
           Target(f"max by (stream) ({sel('ai_exporter_redis_stream_length')})", "{{stream}}"),
           width=6),
        ts("Consumer group lag and pending", "Entries not yet delivered to the consumer "
           "group, and delivered but not acknowledged.", "short",
           Target("max by (stream, group) ("
                  + sel("ai_exporter_redis_consumer_group_lag") + ")",
                  "{{stream}}/{{group}} lag"),
           Target("max by (stream, group) ("
                  + sel("ai_exporter_redis_consumer_group_pending") + ")",
                  "{{stream}}/{{group}} pending"), width=8),
        ts("Redis reconnects", "Reconnections to Redis per second.", "cps",
           Target(f"sum by (instance) ({rate('ai_exporter_redis_reconnects_total')})",
                  "{{instance}}"), width=6),
    ]
    security_panels = [
        ts("Authentication failures", "Requests refused for failed authentication, per "
           "second, by reason.", "reqps",
           Target(f"sum by (reason) ({rate('ai_exporter_http_auth_failures_total')})",
                  "{{reason}}"), width=24, height=6),
    ]
    return Board(
        UID_EXPORTER, "Exporter",
        "The exporter itself: scrapes, collectors, event ingestion per source, tailed "
        "files, series caps, OTLP intake, OTLP export, Redis Streams and authentication.",
        ["exporter"], [],
        [Section("Scrapes", scrape), Section("Collectors", collectors),
         Section("Event ingestion", ingest),
         Section("Tailed files and snapshots", tail), Section("OTLP intake", intake),
         Section("OTLP export", otlp),
         Section("Redis Streams", redis), Section("Access", security_panels)])
