#!/usr/bin/env bash
# `make retrain WORKERS=N`: N trainer containers on the compose network train one model together
# (Keras DataParallel on the JAX backend, trainer/distributed.py). Compose gives replicas of one
# service no index, so each worker is its own `compose run` container with its process index and a
# container name the others resolve: `<job>-0` is process 0, the coordinator, which alone publishes.
# Usage: COMPOSE="docker compose ..." scripts/retrain-workers.sh N [trainer flags...]
set -euo pipefail

workers=$1
shift
compose=${COMPOSE:-docker compose}
job="mnist-train-$(date +%s)-$$"
port=7777
names=()

cleanup() {
    for name in "${names[@]}"; do docker rm -f "$name" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

for ((index = 0; index < workers; index++)); do
    name="$job-$index"
    # No --rm: `docker wait` must still find a worker that ended before its turn.
    $compose run -d --quiet-build --name "$name" \
        -e SKIP_IF_PUBLISHED=false -e KERAS_BACKEND=jax \
        -e KERAS_DISTRIBUTION_NUM_PROCESSES="$workers" -e KERAS_DISTRIBUTION_PROCESS_ID="$index" \
        -e KERAS_DISTRIBUTION_JOB_ADDRESSES="$job-0:$port" \
        trainer "$@" >/dev/null
    names+=("$name")
done
echo "retrain: $workers workers started ($job-0 .. $job-$((workers - 1))); following process 0"
docker logs -f "${names[0]}" &
follower=$!
status=0
for name in "${names[@]}"; do
    code=$(docker wait "$name")
    if [ "$code" != 0 ]; then
        echo "retrain: $name exited $code; its last lines:"
        docker logs --tail 20 "$name" 2>&1
        status=1
    elif [ "$name" != "${names[0]}" ]; then
        docker logs "$name" 2>&1 | grep -E "^trainer: process [0-9]+ of" || true  # its checksum: the same as process 0's
    fi
done
wait "$follower" || true
exit "$status"
