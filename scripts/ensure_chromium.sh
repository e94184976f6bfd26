#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright drives it; `playwright install`
# cannot download its own browser here). Installs it when root or sudo is available.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "chromium is not installed and cannot be installed without root; browser tests will skip (and fail under CI=1)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium >/dev/null
