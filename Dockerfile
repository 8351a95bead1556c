# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t ghcr.io/diartune/operator:0.1.0 .   # kopf + SMAC3, no torch
#   docker build --target trial    -t ghcr.io/diartune/trial:0.1.0 .      # pyannote.audio, torch, FFmpeg
# Air-gapped: add --build-arg PYTHON_IMAGE=<your copy of python:3.11-slim-bookworm>.
#
# Layers are ordered for caching. The packages of a uv-compiled lock in requirements/ go
# into /opt/venv in a stage that never sees the source; diartune itself is built as a
# wheel, installed with --no-deps (only the locks decide versions) into a venv of its own,
# and copied over last: a change under diartune/ rebuilds only small layers.
# The final images hold no package installer: uv and pip are removed in the very layer
# that used them.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.8

# ---- base: Python, the non-root user, environment shared by every stage ----
FROM ${PYTHON_IMAGE} AS base
# Pods run with a read-only root filesystem and an emptyDir on /tmp: caches go there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 diartune \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/diartune --create-home \
        --shell /usr/sbin/nologin diartune

# ---- app: diartune's wheel, installed alone into a venv laid out like the final one ----
FROM base AS app
ARG UV_VERSION
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
COPY diartune/ diartune/
RUN --mount=type=cache,id=uv,target=/root/.cache/uv \
    export UV_CACHE_DIR=/root/.cache/uv UV_PYTHON_DOWNLOADS=never \
    && uv build --wheel --out-dir /dist . \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --no-deps --compile-bytecode /dist/*.whl

# ---- operator-deps, trial-deps: the packages of one lock in /opt/venv, no diartune ----
# The uv cache is a cache mount (downloads are kept between builds). The venv is
# bytecode-compiled: a pod's root filesystem is read-only, so nothing compiles at run time.
FROM base AS operator-deps
ARG UV_VERSION
COPY requirements/operator.lock /usr/local/share/diartune/operator.lock
RUN --mount=type=cache,id=uv,target=/root/.cache/uv \
    export UV_CACHE_DIR=/root/.cache/uv UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    && pip install --no-cache-dir --quiet "uv==${UV_VERSION}" \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --compile-bytecode \
        -r /usr/local/share/diartune/operator.lock \
    && pip uninstall --yes --quiet uv pip setuptools wheel

FROM base AS trial-deps
ARG UV_VERSION
# torchcodec decodes audio with FFmpeg's shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/trial.lock /usr/local/share/diartune/trial.lock
# Resemblyzer without its dependencies: diartune uses only the speaker-encoder weights in its wheel.
RUN --mount=type=cache,id=uv,target=/root/.cache/uv \
    export UV_CACHE_DIR=/root/.cache/uv UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    && pip install --no-cache-dir --quiet "uv==${UV_VERSION}" \
    && uv venv --python /usr/local/bin/python3 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --compile-bytecode \
        -r /usr/local/share/diartune/trial.lock \
    && uv pip install --python /opt/venv/bin/python --compile-bytecode \
        --no-deps resemblyzer==0.1.4 \
    && pip uninstall --yes --quiet uv pip setuptools wheel

# ---- trial: what each trial pod runs (`diartune trial --request-json ...`) ----
FROM trial-deps AS trial
LABEL org.opencontainers.image.title="diartune-trial" \
      org.opencontainers.image.description="One diartune trial: fine-tune, run and score a pyannote speaker-diarization pipeline" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
# No telemetry; models come from local paths or s3:// URIs. To load Hugging Face hub ids,
# set HF_HUB_OFFLINE=0 in spec.trialTemplate.env and give pipeline.tokenSecret.
ENV PYANNOTE_METRICS_ENABLED=false \
    HF_HUB_OFFLINE=1
# diartune's package, metadata and console script (the venvs share Python 3.11's layout).
COPY --from=app /opt/venv/lib/python3.11/site-packages/ /opt/venv/lib/python3.11/site-packages/
COPY --from=app /opt/venv/bin/diartune /opt/venv/bin/diartune
USER 10001:10001
WORKDIR /home/diartune
ENTRYPOINT ["diartune"]
CMD ["trial", "--help"]

# ---- operator: the kopf operator (last, so that a plain `docker build` makes it) ----
FROM operator-deps AS operator
LABEL org.opencontainers.image.title="diartune-operator" \
      org.opencontainers.image.description="Kubernetes operator that tunes pyannote speaker-diarization pipelines with SMAC3" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
COPY --from=app /opt/venv/lib/python3.11/site-packages/ /opt/venv/lib/python3.11/site-packages/
COPY --from=app /opt/venv/bin/diartune /opt/venv/bin/diartune
USER 10001:10001
WORKDIR /home/diartune
ENTRYPOINT ["diartune"]
CMD ["operator"]
