#!/usr/bin/env bash
# Stand the dockercc stack up on this machine and run something on it.
#
#   bash scripts/stack.sh up      install + start what is missing (idempotent)
#   bash scripts/stack.sh demo    ... then run the offline demo
#   bash scripts/stack.sh test    ... then run the whole test suite
#
# Installs (when missing, as root, from Debian): docker.io, redis-server, debootstrap, docker-compose,
# chromium;
# the Claude Code CLI (npm, pinned) on the host for the host-side tests; the Python package
# with its dev extras. Starts dockerd (no default bridge traffic) unless an engine answers.
# Builds the agent image, cached by content hash. Set DOCKERCC_BASE_IMAGE to use a base image
# you have (default here: an offline Debian base built with debootstrap) and
# DOCKERCC_CA_BUNDLE for a TLS-intercepting proxy (default: the system bundle). The image
# records both (labels), so a plain `python3 -m pytest` or `dockercc image build` afterwards,
# without these variables, builds from the same inputs (a cache hit until the code changes).
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.328}"
PYTHON="${PYTHON:-python3}"
log() { printf '\033[1;34m[stack]\033[0m %s\n' "$*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || { log "run as root (or install $* yourself)"; exit 1; }; }

install_debian() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # the Sentinel fail-over tests (tests/test_sentinel.py, benchmarks.chaos --failover)
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the JupyterLab browser test
  # validates docker-compose.yml in the tests (the `docker compose` plugin does too)
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
    || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    need_root "${missing[*]}"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_claude() {
  if ! claude --version 2>/dev/null | grep -q "^${CLAUDE_CODE_VERSION} "; then
    log "npm install -g @anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"
    npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" >/dev/null
  fi
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  need_root dockerd
  log "starting dockerd (--bridge=none --iptables=false)"
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  log "dockerd did not come up:"; tail -20 /var/log/dockerd.log >&2; exit 1
}

install_python() {
  log "pip install -e .[dev]"
  "$PYTHON" -m pip install -q --disable-pip-version-check -e '.[dev]'
}

build_images() {
  if [ -z "${DOCKERCC_CA_BUNDLE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export DOCKERCC_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
  fi
  if [ -z "${DOCKERCC_BASE_IMAGE:-}" ]; then
    export DOCKERCC_BASE_IMAGE=dockercc/debian-base:bookworm
    "$PYTHON" -m dockercc.cli image base --tag "$DOCKERCC_BASE_IMAGE"
  fi
  "$PYTHON" -m dockercc.cli image build
}

up() {
  install_debian
  install_claude
  start_dockerd
  install_python
  build_images
}

cmd="${1:-up}"
shift || true
case "$cmd" in
  up) up ;;
  demo) up; exec "$PYTHON" -m dockercc.cli demo "$@" ;;
  test) up; exec "$PYTHON" -m pytest "$@" ;;
  *) echo "usage: $0 up|demo|test [args]" >&2; exit 2 ;;
esac
