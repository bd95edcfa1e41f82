# Metrics: build, run and test the pipeline on one machine. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
GEN := gen
PROTOS := $(shell find protos -name '*.proto')
# googleapis-common-protos ships google/api and google/rpc .proto files in site-packages.
SITE := $(VENV)/lib/python3.11/site-packages
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z][a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@echo "==> Python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --frozen --quiet
	@# The services run from the checkout: put it and the generated code on the path.
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/$(GEN)" > $(SITE)/metrics-checkout.pth
	@touch $@

.PHONY: venv
venv: $(VENV)/.synced ## Create the Python environment from uv.lock

$(GEN)/.stamp: $(PROTOS) $(VENV)/.synced Makefile
	@echo "==> Generating code from protos/"
	@rm -rf $(GEN) && mkdir -p $(GEN)
	@$(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--python_out=$(GEN) --grpc_python_out=$(GEN) --mypy_out=quiet:$(GEN) --mypy_grpc_out=quiet:$(GEN) \
		$(patsubst protos/%,%,$(PROTOS))
	@# Envoy's descriptor set also needs google.rpc.BadRequest, or it drops error details.
	@$(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) \
		--include_imports --include_source_info --descriptor_set_out=$(GEN)/metrics.binpb \
		$(patsubst protos/%,%,$(PROTOS)) google/rpc/error_details.proto
	@touch $@

.PHONY: proto
proto: $(GEN)/.stamp ## Generate Python messages, stubs and Envoy's descriptor set into gen/

.PHONY: proto-lint
proto-lint: proto ## Lint protos/ with buf (STANDARD rules)
	@$(VENV)/bin/buf lint $(GEN)/metrics.binpb --path metrics --config buf.yaml

BASE ?= main
.PHONY: proto-breaking
proto-breaking: proto ## Check protos/ for wire or JSON breaking changes against BASE (default: main)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git archive --format=tar "$(BASE)" protos | tar -x -C "$$tmp" && \
	$(PY) -m grpc_tools.protoc -I"$$tmp/protos" -I$(SITE) --include_imports \
		--descriptor_set_out="$$tmp/base.binpb" $$(cd "$$tmp/protos" && find . -name '*.proto' | sed 's|^\./||') && \
	$(VENV)/bin/buf breaking $(GEN)/metrics.binpb --against "$$tmp/base.binpb" --path metrics --config buf.yaml && \
	echo "protos/ is wire and JSON compatible with $(BASE)"

.PHONY: run
run: proto ## Start the whole system locally (PostgreSQL, Redis, Kafka, Envoy, the services)
	@$(PY) -m stack up

.PHONY: stop
stop: ## Stop everything `make run` started
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "nothing to stop (no $(VENV))"; fi

.PHONY: status
status: ## Show each part of the local stack: state, PID, port, health
	@$(PY) -m stack status

.PHONY: logs
logs: ## Follow the logs of the local stack
	@$(PY) -m stack logs

.PHONY: test
test: run ## Run all tests against the local stack (starts it if needed)
	@$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: proto ## Run the tests that need no running servers
	@$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

.PHONY: test-live
test-live: proto ## Run the tests against the deployment in METRICS_TEST_TARGET (a TOML file)
	@test -n "$${METRICS_TEST_TARGET:-}" || { echo "set METRICS_TEST_TARGET to a target file, e.g. tests/targets/compose.toml"; exit 2; }
	@$(PY) -m pytest -m "not local_stack" $(PYTEST_ARGS)

.PHONY: lint
lint: proto ## ruff, mypy and buf lint
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@$(MAKE) proto-lint

.PHONY: fmt
fmt: venv ## Format the Python code
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

.PHONY: clean
clean: ## Remove generated code (keeps the environment and the stack's data)
	@rm -rf $(GEN)

.PHONY: distclean
distclean: stop ## Stop the stack and remove its data, the environment and generated code
	@rm -rf $(GEN) $(VENV) .stack
