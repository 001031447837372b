#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/system/test_web_page.py). Playwright's own
# browser download needs its CDN, which build machines here cannot reach, so the tests drive
# the distribution's build at /usr/bin/chromium instead. Never stops `make test` (see apt-tool.sh).
exec bash "$(dirname "$0")/apt-tool.sh" chromium chromium "the browser tests (tests/system/test_web_page.py)"
