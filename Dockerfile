# syntax=docker/dockerfile:1
# meshprobe's image: the wheels are built in the first stage, the final stage installs them with
# pip from that stage alone (no index, no compilers, no build tools) and runs as the non-root
# user the Deployment names (deploy/base/deployment.yaml: runAsUser 10001).
#
#   docker build -t meshprobe:0.1.0 .
#   docker run --rm -p 9942:9942 -e MESHPROBE_CLUSTER=cluster1 meshprobe:0.1.0
#
# tests/unit/test_deploy_image.py lints this file with hadolint, checks what it promises, and
# runs the same pip install steps in a clean virtualenv from a freshly built wheel.

# Debian 13 with Python 3.13: https probes cost 4-7 % less CPU than on bookworm with 3.11
# (0.96x blackbox_exporter's CPU against 1.00-1.03x, docs/tls-cpu.md). OpenSSL 3.5 drops 3.0's
# key-decoder cost (11 % of an https probe) but spends about as much on its extra post-quantum key
# share; the rest is Python 3.13. CI runs 3.11: requires-python stays >=3.11.
ARG PYTHON_IMAGE=python:3.13-slim-trixie

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshprobe ./meshprobe
# meshprobe's wheel and a wheel of every dependency (with the uvloop extra). Every dependency
# has binary wheels for linux/amd64 and linux/arm64; one that needed compiling would be built
# here, and only here.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[fast]'

FROM ${PYTHON_IMAGE}
# VERSION is meshprobe.__version__ (a test keeps them equal): the install below pins it, so an
# image can only be labelled with the version it contains. REVISION: `--build-arg
# REVISION=$(git rev-parse HEAD)`.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="meshprobe" \
      org.opencontainers.image.description="Latency, failover and TLS-trust prober for multi-cluster Kubernetes service meshes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the build stage, so none of them stays in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels "meshprobe[fast]==${VERSION}" \
    && groupadd --system --gid 10001 meshprobe \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshprobe
USER 10001:10001
EXPOSE 9942
# SIGTERM (Kubernetes' stop signal) ends meshprobe within 5 s; it runs as PID 1 and handles it.
ENTRYPOINT ["meshprobe", "run"]
