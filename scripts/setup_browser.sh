#!/usr/bin/env bash
# Install Debian's headless Chromium + ChromeDriver for the browser tests (tests/test_browser.py).
# Idempotent and quiet: does nothing when /usr/bin/chromium already runs. Never downloads a
# browser of its own (no playwright/puppeteer installs); only apt-get's `chromium` package.
# Usage: bash scripts/setup_browser.sh   (root, or sudo available)
set -euo pipefail
CHROMIUM=${RMFLOW_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: apt-get not found; install Chromium yourself (browser tests will skip)" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else
    echo "setup_browser: not root and no sudo; run as root: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
"$CHROMIUM" --version >&2
