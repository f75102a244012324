"""ai-metrics-exporter: host and AI-agent-platform activity as Prometheus and OTLP metrics.

A regular package (not a namespace package) so that type checkers and tools resolve
``exporter.*`` module names unambiguously.
"""
