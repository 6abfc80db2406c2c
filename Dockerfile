# The Synapse gateway image: `make image` builds it, K3s imports it (docs/DEPLOYMENT.md).
# Base pinned to an exact Python patch release on Debian 12; pin its digest too when building for
# production (`docker buildx imagetools inspect python:3.11.15-slim-bookworm`).
FROM python:3.11.15-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Runtime dependencies are pinned (==) in pyproject.toml; installed into a venv copied below.
RUN python -m venv /opt/synapse \
    && /opt/synapse/bin/pip install --no-compile . \
    && /opt/synapse/bin/python -m compileall -q /opt/synapse/lib

FROM python:3.11.15-slim-bookworm
LABEL org.opencontainers.image.title="synapse" \
      org.opencontainers.image.description="OpenAI- and Ollama-compatible LLM gateway"
# A fixed numeric non-root user, so runAsNonRoot can verify it (manifests use the same UID).
# /etc/synapse is the config's mount point: made here, so the runtime writes nothing into the
# container's own layer (`make test-image` checks that `docker diff` stays empty).
RUN groupadd --system --gid 10001 synapse \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin synapse \
    && mkdir -p /etc/synapse
COPY --from=build /opt/synapse /opt/synapse
ENV PATH=/opt/synapse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 8000: OpenAI and Ollama API (keyed); 11434: keyless Ollama-compatible port; 9090: /metrics
# only (synapse_settings.metrics_port), for Prometheus.
EXPOSE 8000 11434 9090
# Read-only root filesystem friendly: the config is mounted at /etc/synapse, nothing is written.
ENTRYPOINT ["synapse"]
CMD ["serve", "--config", "/etc/synapse/config.yaml", "--host", "0.0.0.0", "--port", "8000", "--ollama-port", "11434"]
