#!/usr/bin/env bash
# Installs a Debian package for a tool the tests need, when the tool is missing:
#   bash scripts/apt-tool.sh COMMAND PACKAGE "what needs it"
# Used for chromium (browser tests) and prometheus' promtool (the /metrics format check).
#
# It never stops `make test`: where it cannot install (no root, no apt, no registry), it says
# so and the tests that need the tool fail with that reason, while the rest of the suite still runs.
set -uo pipefail

command_name=$1
package=$2
purpose=$3

if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "apt-tool: $command_name is missing and installing it needs root; run: sudo apt-get install $package" >&2
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-tool: $command_name is missing and this is not a Debian-like system; install $package by hand" >&2
  exit 0
fi

echo "apt-tool: installing Debian's $package for $purpose"
install() {
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "$package" >/dev/null
}
# The package lists may be missing or stale on a fresh machine: update once, only when needed.
if ! install && ! { "${SUDO[@]}" apt-get update -qq && install; }; then
  echo "apt-tool: apt-get could not install $package; $purpose will fail" >&2
fi
exit 0
