#!/usr/bin/env bash
# Installs the real servers the tests start: PostgreSQL and Prometheus (Debian packages),
# kinesis-local (npm), and the Docker engine and mmdebstrap for tests/container (Debian). Each
# step is skipped when its binary is already there, so a warm machine pays nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need_apt+=(prometheus)
# tests/container: Debian's docker.io when no Docker engine answers and none is installed, and
# mmdebstrap, which makes the base image when the registry's python image cannot be pulled.
if command -v apt-get >/dev/null; then
  docker info >/dev/null 2>&1 || command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get update -qq
  # --no-install-recommends keeps prometheus from pulling its exporters and web assets.
  $sudo_ apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start system services; the tests start their own servers.
  $sudo_ service postgresql stop >/dev/null 2>&1 || true
  $sudo_ service prometheus stop >/dev/null 2>&1 || true
  # tests/container starts dockerd itself, without a bridge or iptables rules, and stops it.
  $sudo_ service docker stop >/dev/null 2>&1 || true
fi

# One npm call for every tool: npm install into a prefix without a package.json prunes what an
# earlier call installed there.
npm_tools=(kinesis-local@0.6.2 dclint@3.1.0 @kubernetes-models/prometheus-operator@6.0.0
  @cdktf/hcl-tools@0.21.0)
if [ ! -f .tools/node_modules/kinesis-local/main.js ] \
  || [ ! -d .tools/node_modules/dclint ] \
  || [ ! -d .tools/node_modules/@kubernetes-models/prometheus-operator ] \
  || [ ! -d .tools/node_modules/@cdktf/hcl-tools ]; then
  echo "installing npm tools: ${npm_tools[*]}"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "${npm_tools[@]}" >/dev/null
fi
