# ai-metrics-exporter container image: slim Python, non-root, health-checked on /livez.
#
#   docker build \
#     --build-arg AI_EXPORTER_REVISION="$(git rev-parse HEAD)" \
#     --build-arg AI_EXPORTER_BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t ai-metrics-exporter .
#
# Add --build-arg EXTRAS=gpu for NVIDIA GPU metrics (run with the NVIDIA container runtime).
#
# The revision and build date become AI_EXPORTER_REVISION / AI_EXPORTER_BUILD_DATE in the
# image, which /api/status/version and ai_exporter_build_info report (there is no .git
# inside the image to ask).
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional extras, comma-separated: gpu (NVML GPU metrics), grpc (OTLP over gRPC).
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# A C compiler in the build stage only: it builds the native JSONL line path
# (exporter/_lines.c), which the runtime stage gets inside the venv.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# The tested versions only: every wheel of requirements/run.lock is downloaded with its
# hash checked, then the project and the extras asked for are installed from those wheels
# alone (no index), so an extra that is not asked for is not installed. The checks run
# with -I: /src/exporter (the sources, without the built extension) must not shadow the
# installed package.
COPY requirements/run.lock ./requirements/
RUN pip download -q --require-hashes --no-deps -r requirements/run.lock -d /wheels
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/ai-metrics-exporter \
 && /opt/ai-metrics-exporter/bin/pip install --no-index --find-links /wheels setuptools wheel \
 && /opt/ai-metrics-exporter/bin/pip install --no-index --find-links /wheels \
      --no-build-isolation ".${EXTRAS:+[${EXTRAS}]}" \
 && /opt/ai-metrics-exporter/bin/pip check \
 && /opt/ai-metrics-exporter/bin/python -I -c "from exporter import native; assert native.available()" \
 && /opt/ai-metrics-exporter/bin/ai-metrics-exporter --version

FROM ${PYTHON_IMAGE}
ARG AI_EXPORTER_REVISION=unknown
ARG AI_EXPORTER_BUILD_DATE=unknown
LABEL org.opencontainers.image.title="ai-metrics-exporter" \
      org.opencontainers.image.description="Prometheus and OTLP exporter for host and AI-agent-platform activity" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${AI_EXPORTER_REVISION}" \
      org.opencontainers.image.created="${AI_EXPORTER_BUILD_DATE}"
ENV AI_EXPORTER_REVISION=${AI_EXPORTER_REVISION} \
    AI_EXPORTER_BUILD_DATE=${AI_EXPORTER_BUILD_DATE} \
    PATH=/opt/ai-metrics-exporter/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A dedicated system user; its home is the state store (storage.path: AI state, source
# cursors, the push write-ahead log). Mount a volume there to keep counts across restarts.
RUN groupadd --system --gid 10102 ai-metrics-exporter \
 && useradd --system --uid 10102 --gid ai-metrics-exporter --no-log-init \
      --home-dir /var/lib/ai-metrics-exporter --create-home --shell /usr/sbin/nologin \
      ai-metrics-exporter
COPY --from=build /opt/ai-metrics-exporter /opt/ai-metrics-exporter
USER 10102:10102
WORKDIR /var/lib/ai-metrics-exporter
# storage.path for every subcommand (serve, demo); a flag or config file still wins.
ENV AI_EXPORTER_STORAGE__PATH=/var/lib/ai-metrics-exporter
EXPOSE 10102
# No curl in the slim image: Python asks /livez. Set HEALTHCHECK_URL when the exporter
# listens elsewhere (another port, or TLS).
ENV HEALTHCHECK_URL=http://127.0.0.1:10102/livez
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]
ENTRYPOINT ["ai-metrics-exporter"]
CMD ["serve"]
