#!/usr/bin/env bash
# Installs the system packages Gatehouse needs on a fresh Debian machine:
# cmake (Pingora's zlib-ng build) to build and run, nginx (the tests check
# the load benchmark's generated Nginx config with `nginx -t`), and chromium
# (the CORS test runs a real browser headless: tests/it/cors_browser.rs).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
