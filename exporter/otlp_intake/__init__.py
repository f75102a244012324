"""OTLP intake: traces, metrics and logs from OpenTelemetry-instrumented applications,
mapped onto the event model (docs/otlp-intake.md).

``decode`` turns an OTLP/HTTP or gRPC body into the request message, ``attributes`` reads
attribute lists, ``spans``, ``logs`` and ``metrics`` map each signal, ``dedup`` remembers
what a retried export sends again; ``exporter.sources.otlp`` is the source that runs them
behind the write-ahead log.
"""
