# syntax=docker/dockerfile:1.7
#
# backup_exporter image: `backupctl` plus MongoDB Database Tools (so the default `mongodump` engine works).
#
#   docker build -t backup-exporter:dev .
#
# Needs BuildKit (the default builder since Docker 23): RUN --mount keeps the wheels and the APT key out of
# the image layers. No configuration or secret is baked in: pass them at run time (environment or
# BACKUPCTL_CONFIG). Nothing needs filling in: the tools come from MongoDB's signed APT repository, whose
# key is pinned by fingerprint, at a pinned package version.

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
# apt-key: MongoDB's APT signing key, refused unless its fingerprint is the pinned one. The check is a short
# standard-library script (deploy/docker/openpgp_fingerprint.py), so no GnuPG is needed anywhere.
FROM ${PYTHON_IMAGE} AS apt-key
# "MongoDB 7.0 Release Signing Key" <packaging@mongodb.com>, published at https://pgp.mongodb.com/.
ARG MONGO_APT_KEY_URL=https://pgp.mongodb.com/server-7.0.asc
ARG MONGO_APT_KEY_FINGERPRINT=E58830201F7DD82CD808AA84160D26BB1785BA38
WORKDIR /out
COPY deploy/docker/openpgp_fingerprint.py /usr/local/bin/openpgp_fingerprint.py
RUN python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
      "${MONGO_APT_KEY_URL}" mongodb-server-7.0.asc \
 && python /usr/local/bin/openpgp_fingerprint.py mongodb-server-7.0.asc "${MONGO_APT_KEY_FINGERPRINT}"

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

# MongoDB Database Tools (mongodump, mongorestore, ...) from MongoDB's APT repository, which apt checks
# against the pinned key only (signed-by). 100.8.0 is the version the test suite runs against; it predates
# MongoDB's Debian 12 builds (tools 100.9.3+), so it comes from the Debian 11 repository: the tools are
# static Go binaries whose few library dependencies Debian 12 provides. When bumping, change both ARGs
# (and MONGO_APT_SUITE to bookworm for 100.9.3 or later) and run the suite with the same version.
ARG MONGO_TOOLS_VERSION=100.8.0
ARG MONGO_APT_SUITE=bullseye/mongodb-org/7.0
RUN --mount=type=bind,from=apt-key,source=/out,target=/mnt/apt-key \
    install -d -m 0755 /etc/apt/keyrings \
 && install -m 0644 /mnt/apt-key/mongodb-server-7.0.asc /etc/apt/keyrings/mongodb-server-7.0.asc \
 && echo "deb [signed-by=/etc/apt/keyrings/mongodb-server-7.0.asc] https://repo.mongodb.org/apt/debian ${MONGO_APT_SUITE} main" \
      > /etc/apt/sources.list.d/mongodb-org.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "mongodb-database-tools=${MONGO_TOOLS_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && mongodump --version | grep -F "version: ${MONGO_TOOLS_VERSION}" \
 && mongorestore --version | grep -F "version: ${MONGO_TOOLS_VERSION}"

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
