"""Real GenAI clients, instrumented by their OTel instrumentations, that send OTLP to an
endpoint (the exporter's intake in tests/test_otlp_intake_clients.py). Each module runs as
``python tests/otlp_clients/<name>.py``; ``capture.py`` records what one sends."""
