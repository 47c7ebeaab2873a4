# Agent Training Service: every set-up step lives here, so a fresh machine needs only
# `make run` (the service) or `make test` (the tests).

VENV     ?= .venv
PYTHON   := $(VENV)/bin/python
BIN      := $(VENV)/bin
BUF      := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROMETHEUS := .tools/prometheus/usr/bin/prometheus
ADDRESS  ?= 127.0.0.1:50051
METRICS_ADDRESS ?= 127.0.0.1:9464
DATA_DIR ?= ./data

export HF_HUB_OFFLINE := 1

.PHONY: install tools prometheus postgres proto proto-check run test lint bench clean
.PHONY: node-install proto-node proto-node-check test-node release-contract api-docs config-docs

install: $(VENV)/.installed

# torch is held to the CPU build named in constraints.txt; pyproject.toml states the range users need.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -c constraints.txt -e '.[dev,pretrained,otlp,ray,postgres]'
	touch $@

tools: $(BUF)

# Prometheus server (Debian's package, unpacked under .tools) for the end-to-end metrics test.
prometheus: $(PROMETHEUS)

$(PROMETHEUS):
	scripts/install_prometheus.sh .tools/prometheus

# PostgreSQL server binaries (the machine's, else Debian's package unpacked under .tools) for the
# tests of the PostgreSQL store; the tests start and stop their servers (scripts/postgres.sh).
postgres:
	scripts/postgres.sh install

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

proto: install
	PATH="$(BIN):$$PATH" scripts/generate_protos.sh gen/python 2>/dev/null

# Fails when the committed generated code differs from what protos/ generates.
proto-check: install
	@tmp=$$(mktemp -d) && PATH="$(BIN):$$PATH" scripts/generate_protos.sh $$tmp 2>/dev/null \
	  && diff -r -x __pycache__ $$tmp/agent_training gen/python/agent_training \
	  || { echo "gen/python is stale: run 'make proto' and commit the result"; exit 1; }

# `make run ADDRESS=127.0.0.1:50052 METRICS_ADDRESS=127.0.0.1:9465 DATA_DIR=./data2` for a second
# server (METRICS_ADDRESS= turns /metrics off). agent-training-server is `agent-training serve`
# without the client package, so it can quiet gRPC's core before grpc loads.
run: install
	$(BIN)/agent-training-server --address $(ADDRESS) --metrics-address "$(METRICS_ADDRESS)" \
	  --data-dir $(DATA_DIR)

# Lint first: every submission is checked for style, contract compatibility and types.
test: lint proto-check proto-node-check prometheus postgres
	PROMETHEUS_BINARY=$(PROMETHEUS) $(PYTHON) -m pytest
	$(MAKE) test-node

lint: install tools
	$(BUF) lint
	$(BUF) breaking --against $(RELEASED_CONTRACT)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The TypeScript client (clients/node): dependencies from its committed lock file, stubs generated
# by protoc-gen-es through buf and committed like gen/python, tests run by node's own runner
# against the real server started from $(VENV).
NODE_CLIENT := clients/node
RELEASED_CONTRACT := contract/released.binpb

node-install: $(NODE_CLIENT)/node_modules/.package-lock.json

$(NODE_CLIENT)/node_modules/.package-lock.json: $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --silent --no-audit --no-fund

proto: proto-node

proto-node: tools node-install
	cd $(NODE_CLIENT) && ../../$(BUF) generate --template buf.gen.yaml

proto-node-check: tools node-install
	@tmp=$$(mktemp -d) && cd $(NODE_CLIENT) && ../../$(BUF) generate --template buf.gen.yaml -o $$tmp \
	  && diff -r $$tmp/src/gen src/gen \
	  || { echo "clients/node/src/gen is stale: run 'make proto' and commit the result"; exit 1; }

test-node: install node-install
	cd $(NODE_CLIENT) && npm test --silent

# docs/api.md and the TypeScript examples it shows, from protos/ and scripts/api_docs.py.
api-docs: install
	$(PYTHON) scripts/api_docs.py

# docs/configuration.md from the settings in server/agent_training_server/config.py.
config-docs: install
	$(PYTHON) scripts/config_docs.py

# Records the contract as released: later changes must pass `buf breaking` against it (make lint).
release-contract: tools
	$(BUF) build --exclude-source-info -o $(RELEASED_CONTRACT)

bench: install
	$(PYTHON) bench/run_all.py

clean:
	rm -rf $(VENV) .tools build *.egg-info
