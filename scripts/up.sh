#!/usr/bin/env bash
# `make up`: build, start the stack and wait until it is healthy, showing the trainer's lines meanwhile.
# `compose up --wait` alone says nothing for the minutes a first training takes; here its build steps print,
# and the trainer's log (one line per epoch) is followed until the trainer exits, then `up` is waited for.
# Usage: COMPOSE="docker compose ..." bash scripts/up.sh   (REPLICAS from the environment, as compose reads it)
set -uo pipefail
read -r -a compose <<< "${COMPOSE:-docker compose}"

"${compose[@]}" up --build -d --wait &
up=$!

# The trainer container exists once the images are built; follow its log from then until it exits.
until [ -n "$("${compose[@]}" ps -aq trainer 2>/dev/null)" ] || ! kill -0 "$up" 2>/dev/null; do
  sleep 1
done
if kill -0 "$up" 2>/dev/null; then
  echo "up: following the trainer's log until the server is healthy (make logs follows everything)"
  "${compose[@]}" logs -f --no-log-prefix trainer &
  follow=$!
fi

wait "$up"
status=$?
if [ -n "${follow:-}" ]; then
  kill "$follow" 2>/dev/null
  wait "$follow" 2>/dev/null
fi
exit "$status"
