# Train a Keras MNIST model in one container, serve it from another. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCAL_HOME := var

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/*.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

venv: $(BIN)/.installed ## Create .venv with the pinned dependencies

browser: ## Install Debian's chromium for the browser tests (Playwright drives /usr/bin/chromium)
	bash scripts/install-browser.sh

test: $(BIN)/.installed browser ## Run the whole test suite (installs what it needs first)
	$(BIN)/python -m pytest

lint: $(BIN)/.installed ## ruff over the code
	$(BIN)/ruff check .

train-local: $(BIN)/.installed ## Train and publish a model into ./var without Docker
	MNIST_HOME=$(LOCAL_HOME) $(BIN)/python -m trainer $(if $(EPOCHS),--epochs $(EPOCHS))

serve-local: $(BIN)/.installed ## Serve ./var with gunicorn on http://127.0.0.1:8000 without Docker
	MNIST_HOME=$(LOCAL_HOME) $(BIN)/python -m gunicorn -c server/gunicorn.conf.py server.wsgi:app

.PHONY: help venv browser test lint train-local serve-local
