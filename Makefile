# Thaw: the commands a developer and CI use. `make test` and `make demo` work on a fresh Debian machine.
PY ?= python3
PYTEST ?= $(PY) -m pytest

.PHONY: setup test test-fast test-datasets test-cluster test-unit test-integration test-e2e lint audit lock demo stack-up stack-down bench bench-data bench-summary

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

# the integration suite and the e2e tests of the user-state path again on a real Redis Cluster (3 masters + 3
# replicas from Debian's redis-server, `thaw stack up --redis-cluster`, its own stack home and ports 17379-17390)
# instead of the single Redis; Kafka and Milvus are the local stack's (reused when up). CI runs it after `make test`.
CLUSTER_ENV = THAW_STACK__HOME=$(HOME)/.cache/thaw/stack-cluster THAW_REDIS__CLUSTER=1 THAW_REDIS__PORT=17379
CLUSTER_E2E = tests/e2e/test_engine_e2e.py tests/e2e/test_follow_e2e.py tests/e2e/test_resume_e2e.py
test-cluster: setup
	$(CLUSTER_ENV) $(PY) -m thaw stack up --redis-cluster
	$(CLUSTER_ENV) $(PYTEST) tests/integration $(CLUSTER_E2E) -q -m "not datasets"

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

# the performance benchmarks on what a plain clone has (MovieLens-100k, the demo community: see
# benchmarks/README.md), then one summary table built from their JSON. ~10 min on 2 cores; BENCH_QUICK=1 runs
# smaller sizes (~4 min) into benchmarks/results/quick/ and leaves the committed results alone.
# BENCH_QUANTIZE=int8 (MiniLM) or int8-all (+ the FLAVA-style graphs) runs the featuriser and freshness on the int8
# encoders (written by `thaw models quantize`; see benchmarks/README.md for what they cost and gain).
BENCH_QUANTIZE ?= none
ifeq ($(BENCH_QUICK),1)
BENCH_OUT ?= benchmarks/results/quick
BENCH_FRESHNESS ?= --items 200 --warmup 10
BENCH_USERS ?= --events 20000 --users 2000
BENCH_FEATURIZER ?= --items 64 --batch-sizes 32 --engines onnx
BENCH_REPLAY ?= --events 10000 --rates 5000,0
else
BENCH_OUT ?= benchmarks/results
BENCH_FRESHNESS ?= --items 1000
BENCH_USERS ?=
BENCH_FEATURIZER ?= --batch-sizes 1,32
BENCH_REPLAY ?=
endif

# what the performance set needs beyond setup: the bundled media encoders and the demo's 160 music21 clips
bench-data: setup
	$(PY) -m thaw models install-bundled
	$(PY) -m thaw corpus music build --clips 160 --workers 2 --no-progress >/dev/null
	@if [ "$(BENCH_QUANTIZE)" != none ]; then $(PY) -m thaw models quantize; fi

# every benchmark runs even when one fails; the table says which failed, and the exit status too
bench: bench-data
	@rc=0; q="--quantize $(BENCH_QUANTIZE)"; \
	$(PY) -m benchmarks.freshness --source mixed --rates 50 $$q $(BENCH_FRESHNESS) --out $(BENCH_OUT) || rc=1; \
	$(PY) -m benchmarks.freshness --source text --rates 50 $$q $(BENCH_FRESHNESS) --out $(BENCH_OUT) || rc=1; \
	$(PY) -m benchmarks.user_throughput $(BENCH_USERS) --out $(BENCH_OUT) || rc=1; \
	$(PY) -m benchmarks.featurizer_speed $$q $(BENCH_FEATURIZER) --out $(BENCH_OUT) || rc=1; \
	$(PY) -m benchmarks.replay_rate $(BENCH_REPLAY) --out $(BENCH_OUT) >/dev/null || rc=1; \
	$(PY) -m benchmarks.summary --results $(BENCH_OUT); \
	exit $$rc

bench-summary:
	$(PY) -m benchmarks.summary --results $(BENCH_OUT)
