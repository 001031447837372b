# Train a Keras MNIST model in one container, serve it from another. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVER_VENV := .venv-server
SERVER_BIN := $(SERVER_VENV)/bin
LOCAL_HOME := var
# The compose command the Docker targets use; the end-to-end test passes its own project and files:
#   make retrain COMPOSE="docker compose -p mnist-e2e-x -f docker-compose.yml -f docker-compose.test.yml"
COMPOSE ?= docker compose
# `make up REPLICAS=3`: server replicas behind the proxy (docker-compose.yml reads it as the scale).
REPLICAS ?= 1
# `make retrain WORKERS=2`: that many trainer containers train one model together (JAX backend,
# scripts/retrain-workers.sh); 1 = the usual single trainer.
WORKERS ?= 1
# `make train GPU=1` / `make retrain GPU=1`: train on the host's GPU with the JAX backend
# (docker-compose.gpu.yml; docs/gpu.md).
GPU_FILES = $(if $(filter 1 true yes,$(GPU)),-f docker-compose.yml -f docker-compose.gpu.yml)
# `make train-local EPOCHS=2` / `make retrain EPOCHS=2 MODEL_RECIPE=improved`: flags for the training CLI
# (flags, so they reach the containers of `GPU=1` and `WORKERS=N` alike).
TRAIN_FLAGS = $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MODEL_RECIPE),--recipe $(MODEL_RECIPE))
# Store maintenance runs in the trainer image (it mounts the volume read-write) without TensorFlow.
MANAGE = $(COMPOSE) run --rm --quiet-build --entrypoint python trainer -m trainer.manage
# What the running server container says it serves (python urllib: the slim image has no curl).
SERVED = import json, os, urllib.request as u; \
	r = u.Request("http://127.0.0.1:8000/models", headers={"Authorization": "Bearer " + os.environ.get("AUTH_TOKEN", "")}); \
	print("served by the running server: version", json.load(u.urlopen(r, timeout=5))["served_version"])

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/*.txt
	@echo "venv: installing requirements/dev.txt into $(VENV) (TensorFlow, JAX, ONNX Runtime and the test tools:" \
		"about 3 GB, several minutes on a first run; pip prints each package)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements/dev.txt
	touch $@

# The server alone (no TensorFlow, no JAX): what `make serve-local` needs, like the server image.
$(SERVER_BIN)/.installed: requirements/server.txt
	@echo "serve-local: installing requirements/server.txt into $(SERVER_VENV) (ONNX Runtime, Flask, gunicorn:" \
		"about 300 MB, a minute or two on a first run)"
	$(PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_BIN)/pip install --quiet --upgrade pip
	$(SERVER_BIN)/pip install -r requirements/server.txt
	touch $@

venv: $(BIN)/.installed ## Create .venv with the pinned dependencies

browser: ## Install Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium)
	bash scripts/install-browser.sh

promtool: ## Install Debian's prometheus package for `promtool check metrics` (the /metrics format test)
	bash scripts/install-promtool.sh

test: $(BIN)/.installed browser promtool ## Run the whole test suite (installs what it needs first)
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed promtool ## tests/unit only: in-process (codecs, data plane, routes; no training, no processes)
	$(BIN)/python -m pytest tests/unit

soak: $(BIN)/.installed ## 60 s of prediction load through a publish, hot reload and rollback; 10,000 requests' memory
	SOAK_SECONDS=60 SOAK_REQUESTS=10000 $(BIN)/python -m pytest -s tests/integration/soak

lint: $(BIN)/.installed ## ruff over the code, hadolint over the Dockerfile, `docker compose config`
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/docker-compose -f docker-compose.yml -f docker-compose.test.yml config --quiet

train-local: $(BIN)/.installed ## Train and publish a model into ./var without Docker
	MNIST_HOME=$(LOCAL_HOME) $(BIN)/python -m trainer $(TRAIN_FLAGS)

serve-local: $(SERVER_BIN)/.installed ## Serve ./var with gunicorn on BIND_HOST:PORT (default 0.0.0.0:8000) without Docker
	@echo "serve-local: listening on $${BIND_HOST:-0.0.0.0}:$${PORT:-8000} (all interfaces unless BIND_HOST is set);" \
		"try http://127.0.0.1:$${PORT:-8000}/readyz"
	MNIST_HOME=$(LOCAL_HOME) $(SERVER_BIN)/python -m gunicorn -c server/gunicorn.conf.py server.wsgi:app

up: ## Build, train once on an empty volume, start REPLICAS servers (default 1) behind the proxy; returns when healthy
	REPLICAS=$(REPLICAS) COMPOSE="$(COMPOSE)" bash scripts/up.sh
	@echo "serving on http://127.0.0.1:$${PORT:-8000} through HAProxy, $(REPLICAS) server replica(s) (make logs, make status)"
	@echo "proxy stats: http://127.0.0.1:$${PROXY_STATS_PORT:-8404}/stats, Prometheus: http://127.0.0.1:$${PROXY_STATS_PORT:-8404}/metrics"

down: ## Stop and remove the containers and network (the model volume is kept)
	$(COMPOSE) down --remove-orphans

logs: ## Follow the trainer's and the server's logs
	$(COMPOSE) logs -f --tail=100

train: ## Train in the trainer container, only if the volume holds no model yet (GPU=1: on the GPU)
	$(COMPOSE) $(GPU_FILES) run --rm trainer $(TRAIN_FLAGS)

retrain: ## Publish a new model version now (EPOCHS=N, MODEL_RECIPE=improved, GPU=1, WORKERS=N); the running server hot-reloads it
ifeq ($(WORKERS),1)
	$(COMPOSE) $(GPU_FILES) run --rm -e SKIP_IF_PUBLISHED=false trainer $(TRAIN_FLAGS)
else
	COMPOSE="$(COMPOSE) $(GPU_FILES)" bash scripts/retrain-workers.sh $(WORKERS) $(TRAIN_FLAGS)
endif

rollback: ## Retire the newest version; the server goes back to the previous one
	$(MANAGE) rollback

status: ## List the model versions in the volume and the one the server is serving
	$(MANAGE) status
	@replicas=$$($(COMPOSE) ps -q server | wc -l); [ "$$replicas" -gt 0 ] || { echo "the server is not running (make up)"; exit 0; }; \
	for index in $$(seq 1 $$replicas); do \
		printf 'replica %s: ' $$index; $(COMPOSE) exec -T --index $$index server python -c '$(SERVED)' || echo "not answering"; \
	done

BENCH_EPOCHS ?= 1

# The load generators come from Debian's packages (wrk for HTTP; h2load, in nghttp2-client, for gRPC), installed
# here when missing so a run needs no one.
need = @command -v $(1) >/dev/null || apt-get install -y -qq $(2) || { apt-get update -qq && apt-get install -y -qq $(2); }

bench: $(BIN)/.installed ## Training, inference and HTTP benchmarks into bench/results.md (BENCH_EPOCHS=6 BENCH_ROUNDS=3: full run)
	$(call need,wrk,wrk)
	$(BIN)/python -m bench.run --epochs $(BENCH_EPOCHS)
	$(BIN)/python -m bench.headline

# Not in CI: installs each peer (KServe, PyTriton, ...) from PyPI into bench/results/tmp/peers/ on its first run.
bench-peers: $(BIN)/.installed ## Ours against KServe, PyTriton, ... on the same model and bodies, our A c16 5 times, then the model-only ceiling (after make bench; BENCH_SECONDS, BENCH_ROUNDS, BENCH_PEERS)
	$(call need,wrk,wrk)
	$(call need,h2load,nghttp2-client)
	$(BIN)/python -m bench.run --only peers,stability,floor,grpc
	$(BIN)/python -m bench.headline

.PHONY: bench bench-peers soak
.PHONY: help venv browser promtool test test-fast lint train-local serve-local up down logs train retrain rollback status
