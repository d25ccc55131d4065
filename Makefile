# The project's entry points. `make help` lists them.
# Every target uses the project virtual environment in .venv, creating it from the lock files if missing.
API ?= symbolic
LOOP ?= fit
EPOCHS ?= 5
DATA ?=
OUTPUT ?= runs
ARGS ?=

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target> [API=symbolic|imperative LOOP=fit|custom ...]\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

$(STAMP): requirements/runtime.lock requirements/dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/runtime.lock -r requirements/dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

.PHONY: install
install: $(STAMP) ## Create .venv and install the locked dependencies.

##@ Development

.PHONY: run
run: $(STAMP) ## Train locally: make run API=symbolic LOOP=fit EPOCHS=5 [DATA=path] [OUTPUT=runs].
	$(PY) -m job train --api $(API) --loop $(LOOP) --epochs $(EPOCHS) --output $(OUTPUT) $(if $(DATA),--data $(DATA)) $(ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff and mypy.
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting.
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

.PHONY: test
test: lint ## Lint, then the whole test suite.
	$(PY) -m pytest $(ARGS)

.PHONY: clean
clean: ## Remove caches (keeps .venv and runs/).
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
