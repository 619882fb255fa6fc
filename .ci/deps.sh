#!/usr/bin/env bash
# Installs the system packages Gatehouse needs on a fresh Debian machine:
# cmake (Pingora's zlib-ng build) to build and run, and nginx (the tests check
# the load benchmark's generated Nginx config with `nginx -t`).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
