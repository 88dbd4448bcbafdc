#!/usr/bin/env bash
# System packages the test suite needs beyond Python (headless Chromium for the book's browser check).
# Installs only what is missing; needs root (or sudo) and Debian's apt. Skipped with FACELAB_NO_APT=1.
set -euo pipefail
[ "${FACELAB_NO_APT:-0}" = 1 ] && exit 0
need=()
# Debian's chromium (the browser test runs it headless); a font so screenshots show text
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: missing ${need[*]} and no apt-get here; install them yourself (browser test and asset fetch need them)" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
