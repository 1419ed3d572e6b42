# syntax=docker/dockerfile:1.7
#
# backup_exporter image: `backupctl` plus MongoDB Database Tools (so the default `mongodump` engine works).
#
#   docker build -t backup-exporter:dev \
#     --build-arg MONGO_TOOLS_SHA256=<sha256 of the .deb> .
#
# Needs BuildKit (the default builder since Docker 23): RUN --mount keeps the wheels and the .deb out of the
# image layers. No configuration or secret is baked in: pass them at run time (environment or BACKUPCTL_CONFIG).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# builder: a wheel of the project and wheels of all its dependencies, so the final stage installs offline
# and needs no compiler.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the build reads (see .dockerignore): packaging metadata first, then the package.
COPY pyproject.toml README.md ./
COPY backup_exporter ./backup_exporter
RUN pip wheel --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------------
# tools: download MongoDB Database Tools and verify the checksum before anything installs it.
FROM ${PYTHON_IMAGE} AS tools
# Pinned release of MongoDB Database Tools (Debian 12, x86_64). When bumping the version, update the checksum.
ARG MONGO_TOOLS_VERSION=100.10.0
# MAINTAINER: fill in the real value from the published checksum file
#   https://fastdl.mongodb.org/tools/db/mongodb-database-tools-debian12-x86_64-${MONGO_TOOLS_VERSION}.deb.sha256
# (or `sha256sum` of the .deb listed on https://www.mongodb.com/try/download/database-tools), or pass it with
# --build-arg MONGO_TOOLS_SHA256=... The build refuses to continue while this placeholder is in place.
ARG MONGO_TOOLS_SHA256=FILL_IN_SHA256_FROM_FASTDL_MONGODB_ORG
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /out
RUN if [[ ! "${MONGO_TOOLS_SHA256}" =~ ^[0-9a-f]{64}$ ]]; then \
      echo "MONGO_TOOLS_SHA256 is not set to a sha256 (see the comment in the Dockerfile)" >&2; exit 1; \
    fi \
 && python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
      "https://fastdl.mongodb.org/tools/db/mongodb-database-tools-debian12-x86_64-${MONGO_TOOLS_VERSION}.deb" \
      mongodb-database-tools.deb \
 && echo "${MONGO_TOOLS_SHA256}  mongodb-database-tools.deb" | sha256sum --check --strict -

# ---------------------------------------------------------------------------------------------------------
# final image
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="backup_exporter" \
      org.opencontainers.image.description="MongoDB backup sidecar: streams dumps into Azure Blob Storage and exports Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp \
    TMPDIR=/tmp

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# MongoDB Database Tools (mongodump, mongorestore, ...) from the verified .deb; apt resolves its few
# shared-library dependencies. The .deb is bind-mounted from the tools stage, so it is not in any layer.
RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools \
    apt-get update \
 && apt-get install -y --no-install-recommends /mnt/tools/mongodb-database-tools.deb \
 && rm -rf /var/lib/apt/lists/* \
 && mongodump --version

# The project and its dependencies, from the builder's wheels only (no index, no compiler).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/backup_exporter-*.whl \
 && backupctl --help >/dev/null

# Unprivileged user with a fixed numeric id, so Kubernetes can check runAsNonRoot (uid 10001, gid 10001).
RUN groupadd --system --gid 10001 backupctl \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin backupctl
USER 10001:10001
WORKDIR /tmp

EXPOSE 9868
# Liveness of the daemon (the default command). Assumes the default listen port 9868; `run-now` containers
# exit before the first check. Kubernetes ignores HEALTHCHECK: the manifests use httpGet probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9868/healthz', timeout=4)"]

ENTRYPOINT ["backupctl"]
CMD ["daemon"]
