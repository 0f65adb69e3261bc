# Two commands matter: `make run` (start the orchestrator on the embedded SQLite store) and
# `make test` (install what is needed, run the whole suite). Everything installs into ./.venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint proto proto-check install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the orchestrator on the default SQLite file (./.orchestrator/orchestrator.db), port 50051.
run: $(STAMP)
	$(VENV)/bin/orchestrator serve $(ARGS)

## Run the whole test suite (unit, integration, end to end).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

BUF := tools/buf/node_modules/.bin/buf

## ruff, mypy --strict, buf (lint, format, breaking changes against main), and a check that the
## generated stubs match proto/.
lint: $(STAMP) proto-check $(BUF)
	$(VENV)/bin/ruff check orchestrator sdk_python tests bench
	$(VENV)/bin/mypy orchestrator sdk_python
	$(BUF) lint
	$(BUF) format -d --exit-code
	if git rev-parse -q --verify main >/dev/null; then $(BUF) breaking --against '.git#branch=main,subdir=proto'; fi

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	cd tools/buf && npm ci --ignore-scripts --no-audit --no-fund
	touch $(BUF)

## Benchmark next to DBOS: SQLite, plus PostgreSQL when $$ORCHESTRATOR_TEST_POSTGRES_URL is set.
## BENCH_ARGS passes flags (e.g. BENCH_ARGS="--waiting 10000 --profile").
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench --json bench/results/latest.json $(BENCH_ARGS)

## Regenerate the Python stubs in sdk_python/_proto from proto/.
proto: $(STAMP)
	PYTHON=$(PY) scripts/gen_proto.sh

proto-check: $(STAMP)
	$(PY) -m pytest -q tests/unit/test_proto_stubs.py

clean:
	rm -rf $(VENV) .orchestrator build *.egg-info tools/buf/node_modules examples/node/node_modules
