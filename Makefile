# Thaw: the commands a developer and CI use. `make test` and `make demo` work on a fresh Debian machine.
PY ?= python3
PYTEST ?= $(PY) -m pytest

.PHONY: setup test test-fast test-datasets test-unit test-integration test-e2e lint audit lock demo stack-up stack-down bench

setup:
	./scripts/setup.sh

# everything a plain clone can run: the tests that need the optional datasets are `make test-datasets`
test: setup lint
	$(PYTEST) tests/unit tests/integration tests/e2e -q -m "not datasets"

# the quick loop while changing code: unit tests that need no setup and no services and train no torch model
# (markers in pyproject.toml; see CONTRIBUTING.md). Under 2 minutes on 2 cores.
test-fast:
	$(PYTEST) tests/unit -q -m "not train and not datasets and not integration and not e2e" -p no:cacheprovider

# the tests on Last.fm HetRec 2011 / CiteULike-a, read from the folder THAW_DATASETS_DIR names
test-datasets: setup
	@test -n "$$THAW_DATASETS_DIR" || { echo "test-datasets: set THAW_DATASETS_DIR to the folder holding lastfm-hetrec2011/ and citeulike-a/ (see README, Datasets)"; exit 2; }
	$(PYTEST) tests/unit tests/integration tests/e2e -q -m datasets

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

# known vulnerabilities of the locked dependencies (pip-audit over requirements.lock, PyPI's advisory data). Needs
# access to the advisory service: --strict fails when a package could not be audited (never a silent pass)
audit:
	$(PY) -m pip install -q "pip-audit>=2.7,<3"
	$(PY) -m pip_audit --strict --no-deps --disable-pip -r requirements.lock --progress-spinner off

# regenerate requirements.lock after changing the dependencies in pyproject.toml
lock:
	./scripts/lock.sh

demo: setup
	$(PY) -m thaw demo

stack-up:
	$(PY) -m thaw stack up

stack-down:
	$(PY) -m thaw stack down

bench: setup
	$(PY) -m benchmarks.freshness
	$(PY) -m benchmarks.user_throughput
