# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t ghcr.io/diartune/operator:0.1.0 .   # kopf + SMAC3, no torch
#   docker build --target trial    -t ghcr.io/diartune/trial:0.1.0 .      # pyannote.audio, torch, FFmpeg
# Python packages come from the uv-compiled locks in requirements/, diartune itself from a wheel
# built here, installed with --no-deps so that only the locks decide versions.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.8

# ---- base: Python, the non-root user, environment shared by both images ----
FROM ${PYTHON_IMAGE} AS base
# Pods run with a read-only root filesystem and an emptyDir on /tmp: caches go there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 diartune \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/diartune --create-home \
        --shell /usr/sbin/nologin diartune

# ---- builder: uv, and the diartune wheel ----
FROM base AS builder
ARG UV_VERSION
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_NO_CACHE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /src
COPY pyproject.toml ./
COPY diartune/ diartune/
RUN uv build --wheel --out-dir /dist .

# ---- operator-env / trial-env: one virtual environment each, from the locks ----
FROM builder AS operator-env
COPY requirements/operator.lock /tmp/operator.lock
RUN uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python -r /tmp/operator.lock \
    && uv pip install --python /opt/venv/bin/python --no-deps /dist/*.whl

FROM builder AS trial-env
COPY requirements/trial.lock /tmp/trial.lock
# Resemblyzer without its dependencies: diartune uses only the speaker-encoder weights in its wheel.
RUN uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python -r /tmp/trial.lock \
    && uv pip install --python /opt/venv/bin/python --no-deps resemblyzer==0.1.4 \
    && uv pip install --python /opt/venv/bin/python --no-deps /dist/*.whl

# ---- trial: what each trial pod runs (`diartune trial --request-json ...`) ----
FROM base AS trial
LABEL org.opencontainers.image.title="diartune-trial" \
      org.opencontainers.image.description="One diartune trial: fine-tune, run and score a pyannote speaker-diarization pipeline" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
# torchcodec decodes audio with FFmpeg's shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=trial-env /opt/venv /opt/venv
# No telemetry; models come from local paths or s3:// URIs. To load Hugging Face hub ids,
# set HF_HUB_OFFLINE=0 in spec.trialTemplate.env and give pipeline.tokenSecret.
ENV PYANNOTE_METRICS_ENABLED=false \
    HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /home/diartune
ENTRYPOINT ["diartune"]
CMD ["trial", "--help"]

# ---- operator: the kopf operator (last, so that a plain `docker build` makes it) ----
FROM base AS operator
LABEL org.opencontainers.image.title="diartune-operator" \
      org.opencontainers.image.description="Kubernetes operator that tunes pyannote speaker-diarization pipelines with SMAC3" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
COPY --from=operator-env /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/diartune
ENTRYPOINT ["diartune"]
CMD ["operator"]
