#!/usr/bin/env bash
# System packages the test suite needs beyond npm: Debian's Chromium for the studio's page tests
# (test/web/studio-browser.test.ts drives it with playwright-core; no browser is downloaded).
# Installs only what is missing; needs root (CI runs as root).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version
