#!/usr/bin/env bash
# Installs the system packages Gatehouse needs to build on a fresh Debian machine.
# Pingora's zlib-ng build needs cmake; nothing else is required for `cargo run` / `cargo test`.
set -euo pipefail
if ! command -v cmake >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi
