#!/usr/bin/env bash
# Installs the system packages Gatehouse needs on a fresh Debian machine:
# cmake (Pingora's zlib-ng build) to build and run; nginx (the tests check the
# load benchmark's generated Nginx config with `nginx -t`), haproxy and curl
# (the PROXY protocol tests send through them) to test.
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing+=("${2:-$1}"); }
need cmake
need nginx
need haproxy
need curl
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
