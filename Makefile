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

$(GEN)/.stamp: $(PROTOS) $(VENV)/.synced Makefile $(wildcard openapi/*.py)
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
	@# The HTTP/JSON API's OpenAPI document, from the google.api.http routes (openapi/).
	@$(PY) -m openapi $(GEN)/metrics.binpb --package metrics.v1 --out $(GEN)/openapi.yaml
	@touch $@

.PHONY: proto
proto: $(GEN)/.stamp ## Generate Python messages, stubs, Envoy's descriptor set and the OpenAPI document into gen/

.PHONY: proto-lint
proto-lint: proto ## Lint protos/: buf (STANDARD and COMMENTS rules), then the AIP rules buf lacks (aiplint/)
	@$(VENV)/bin/buf lint $(GEN)/metrics.binpb --path metrics --config buf.yaml
	@$(PY) -m aiplint $(GEN)/metrics.binpb --package metrics.v1

BASE ?= main
.PHONY: proto-breaking
proto-breaking: proto ## Check protos/ for wire or JSON breaking changes against BASE (default: main)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	git archive --format=tar "$(BASE)" protos | tar -x -C "$$tmp" && \
	$(PY) -m grpc_tools.protoc -I"$$tmp/protos" -I$(SITE) --include_imports \
		--descriptor_set_out="$$tmp/base.binpb" $$(cd "$$tmp/protos" && find . -name '*.proto' | sed 's|^\./||') && \
	$(VENV)/bin/buf breaking $(GEN)/metrics.binpb --against "$$tmp/base.binpb" --path metrics --config buf.yaml && \
	echo "protos/ is wire and JSON compatible with $(BASE)"

# Example clients in Go, TypeScript (Node) and Java, generated from protos/ (see clients/*/README.md).
# Versions are pinned by each language's own files: clients/go/go.mod (also the protoc plugins, as
# `tool` lines), clients/typescript/package-lock.json, clients/java/pom.xml.
GO_CLIENT := clients/go
TS_CLIENT := clients/typescript
JAVA_CLIENT := clients/java
PROTO_FILES := $(sort $(patsubst protos/%,%,$(PROTOS)))
# Every file's go_package is metrics/clients/go/gen/metrics/v1, a package of the client module:
# module= writes it to $(GO_CLIENT)/gen/metrics/v1 (and fails if a go_package leaves the module).
GO_MODULE := $(shell sed -n 's/^module //p' $(GO_CLIENT)/go.mod)
# protoc-gen-es also needs the non-well-known imports generated.
TS_PROTO_IMPORTS := google/api/annotations.proto google/api/field_behavior.proto google/api/http.proto \
	google/api/httpbody.proto \
	google/rpc/status.proto

.PHONY: clients-toolchains
clients-toolchains:
	@missing=""; for tool in go node npm java mvn; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then echo "make clients needs Go 1.26+, Node.js 20+ with npm, a JDK 17+ and Maven 3.8+; missing:$$missing"; exit 1; fi

$(GO_CLIENT)/bin/.tools: $(GO_CLIENT)/go.mod $(GO_CLIENT)/go.sum | clients-toolchains
	@echo "==> Go: protoc-gen-go, protoc-gen-go-grpc ($(GO_CLIENT)/bin)"
	@cd $(GO_CLIENT) && GOBIN=$(CURDIR)/$(GO_CLIENT)/bin go install tool
	@touch $@

$(GO_CLIENT)/gen/.stamp: $(PROTOS) $(GO_CLIENT)/bin/.tools $(VENV)/.synced
	@echo "==> Go: generating code from protos/ ($(GO_CLIENT)/gen)"
	@rm -rf $(GO_CLIENT)/gen && mkdir -p $(GO_CLIENT)/gen
	@$(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) \
		--plugin=protoc-gen-go=$(GO_CLIENT)/bin/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(GO_CLIENT)/bin/protoc-gen-go-grpc \
		--go_out=$(GO_CLIENT) --go_opt=module=$(GO_MODULE) \
		--go-grpc_out=$(GO_CLIENT) --go-grpc_opt=module=$(GO_MODULE) \
		$(PROTO_FILES)
	@touch $@

$(GO_CLIENT)/bin/.built: $(GO_CLIENT)/gen/.stamp $(shell find $(GO_CLIENT)/cmd $(GO_CLIENT)/internal -name '*.go' 2>/dev/null)
	@echo "==> Go: building $(GO_CLIENT)/bin/metrics-client, events-consumer and fleet-load"
	@cd $(GO_CLIENT) && go vet ./... && go build -o bin/ ./cmd/...
	@touch $@

$(TS_CLIENT)/node_modules/.stamp: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json | clients-toolchains
	@echo "==> TypeScript: npm ci ($(TS_CLIENT)/node_modules)"
	@cd $(TS_CLIENT) && npm ci --engine-strict --no-audit --no-fund --loglevel=error
	@touch $@

$(TS_CLIENT)/src/gen/.stamp: $(PROTOS) $(TS_CLIENT)/node_modules/.stamp $(VENV)/.synced
	@echo "==> TypeScript: generating code from protos/ ($(TS_CLIENT)/src/gen)"
	@rm -rf $(TS_CLIENT)/src/gen && mkdir -p $(TS_CLIENT)/src/gen
	@$(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) \
		--plugin=protoc-gen-es=$(TS_CLIENT)/node_modules/.bin/protoc-gen-es \
		--es_out=$(TS_CLIENT)/src/gen --es_opt=target=ts,import_extension=js \
		$(PROTO_FILES) $(TS_PROTO_IMPORTS)
	@touch $@

$(TS_CLIENT)/dist/.stamp: $(TS_CLIENT)/src/gen/.stamp $(TS_CLIENT)/tsconfig.json $(wildcard $(TS_CLIENT)/src/*.ts)
	@echo "==> TypeScript: compiling ($(TS_CLIENT)/dist)"
	@rm -rf $(TS_CLIENT)/dist
	@cd $(TS_CLIENT) && node_modules/.bin/tsc -p tsconfig.json
	@touch $@

$(JAVA_CLIENT)/target/metrics-client.jar: $(PROTOS) $(JAVA_CLIENT)/pom.xml $(shell find $(JAVA_CLIENT)/src -name '*.java' 2>/dev/null) | clients-toolchains
	@echo "==> Java: generating code from protos/ and building $@"
	@# Maven 3.8 prints stray colour resets even when quiet and colourless: drop them.
	@cd $(JAVA_CLIENT) && mvn --batch-mode --quiet -Dstyle.color=never package 2>&1 | sed 's/\x1b\[0m//g'
	@touch $@

.PHONY: clients
clients: $(GO_CLIENT)/bin/.built $(TS_CLIENT)/dist/.stamp $(JAVA_CLIENT)/target/metrics-client.jar ## Generate and build the Go, TypeScript and Java example clients

.PHONY: run
run: proto ## Start the whole system locally (PostgreSQL, Redis, Kafka, Envoy, the services)
	@$(PY) -m stack up

.PHONY: run-cluster
run-cluster: proto ## Start the cluster topology: 3 Kafka brokers, a Redis Cluster (3 masters, 3 replicas), a PostgreSQL replica, two of each service
	@METRICS_TOPOLOGY=cluster $(PY) -m stack up

.PHONY: stop
stop: ## Stop everything `make run` or `make run-cluster` started
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "nothing to stop (no $(VENV))"; fi

.PHONY: upgrade
upgrade: proto ## Restart the running stack's services one instance at a time on this checkout's code, each drained first (ARGS=--all: all)
	@$(PY) -m stack upgrade $(ARGS)

.PHONY: status
status: ## Show each part of the local stack: state, PID, port, health
	@$(PY) -m stack status

.PHONY: backup
backup: venv ## Back up the local stack's PostgreSQL with pgBackRest (ARGS=--incremental); WAL is archived all the time
	@$(PY) -m stack.backup backup $(ARGS)

.PHONY: restore
restore: venv ## Restore PostgreSQL to a point in time and replay Kafka from it (ARGS="--to '2026-12-04 17:00:00+00'")
	@$(PY) -m stack.backup restore $(ARGS)

.PHONY: token
token: venv ## Mint a bearer token for the TLS port (ARGS="--scope ingest --sensors plant-7- --ttl 3600")
	@$(PY) -m stack.tokens $(ARGS)

.PHONY: devices
devices: venv ## Register a fleet from a CSV file, a token each (ARGS="import fleet.csv --tokens fleet-tokens --ttl 30d")
	@$(PY) -m stack.devices $(ARGS)

.PHONY: device-cert
device-cert: venv ## Make a device's client certificate for the TLS port (ARGS="--sensors plant-7- --out plant-7")
	@$(PY) -m stack.certs $(ARGS)

.PHONY: device-credentials
device-credentials: venv ## An MQTT account for a device, publishing under its sensors only (ARGS="--sensors plant-7-")
	@$(PY) -m stack.mqtt_devices $(ARGS)

.PHONY: compose-secrets
compose-secrets: venv ## Make the secrets docker-compose.yml mounts (deploy/compose/secrets), once
	@$(PY) -m stack.compose_secrets

.PHONY: shell-env
shell-env: ## Print export lines for psql, redis-cli and kcat into the local stack: eval "$$(make -s shell-env)"
	@$(PY) -m stack shell-env

.PHONY: logs
logs: ## Follow the logs of the local stack
	@$(PY) -m stack logs

# The test suite and the benchmark write a few GB: ask `make run` (a prerequisite) for that much room.
test test-cluster test-faults test-network bench bench-short soak: export METRICS_MIN_FREE_MB ?= 6144

.PHONY: test
test: run ## Run all tests against the local stack (starts it if needed): two phases, tests/__main__.py
	@# Real clients the tests drive (Chromium, vmagent, Telegraf): installed here, not within a test's
	@# time limit.
	@$(PY) -m stack test-clients
	@$(PY) -m tests $(PYTEST_ARGS)

# The same ports as `make run`: stop the single-node stack first (make stop).
.PHONY: test-cluster
test-cluster: export METRICS_TOPOLOGY := cluster
test-cluster: export METRICS_TEST_TARGET := tests/targets/cluster.toml
test-cluster: run-cluster ## Run the cluster topology's fault tests (starts make run-cluster; make stop the single node first)
	@$(PY) -m pytest -m cluster tests/integration/test_cluster.py $(PYTEST_ARGS)

.PHONY: test-faults
test-faults: run ## Run the fault tests: kill -9 of every part, stalls, rebalances, crash points, outages, poison records
	@$(PY) -m pytest tests/integration/test_faults.py tests/integration/test_outages.py \
		tests/integration/test_crash_points.py tests/integration/test_kill_midstream.py \
		tests/integration/test_poison.py tests/integration/test_query_errors.py $(PYTEST_ARGS)

.PHONY: test-network
test-network: run ## Run the sick-network tests: Toxiproxy's latency, resets and cuts between the services and Kafka, Redis, PostgreSQL
	@$(PY) -m stack toxiproxy >/dev/null
	@$(PY) -m pytest -m network tests/integration/test_network.py $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: proto ## Run the tests that need no running servers (two processes)
	@$(PY) -m pytest -m "not integration" -n 2 $(PYTEST_ARGS)

.PHONY: test-live
test-live: proto ## Run the tests against the deployment in METRICS_TEST_TARGET (a TOML file)
	@test -n "$${METRICS_TEST_TARGET:-}" || { echo "set METRICS_TEST_TARGET to a target file, e.g. tests/targets/compose.toml"; exit 2; }
	@$(PY) -m pytest -m "not local_stack" $(PYTEST_ARGS)

# The fleet section drives the stack with the Go load generator clients/go/bin/fleet-load.
.PHONY: bench
bench: run $(GO_CLIENT)/bin/.built ## Benchmark the local stack: a table, and bench/results/latest.json (BENCH_ARGS=--short)
	@$(PY) -m bench $(BENCH_ARGS)

.PHONY: soak
soak: run $(GO_CLIENT)/bin/.built ## Mixed load at half the measured capacity for hours, and a verdict (ARGS="--hours 1")
	@$(PY) -m bench.soak $(ARGS)

.PHONY: bench-short
bench-short: run $(GO_CLIENT)/bin/.built ## The benchmark's quick mode (about 3 minutes)
	@$(PY) -m bench --short

.PHONY: simulate
simulate: run ## Stream a simulated sensor fleet to the stack (ARGS="--sensors 100 --rate 5000 ...")
	@$(PY) -m simulator $(ARGS)

.PHONY: deadletters
deadletters: proto ## List or replay dead-lettered records (ARGS="list", ARGS="replay --offsets 3,7-9")
	@$(PY) -m deadletters $(ARGS)

.PHONY: generate
generate: proto ## Rewrite every committed generated file from its generator (stack/generated.py)
	@$(PY) -m stack.generated write

.PHONY: check-generated
check-generated: proto ## Fail, naming the file, when a committed generated file differs from its generator's output
	@$(PY) -m stack.generated check

.PHONY: check-docs
check-docs: venv ## Check every relative link and anchor in the Markdown files
	@$(PY) -m stack.doclinks

.PHONY: lint
lint: proto packages ## ruff, mypy, buf lint, promtool on Prometheus's configuration and rules (with their tests), the web console's scripts and the Redis scripts
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@$(MAKE) proto-lint
	@# The web console's scripts parse as ES modules (console/package.json says they are), the API
	@# page's as a script; the browser tests run them.
	@command -v node >/dev/null || { echo "make lint needs Node.js for the web console's scripts"; exit 1; }
	@for script in console/site/js/*.js apidocs/site/*.js; do node --check "$$script"; done
	@# The processor's Redis scripts, in Redis's Lua (5.1).
	@luac5.1 -p processor/stream/*.lua
	@promtool check rules --lint-fatal prometheus/rules.yml
	@cd prometheus && promtool test rules rules.test.yml
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(PY) -m stack.prometheus_config > "$$tmp/prometheus.yml" && promtool check config --lint-fatal "$$tmp/prometheus.yml"

.PHONY: packages
packages: venv ## Install the Debian packages the stack needs (as root) when any is missing
	@$(PY) -m stack packages

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
