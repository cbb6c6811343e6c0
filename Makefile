# Thaw: the commands a developer and CI use. `make test` and `make demo` work on a fresh Debian machine.
PY ?= python3
PYTEST ?= $(PY) -m pytest

.PHONY: setup test test-unit test-integration test-e2e lint demo stack-up stack-down bench

setup:
	./scripts/setup.sh

test: setup lint
	$(PYTEST) tests/unit tests/integration tests/e2e -q

test-unit:
	$(PYTEST) tests/unit -q

test-integration:
	$(PYTEST) tests/integration -q

test-e2e:
	$(PYTEST) tests/e2e -q

lint:
	$(PY) -m ruff check .
	$(PY) -m mypy
	lint-imports --no-cache   # the import contracts in pyproject.toml: layers, and no torch on the serving paths

demo: setup
	$(PY) -m thaw demo

stack-up:
	$(PY) -m thaw stack up

stack-down:
	$(PY) -m thaw stack down

bench: setup
	$(PY) -m benchmarks.freshness
	$(PY) -m benchmarks.user_throughput
