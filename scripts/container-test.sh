#!/usr/bin/env bash
# The container image, really built: what tests/container needs before it runs containers.
#
#   scripts/container-test.sh prepare DIR   # a Docker engine, a base image, the runtime and demo
#                                           # images; DIR/env names them for the tests
#   scripts/container-test.sh cleanup DIR   # removes test containers; stops the engine if a
#                                           # container test started it
#
# prepare uses the engine that answers `docker info`; when none does, it starts dockerd
# (installed by scripts/install-test-deps.sh from Debian's docker.io) without touching the
# host's network: no bridge, no iptables, so containers run with --network host. The base image
# is $PYTHON_IMAGE (python:3.11-slim-bookworm) when it is present or can be pulled, otherwise
# one made with mmdebstrap from Debian packages (bookworm's python3.11) and kept in the
# engine's image store for the next run. pip inside the build gets its packages from a
# wheelhouse this script downloads with the host's pip and serves on 127.0.0.1 (build argument
# PIP_INDEX_URL): the build needs no route to PyPI, and no final image keeps the index.
#
# Exit status of prepare: 0 ready; 77 no engine can be had here (DIR/skip says which step
# failed: no root, the engine does not start, no base image...); 78 a tool that
# scripts/install-test-deps.sh installs is missing (DIR/missing); anything else is a real
# failure (a build broke: its log is printed). tests/container holds a machine-wide
# lock around prepare and cleanup so two runs never share an engine one of them stops.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=bookworm
# python3-venv brings ensurepip (the Dockerfile runs `python -m venv`), python-is-python3 the
# `python` command the Dockerfile and the HEALTHCHECK call.
DEBIAN_PACKAGES=python3-venv,python-is-python3
RUNTIME_IMAGE=stream-projector:container-test
DEMO_IMAGE=stream-projector-demo:container-test
LABEL=stream-projector.container-test
# Where an engine started here keeps its pid file and log, so any later cleanup can stop it.
ENGINE_DIR=${TMPDIR:-/tmp}/stream-projector-container-test
ENGINE_SOCKET=unix:///var/run/docker.sock
# A fixed port when free: the index URL is a build argument, so a stable one keeps the build
# cache valid from one run to the next.
WHEELHOUSE_PORT=${WHEELHOUSE_PORT:-47391}
INSTALL="run \`make test-deps\` (scripts/install-test-deps.sh)"
WHEELHOUSE_CACHE=${WHEELHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stream-projector/wheelhouse}

usage() {
  echo "usage: $0 {prepare|cleanup} DIR" >&2
  exit 2
}

log() { echo "container-test: $*" >&2; }

skip() {
  echo "$*" >"$STATE/skip"
  log "skipped: $*"
  exit 77
}

# A tool scripts/install-test-deps.sh installs is missing: DIR/missing names it (line 1) and the
# fix (line 2); tests/container skips, or fails under STREAM_PROJECTOR_REQUIRE_TOOLS=1.
missing() {
  printf '%s\n%s\n' "$1" "$2" >"$STATE/missing"
  log "missing: $1 ($2)"
  exit 78
}

now() { date +%s.%N; }

# Seconds since $1, one decimal, appended to DIR/timings as "step seconds detail".
timed() {
  local step=$1 started=$2 detail=${3:-}
  local took
  took=$(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  echo "$step $took $detail" >>"$STATE/timings"
  log "$step: ${took}s${detail:+ ($detail)}"
}

# Root, or passwordless sudo: starting dockerd and mmdebstrap need it.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

can_be_root() { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }

engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

# A client that builds with BuildKit: the Dockerfile needs it (see docs/deploy.md), and from
# Docker 23 on that means the buildx plugin; older clients (Debian bookworm's docker.io 20.10)
# have BuildKit built in behind DOCKER_BUILDKIT=1.
pick_client() {
  local candidate major
  for candidate in $(command -v docker 2>/dev/null) /usr/bin/docker; do
    [ -x "$candidate" ] || continue
    if "$candidate" buildx version >/dev/null 2>&1; then
      DOCKER=$candidate
      return 0
    fi
    major=$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
    if [[ $major =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then
      DOCKER=$candidate
      return 0
    fi
  done
  return 1
}

start_engine() {
  command -v dockerd >/dev/null \
    || missing "dockerd (no Docker engine answers)" "$INSTALL: Debian's docker.io"
  can_be_root || skip "no Docker engine answers and starting dockerd needs root or passwordless sudo"
  mkdir -p "$ENGINE_DIR"
  : >"$ENGINE_DIR/dockerd.log"
  export DOCKER_HOST=$ENGINE_SOCKET
  local driver group=() deadline
  [ "$(id -u)" -eq 0 ] || group=(--group "$(id -g)")
  # overlay2 first; vfs (slow, but works on any filesystem) when overlay2 cannot be mounted.
  for driver in overlay2 vfs; do
    as_root setsid dockerd --iptables=false --bridge=none --storage-driver="$driver" \
      --pidfile "$ENGINE_DIR/dockerd.pid" "${group[@]}" >>"$ENGINE_DIR/dockerd.log" 2>&1 &
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
      engine_answers && return 0
      kill -0 $! 2>/dev/null || break
      sleep 0.5
    done
    stop_engine
    log "dockerd with --storage-driver=$driver did not start: $(tail -n1 "$ENGINE_DIR/dockerd.log")"
  done
  skip "the Docker engine did not start: $(tail -n1 "$ENGINE_DIR/dockerd.log")"
}

# Stops the engine a container test started (its pid file is ours); any other is left alone.
stop_engine() {
  local pid
  pid=$(cat "$ENGINE_DIR/dockerd.pid" 2>/dev/null) || return 0
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    as_root kill -TERM "$pid" || true
    for _ in $(seq 60); do
      [ -e "/proc/$pid" ] || break
      sleep 0.5
    done
    if [ -e "/proc/$pid" ]; then as_root kill -KILL "$pid"; fi
  fi
  as_root rm -f "$ENGINE_DIR/dockerd.pid"
}

# The Debian stand-in for python:3.11-slim, named after its recipe so a changed recipe rebuilds.
# mmdebstrap rather than debootstrap: it installs in one apt pass and writes the tarball itself,
# in about 60% of debootstrap's time here. Its merged-usr hook makes /usr merged without the
# usrmerge package (and the perl it pulls in), eatmydata skips dpkg's fsyncs. Like slim images
# it leaves out documentation (not the copyright files), man pages, locales, package lists and
# downloaded packages.
debian_base() {
  local recipe tag hooks=/usr/share/mmdebstrap/hooks
  recipe="mmdebstrap $DEBIAN_SUITE minbase merged-usr $DEBIAN_PACKAGES without docs"
  tag="stream-projector-test-base:$DEBIAN_SUITE-$(echo "$recipe" | sha256sum | cut -c1-12)"
  if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    BASE_IMAGE=$tag
    BASE_HOW="Debian base kept from an earlier run"
    return 0
  fi
  command -v mmdebstrap >/dev/null \
    || missing "mmdebstrap (the base image $PYTHON_IMAGE cannot be pulled)" "$INSTALL"
  can_be_root || skip "$PYTHON_IMAGE cannot be pulled and mmdebstrap needs root or passwordless sudo"
  if ! as_root mmdebstrap --quiet --mode=root --variant=minbase --include="$DEBIAN_PACKAGES" \
    --hook-dir="$hooks/merged-usr" --hook-dir="$hooks/eatmydata" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$DEBIAN_SUITE" "$STATE/rootfs.tar" "$DEBIAN_MIRROR" >"$STATE/mmdebstrap.log" 2>&1; then
    as_root rm -f "$STATE/rootfs.tar"
    skip "$PYTHON_IMAGE cannot be pulled and mmdebstrap from $DEBIAN_MIRROR failed: $(tail -n1 "$STATE/mmdebstrap.log")"
  fi
  "$DOCKER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.description=\"$recipe\"" \
    "$STATE/rootfs.tar" "$tag" >/dev/null
  as_root rm -f "$STATE/rootfs.tar"
  BASE_IMAGE=$tag
  BASE_HOW="mmdebstrap $DEBIAN_SUITE from $DEBIAN_MIRROR"
}

pick_base() {
  if "$DOCKER" image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
    BASE_IMAGE=$PYTHON_IMAGE
    BASE_HOW="present"
  elif timeout 300 "$DOCKER" pull -q "$PYTHON_IMAGE" >"$STATE/pull.log" 2>&1; then
    BASE_IMAGE=$PYTHON_IMAGE
    BASE_HOW="pulled"
  else
    log "$PYTHON_IMAGE cannot be pulled: $(tail -n1 "$STATE/pull.log")"
    debian_base
  fi
}

port_free() {
  "$PYTHON" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The project's dependencies as wheels for the base image's Python and platform, laid out as a
# PEP 503 simple index (one directory per project) that http.server's listings serve as is.
# Kept under $WHEELHOUSE_CACHE while pyproject.toml and the platform stay the same (delete the
# directory to take newer releases).
wheelhouse() {
  local target key wheels name platforms=()
  # e.g. "3.11 manylinux_2_36_x86_64 ... manylinux_2_5_x86_64": wheels must fit the image's
  # Python and C library, not the host's; pip takes each platform tag as given.
  target=$("$DOCKER" run --rm --network none "$BASE_IMAGE" python3 -c '
import os, sys, sysconfig
major, minor = map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])
arch = sysconfig.get_platform().split("-", 1)[1]
tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
tags += [f"manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")]
print(f"{sys.version_info[0]}.{sys.version_info[1]}", *tags)')
  for platform in ${target#* }; do platforms+=(--platform "$platform"); done
  WHEEL_TARGET="Python ${target%% *}, ${platforms[1]} and older"
  key=$({ cat "$ROOT/pyproject.toml"; echo "$target"; } | sha256sum | cut -c1-16)
  INDEX_DIR="$WHEELHOUSE_CACHE/$key"
  if [ -f "$INDEX_DIR/complete" ]; then
    WHEEL_HOW="kept from an earlier run"
    return 0
  fi
  wheels="$STATE/wheels"
  mkdir -p "$wheels" "$STATE/index/simple"
  if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$wheels" \
    --only-binary=:all: --implementation cp --python-version "${target%% *}" \
    "${platforms[@]}" "$ROOT[demo]" "setuptools>=68" wheel >"$STATE/pip.log" 2>&1; then
    skip "the host's pip could not download the image's dependencies: $(grep -m1 ERROR "$STATE/pip.log" || tail -n1 "$STATE/pip.log")"
  fi
  for wheel in "$wheels"/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    mkdir -p "$STATE/index/simple/$name"
    mv "$wheel" "$STATE/index/simple/$name/"
  done
  touch "$STATE/index/complete"
  # Only the current wheelhouse is kept.
  mkdir -p "$WHEELHOUSE_CACHE"
  find "$WHEELHOUSE_CACHE" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  mv "$STATE/index" "$INDEX_DIR"
  WHEEL_HOW="$(find "$INDEX_DIR/simple" -name '*.whl' | wc -l) wheels downloaded"
}

serve_wheelhouse() {
  local port=$WHEELHOUSE_PORT
  port_free "$port" || port=$(free_port)
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$INDEX_DIR" "$port" \
    >"$STATE/index.log" 2>&1 &
  INDEX_PID=$!
  trap 'kill "$INDEX_PID" 2>/dev/null || true' EXIT
  INDEX_URL="http://127.0.0.1:$port/simple/"
  for _ in $(seq 100); do
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "$INDEX_URL" 2>/dev/null && return 0
    sleep 0.1
  done
  log "the wheelhouse server did not answer: $(tail -n3 "$STATE/index.log")"
  exit 1
}

build() {
  local target=$1 tag=$2 started
  started=$(now)
  # --network host: the build's RUN steps reach the wheelhouse on 127.0.0.1 (and there is no
  # bridge network on an engine started here).
  if ! DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg PIP_INDEX_URL="$INDEX_URL" \
    --target "$target" --tag "$tag" "$ROOT" >"$STATE/build-$target.log" 2>&1; then
    tail -n 60 "$STATE/build-$target.log" >&2
    log "docker build --target $target failed (log above, whole log in $STATE/build-$target.log)"
    exit 1
  fi
  timed "build-$target" "$started" "$("$DOCKER" image inspect -f '{{.Size}}' "$tag") bytes"
}

prepare() {
  local started
  : >"$STATE/timings"
  rm -f "$STATE/skip" "$STATE/missing"
  started=$(now)
  if ! pick_client; then
    command -v docker >/dev/null || missing "docker" "$INSTALL: Debian's docker.io"
    missing "a docker client that builds with BuildKit" "install the buildx plugin"
  fi
  if engine_answers; then
    timed engine "$started" "answering"
  else
    start_engine
    timed engine "$started" "started dockerd"
  fi
  started=$(now)
  pick_base
  timed base "$started" "$BASE_IMAGE, $BASE_HOW"
  started=$(now)
  wheelhouse
  timed wheelhouse "$started" "$WHEEL_HOW, for $WHEEL_TARGET"
  serve_wheelhouse
  build runtime "$RUNTIME_IMAGE"
  build demo "$DEMO_IMAGE"
  {
    echo "DOCKER=$DOCKER"
    echo "DOCKER_HOST=${DOCKER_HOST:-}"
    echo "RUNTIME_IMAGE=$RUNTIME_IMAGE"
    echo "DEMO_IMAGE=$DEMO_IMAGE"
    echo "BASE_IMAGE=$BASE_IMAGE"
    echo "LABEL=$LABEL"
  } >"$STATE/env"
}

cleanup() {
  if [ -f "$STATE/env" ]; then
    DOCKER=$(sed -n 's/^DOCKER=//p' "$STATE/env")
    host=$(sed -n 's/^DOCKER_HOST=//p' "$STATE/env")
    [ -z "$host" ] || export DOCKER_HOST=$host
    containers=$("$DOCKER" ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    [ -z "$containers" ] || "$DOCKER" rm -f $containers >/dev/null
  fi
  stop_engine
  # mmdebstrap's tarball belongs to root when prepare stopped half-way.
  [ ! -e "$STATE/rootfs.tar" ] || as_root rm -f "$STATE/rootfs.tar"
}

[ $# -eq 2 ] || usage
STATE=$2
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
case $1 in
  prepare) prepare ;;
  cleanup) cleanup ;;
  *) usage ;;
esac
