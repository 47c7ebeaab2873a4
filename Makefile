# Agent Training Service: every set-up step lives here, so a fresh machine needs only
# `make run` (the service) or `make test` (the tests).

VENV     ?= .venv
PYTHON   := $(VENV)/bin/python
BIN      := $(VENV)/bin
BUF      := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROMETHEUS := .tools/prometheus/usr/bin/prometheus
ADDRESS  ?= 127.0.0.1:50051
DATA_DIR ?= ./data

export HF_HUB_OFFLINE := 1

.PHONY: install tools prometheus proto proto-check run test lint bench clean

install: $(VENV)/.installed

# torch is held to the CPU build named in constraints.txt; pyproject.toml states the range users need.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -c constraints.txt -e '.[dev,pretrained,otlp]'
	touch $@

tools: $(BUF)

# Prometheus server (Debian's package, unpacked under .tools) for the end-to-end metrics test.
prometheus: $(PROMETHEUS)

$(PROMETHEUS):
	scripts/install_prometheus.sh .tools/prometheus

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

proto: install
	PATH="$(BIN):$$PATH" scripts/generate_protos.sh gen/python 2>/dev/null

# Fails when the committed generated code differs from what protos/ generates.
proto-check: install
	@tmp=$$(mktemp -d) && PATH="$(BIN):$$PATH" scripts/generate_protos.sh $$tmp 2>/dev/null \
	  && diff -r -x __pycache__ $$tmp/agent_training gen/python/agent_training \
	  || { echo "gen/python is stale: run 'make proto' and commit the result"; exit 1; }

run: install
	$(BIN)/agent-training serve --address $(ADDRESS) --data-dir $(DATA_DIR)

test: install proto-check prometheus
	PROMETHEUS_BINARY=$(PROMETHEUS) $(PYTHON) -m pytest

lint: install tools
	$(BUF) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(PYTHON) bench/run_all.py

clean:
	rm -rf $(VENV) .tools build *.egg-info
