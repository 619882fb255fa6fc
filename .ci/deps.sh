#!/usr/bin/env bash
# Installs the system packages Gatehouse needs on a fresh Debian machine.
#   bash .ci/deps.sh          to build and run: cmake (Pingora's zlib-ng build)
#   bash .ci/deps.sh --test   and to test: nginx (the load benchmark's generated
#                             Nginx config is checked with `nginx -t`), haproxy
#                             and curl (PROXY protocol tests), chromium (the CORS
#                             test runs a real browser headless), redis-server
#                             (shared rate limits), pebble (the ACME tests' CA,
#                             with pebble-challtestsrv)
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing+=("${2:-$1}"); }
need cmake
if [ "${1:-}" = "--test" ]; then
  need nginx
  need haproxy
  need curl
  need redis-server
  need pebble
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
