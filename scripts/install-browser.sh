#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/test_web_page.py). Playwright's own
# browser download needs its CDN, which build machines here cannot reach, so the tests drive
# the distribution's build at /usr/bin/chromium instead.
#
# It never stops `make test`: where it cannot install (no root, no apt, no registry), it says
# so and the browser tests fail with that reason, while the rest of the suite still runs.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-browser: chromium is missing and installing it needs root; run: sudo apt-get install chromium" >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: chromium is missing and this is not a Debian-like system; install chromium by hand" >&2
  exit 0
fi

echo "install-browser: installing Debian's chromium for the browser tests"
if ! { "${SUDO[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null; }; then
  echo "install-browser: apt-get could not install chromium; the browser tests will fail" >&2
fi
exit 0
