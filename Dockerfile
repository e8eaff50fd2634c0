# stream-projector container image.
#
#   docker build -t stream-projector .                 # the daemon (last stage, "runtime")
#   docker build --target demo -t stream-projector-demo .   # adds moto for `demo` / the seeder
#   docker build --target kcl -t stream-projector-kcl .     # under the KCL MultiLangDaemon
#
# Stages: "base" (slim Python, user, environment) is shared by the images; "builder" and
# "demo-builder" turn the project and its dependencies into wheels and install them into a
# virtual environment; the final images copy only that environment, so no pip cache, wheel
# or build tool reaches them. Every dependency ships manylinux wheels, so the builder needs no
# compiler either; if one ever does, install it in the builder only.
#
# Build with BuildKit (Docker Engine 23 and later by default; DOCKER_BUILDKIT=1 on 20.10): it
# builds only the stages a target needs, while the legacy builder would build every stage before
# it, the kcl ones (Java, Maven Central) included. There is no `# syntax=` line: the engine's
# own frontend reads this file, so building needs no frontend image from a registry.
# tests/container (scripts/container-test.sh) builds "runtime" and "demo" and runs them.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
# A numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
ARG APP_UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin app \
    && mkdir -p /etc/stream-projector


FROM base AS builder
# A package index other than PyPI (a mirror, or the wheelhouse scripts/container-test.sh
# serves): a build argument of the builder stages only, so no final image keeps it. Unset, pip
# uses PyPI.
ARG PIP_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    WHEEL_DIR=/wheels
WORKDIR /src
# Dependencies change less often than the code, but they are declared in pyproject.toml next to
# the package list, so the whole project is copied at once; .dockerignore keeps the rest out.
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY projections ./projections
RUN python -m venv "$VIRTUAL_ENV"
RUN pip wheel --wheel-dir "$WHEEL_DIR" .
# --no-index: the environment gets exactly the wheels built above, nothing fetched twice.
RUN "$VIRTUAL_ENV/bin/pip" install --no-index --find-links "$WHEEL_DIR" stream-projector


FROM builder AS demo-builder
ARG PIP_INDEX_URL
RUN pip wheel --wheel-dir "$WHEEL_DIR" ".[demo]"
RUN "$VIRTUAL_ENV/bin/pip" install --no-index --find-links "$WHEEL_DIR" "stream-projector[demo]"


# The demo image: the daemon plus moto, for `stream-projector demo` and compose's seeder.
FROM base AS demo
COPY --from=demo-builder /opt/venv /opt/venv
USER 10001:10001
ENTRYPOINT ["stream-projector"]
CMD ["demo"]


# The KCL jars: amazon_kclpy's documented `setup.py download_jars` fetches the MultiLangDaemon
# and its dependencies (the versions pinned in the package's pom.xml) from Maven Central.
FROM base AS kcl-jars
ARG AMAZON_KCLPY_VERSION=3.2.0
WORKDIR /kclpy
RUN pip download --no-deps --no-binary :all: --no-cache-dir "amazon_kclpy==${AMAZON_KCLPY_VERSION}" \
    && tar xzf amazon_kclpy-*.tar.gz --strip-components=1 \
    && pip install --no-cache-dir "setuptools<81" \
    && python setup.py download_jars \
    && mkdir -p /opt/kcl/jars && cp amazon_kclpy/jars/*.jar /opt/kcl/jars/


# KCL mode: the MultiLangDaemon (Java) owns leases and GetRecords and runs
# `python -m consumer.runtimes.kcl` per shard. Mount the properties file (deploy/kcl/) at
# /etc/stream-projector/kcl.properties and the TOML at /etc/stream-projector/config.toml.
#   docker build --target kcl -t stream-projector-kcl .
FROM base AS kcl
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv
COPY --from=kcl-jars /opt/kcl/jars /opt/kcl/jars
ENV STREAM_PROJECTOR_CONFIG=/etc/stream-projector/config.toml
WORKDIR /tmp
USER 10001:10001
STOPSIGNAL SIGTERM
ENTRYPOINT ["java", "-cp", "/opt/kcl/jars/*", "software.amazon.kinesis.multilang.MultiLangDaemon"]
CMD ["--properties-file", "/etc/stream-projector/kcl.properties"]


# The production image (default target: last stage).
FROM base AS runtime
# Re-declared: an ARG before the first FROM is not visible inside a stage otherwise.
ARG PYTHON_IMAGE
# The image version label: pass --build-arg VERSION="$(python -c "import consumer; print(consumer.__version__)")"
# (consumer/__init__.py is the one version source; without it the label says so).
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="stream-projector" \
      org.opencontainers.image.description="Reads DynamoDB Streams and Kinesis shard by shard and keeps read models up to date with idempotent projections." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/stream-projector" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=builder /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 9102
# Python runs as PID 1 without an init (tini): the daemon installs its own SIGTERM handler
# (PID 1 gets no default signal actions) and starts no child processes, so there are no
# zombies to reap. Exec form, so the signal goes to Python and not to a shell.
STOPSIGNAL SIGTERM
# No curl in slim images: Python's urllib. STREAM_PROJECTOR_HTTP__PORT is honoured when the
# port is overridden through the environment; urlopen raises (exit 1) on any non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_PROJECTOR_HTTP__PORT', '9102'), timeout=4)"]
ENTRYPOINT ["stream-projector"]
CMD ["run", "--config", "/etc/stream-projector/config.toml"]
