#!/usr/bin/env bash
# Installs Debian's prometheus package for its `promtool check metrics`, which tests/unit/test_metrics_format.py
# runs over the server's /metrics. Never stops `make test` (see apt-tool.sh).
exec bash "$(dirname "$0")/apt-tool.sh" promtool prometheus "the /metrics format check (tests/unit/test_metrics_format.py)"
