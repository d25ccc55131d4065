# The project's entry points. `make help` lists them.
# Every target uses the project virtual environment in .venv, creating it from the lock files if missing.
API ?= symbolic
LOOP ?= fit
EPOCHS ?= 5
# The shared copy of CIFAR-10 when this checkout sits next to one (machines without internet); else Keras downloads it.
DATA ?= $(wildcard ../shared/data/cifar10/cifar-10-python.tar.gz)
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

# System packages the job uses beyond Python: Graphviz's `dot` draws the architecture diagram (plots/model.png).
SYSTEM_PACKAGES = graphviz
.PHONY: system-packages
system-packages: ## Install the system packages (Graphviz) with apt-get when missing and root; else say how.
	@if ! command -v dot >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "error: Graphviz's dot is missing (architecture diagrams, tests): sudo apt-get install $(SYSTEM_PACKAGES) (or brew install graphviz)" >&2; \
			exit 1; \
		fi; \
	fi

# uv (pinned in requirements/bootstrap.lock, installed with pip) installs the locks: it downloads in parallel.
# --native-tls: trust the system CA bundle, as pip does (package registries may sit behind a TLS proxy).
# --compile-bytecode: uv, unlike pip, writes no .pyc; where PYTHONDONTWRITEBYTECODE is set (these machines),
# every process would compile TensorFlow's sources again: `import tensorflow, keras` 8.0 s instead of 3.3 s.
UV = $(VENV)/bin/uv
UV_INSTALL = $(UV) pip install --quiet --native-tls --compile-bytecode
$(STAMP): requirements/bootstrap.lock requirements/runtime.lock requirements/dev.lock pyproject.toml | system-packages
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/bootstrap.lock
	$(UV_INSTALL) --python $(PY) -r requirements/runtime.lock -r requirements/dev.lock
	$(UV_INSTALL) --python $(PY) --no-deps -e .
	touch $@

.PHONY: install
install: system-packages $(STAMP) ## Install Graphviz if missing, create .venv and install the locked dependencies.

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

.PHONY: flag-table
flag-table: $(STAMP) ## Rewrite README.md's train flag table from the settings declared in job/config.py.
	$(PY) -m tests.test_readme_flags

.PHONY: test
# pytest on every core (xdist), slow tests first and handed out two at a time (xdist's default chunks would give
# one worker all the slow ones); expensive shared fixtures are built once for all workers (tests/conftest.py).
# The 15 slowest tests are listed at the end, so a CI log shows where the time goes.
PYTEST_WORKERS ?= auto
test: lint .venv-checkov/bin/checkov ## Lint, then the whole test suite (checkov has its own venv, see below).
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist load --maxschedchunk 2 --durations=15 $(ARGS)

.PHONY: clean
clean: ## Remove caches (keeps .venv and runs/).
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

COMPARE_FLAGS = --loop $(LOOP) --epochs $(EPOCHS) --output $(OUTPUT) --overwrite $(if $(DATA),--data $(DATA)) $(ARGS)
.PHONY: compare
compare: $(STAMP) ## Train symbolic and imperative on the same data and seed, then compare: make compare [LOOP= EPOCHS= DATA=].
	$(PY) -m job train --api symbolic --run-id compare-symbolic-$(LOOP) $(COMPARE_FLAGS)
	$(PY) -m job train --api imperative --run-id compare-imperative-$(LOOP) $(COMPARE_FLAGS)
	$(PY) -m job compare $(OUTPUT)/compare-symbolic-$(LOOP) $(OUTPUT)/compare-imperative-$(LOOP) --output $(OUTPUT)/comparison

.PHONY: bench
bench: $(STAMP) ## Our trainer vs the chapter's code, side by side (not part of test): make bench [EPOCHS=5] [ARGS="--repeats 2"].
	$(PY) bench/benchmark.py --epochs $(EPOCHS) $(ARGS)

##@ Containers and Kubernetes
# Empty IMAGE/BUCKET/NAMESPACE mean: use the values in k8s/base/kustomization.yaml (the one place to edit).
IMAGE ?=
BUCKET ?=
NAMESPACE ?=
RUN ?=
FOLLOW ?=
TAIL ?=
PREVIOUS ?=
OVERLAY ?=
WORKERS ?=
LRS ?=
BATCH_SIZES ?=
MOMENTUMS ?=
ADC ?= $(HOME)/.config/gcloud/application_default_credentials.json
# GPU=0: run the image on the CPU (no --gpus all, no --require-gpu), as `make image-test` does.
GPU ?= 1
# The official GPU base by default; `make image-test` builds on a local CPU stand-in (image/standin/).
BASE_IMAGE ?=
# Extra `docker run` / `docker build` flags, e.g. DOCKER_ARGS="--network host -e STORAGE_EMULATOR_HOST=..."
# or DOCKER_BUILD_ARGS="--network host" (engines without a bridge network, such as our CI's).
DOCKER_ARGS ?=
DOCKER_BUILD_ARGS ?=
# The container's uid:gid: the caller's by default, so files in a host OUTPUT folder belong to the caller.
DOCKER_USER ?= $$(id -u):$$(id -g)
# A docker client that builds with BuildKit, talking to a running engine (image/docker-client).
DOCKER ?= $(shell image/docker-client || echo false)
# Provenance baked into the image (OCI labels, JOB_VERSION/JOB_GIT_COMMIT, config.json, --version).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
GIT_COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_URL ?= $(shell git remote get-url origin 2>/dev/null)
IMAGE_NAME = cifar10-job
# docker-build tags IMAGE, or cifar10-job:<git describe> plus cifar10-job:latest, which docker-run uses.
LOCAL_IMAGE = $(or $(IMAGE),$(IMAGE_NAME):latest)
KUBE_FLAGS = $(if $(NAMESPACE),--namespace $(NAMESPACE))
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
is_gcs = $(filter gs://%,$(1))
# docker-run: read-only root with a tmpfs scratch, the caller's uid (so a host folder stays writable),
# a local OUTPUT/DATA mounted (DATA read-only), and Application Default Credentials mounted read-only if present.
DOCKER_RUN_FLAGS = --rm $(if $(filter 1,$(GPU)),--gpus all) --read-only --tmpfs /scratch --user $(DOCKER_USER) \
	$(if $(call is_gcs,$(OUTPUT)),,-v $(abspath $(OUTPUT)):/output) \
	$(if $(DATA),$(if $(call is_gcs,$(DATA)),,-v $(abspath $(DATA)):/data/$(notdir $(DATA)):ro)) \
	$(if $(wildcard $(ADC)),-v $(ADC):/secrets/adc.json:ro -e GOOGLE_APPLICATION_CREDENTIALS=/secrets/adc.json) \
	$(DOCKER_ARGS)
DOCKER_TRAIN_ARGS = train --api $(API) --loop $(LOOP) --epochs $(EPOCHS) $(if $(filter 1,$(GPU)),--require-gpu) \
	--output $(if $(call is_gcs,$(OUTPUT)),$(OUTPUT),/output) \
	$(if $(DATA),--data $(if $(call is_gcs,$(DATA)),$(DATA),/data/$(notdir $(DATA)))) $(ARGS)

.PHONY: docker-build
docker-build: ## Build the GPU image: make docker-build [IMAGE=REGISTRY/cifar10-job:TAG BASE_IMAGE=...].
	DOCKER_BUILDKIT=1 $(DOCKER) build $(DOCKER_BUILD_ARGS) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		--build-arg VERSION=$(VERSION) --build-arg GIT_COMMIT=$(GIT_COMMIT) --build-arg SOURCE_URL=$(SOURCE_URL) \
		--tag $(or $(IMAGE),$(IMAGE_NAME):$(VERSION)) $(if $(IMAGE),,--tag $(IMAGE_NAME):latest) .

.PHONY: docker-run
docker-run: ## Train in the image on this machine's GPU: make docker-run API=symbolic [LOOP= EPOCHS= OUTPUT=dir|gs://... DATA= GPU=0].
	$(if $(call is_gcs,$(OUTPUT)),,mkdir -p $(OUTPUT))
	$(DOCKER) run $(DOCKER_RUN_FLAGS) $(LOCAL_IMAGE) $(DOCKER_TRAIN_ARGS)

.PHONY: image-test
image-test: $(STAMP) ## Build the image on a CPU stand-in base and run it for real with docker (needs a Docker engine; root installs one).
	$(PY) -m pytest image/tests $(ARGS)

.PHONY: push
push: ## Push the image: make push IMAGE=REGISTRY/cifar10-job:TAG (after make docker-build IMAGE=...).
	@test -n "$(IMAGE)" || { echo "error: set IMAGE=REGISTRY/cifar10-job:TAG" >&2; exit 2; }
	$(DOCKER) push $(IMAGE)

.PHONY: k8s-render
k8s-render: $(STAMP) ## Print the manifests kubectl apply -k would apply: make k8s-render [OVERLAY=symbolic|imperative|custom-loop|multiworker|sweep].
	$(VENV)/bin/kubectl kustomize k8s/overlays/$(or $(OVERLAY),$(API))

.PHONY: k8s-setup
k8s-setup: $(STAMP) ## Once per cluster: the namespace, the pods' ServiceAccount and NetworkPolicy (no training run): make k8s-setup [NAMESPACE=].
	$(PY) -m job setup $(KUBE_FLAGS)

.PHONY: submit
submit: $(STAMP) ## Run as a Kubernetes Job: make submit API=symbolic [LOOP= EPOCHS= WORKERS=2 IMAGE= BUCKET= NAMESPACE= FOLLOW=1].
	$(PY) -m job submit --api $(API) --loop $(LOOP) --epochs $(EPOCHS) $(if $(OVERLAY),--overlay $(OVERLAY)) \
		$(if $(WORKERS),--workers $(WORKERS)) \
		$(if $(IMAGE),--image $(IMAGE)) $(if $(BUCKET),--bucket $(BUCKET)) $(KUBE_FLAGS) $(if $(FOLLOW),--follow)

.PHONY: sweep
sweep: $(STAMP) ## Train a grid as one Indexed Job: make sweep API=symbolic LRS=0.1,0.05,0.01 [BATCH_SIZES=200,100 EPOCHS= IMAGE= BUCKET=].
	$(PY) -m job sweep --api $(API) --loop $(LOOP) --epochs $(EPOCHS) $(if $(LRS),--learning-rate $(LRS)) \
		$(if $(BATCH_SIZES),--batch-size $(BATCH_SIZES)) $(if $(MOMENTUMS),--momentum $(MOMENTUMS)) \
		$(if $(IMAGE),--image $(IMAGE)) $(if $(BUCKET),--bucket $(BUCKET)) $(KUBE_FLAGS)

.PHONY: status
status: $(STAMP) ## Show the runs' Jobs: make status [RUN=run-id] [NAMESPACE=].
	$(PY) -m job status $(RUN) $(KUBE_FLAGS)

.PHONY: logs
logs: $(STAMP) ## Print a run's pod logs: make logs RUN=run-id [FOLLOW=1] [TAIL=N] [PREVIOUS=1] [NAMESPACE=].
	$(PY) -m job logs $(RUN) $(KUBE_FLAGS) $(if $(FOLLOW),--follow) $(if $(TAIL),--tail $(TAIL)) $(if $(PREVIOUS),--previous)

.PHONY: delete
delete: $(STAMP) ## Delete a run's Job, pods and multi-worker Service (the run folder stays): make delete RUN=run-id [NAMESPACE=].
	$(PY) -m job delete $(RUN) $(KUBE_FLAGS)

# checkov in its own venv: its packaging pin conflicts with the runtime lock (`make test` builds it).
$(CHECKOV): requirements/checkov.lock $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv --without-pip $(CHECKOV_VENV)
	$(UV_INSTALL) --python $(CHECKOV_VENV)/bin/python -r requirements/checkov.lock
	touch $@
