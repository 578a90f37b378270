# Every target creates .venv and installs what it needs: a fresh machine needs only `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo-cli example-kafka example-pytest test test-faults test-all lint typecheck unit integration bench bench-quick soak clean services chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## The main job: the service on the embedded SQLite default, fed by the demo pipeline (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/python examples/serve_demo.py

## The same demo pipeline verified twice with the CLI in the foreground (exit codes 0 and 1).
demo-cli: $(STAMP)
	$(BIN)/python examples/demo.py

## The Kafka example (examples/kafka): trackcheck sends the events to a topic, then follows them through a stream
## processor and a loader to a warehouse (a local broker unless KAFKA_BOOTSTRAP is set); ARGS="--drop e2" fails.
example-kafka: $(STAMP)
	$(BIN)/python examples/kafka/run.py $(ARGS)

## The pytest example (examples/pytest): a test that drives a tiny pipeline and verifies it with the
## `trackcheck` fixture; `make example-pytest ARGS="-m demo_failure"` shows what a failure looks like.
example-pytest: $(STAMP)
	$(BIN)/pytest examples/pytest $(ARGS)

## Lint, type-check, the whole test suite (unit, integration on the local servers, browser), and the
## benchmarks at small sizes (they assert that every figure was measured, never how fast).
test: $(STAMP) lint typecheck chromium
	$(BIN)/pytest -q
	$(MAKE) bench-quick

## The fault suite (tests/faults: kill -9 during ticks, a state database restart, a source outage, poison records)
## at full sizes; `make test` runs it at quick sizes. Each scenario prints what it checked (runs lost, stuck...).
test-faults: $(STAMP)
	TRACKCHECK_FAULTS=full $(BIN)/pytest -q tests/faults

## Everything `make test` does, with the fault suite at full sizes instead of quick ones.
test-all: $(STAMP) lint typecheck chromium
	TRACKCHECK_FAULTS=full $(BIN)/pytest -q
	$(MAKE) bench-quick

## Browser tests drive Debian's Chromium through Playwright (never a browser Playwright downloads itself).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

## ruff, and the layer contracts of pyproject.toml's [tool.importlinter] (arrows point one way)
lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

## Benchmarks (issue 4) on the local PostgreSQL (B4 also on MariaDB): `bench` writes benchmarks/RESULTS.md (~15 min) and
## benchmarks/SCALEOUT.md (B8, ~4 min: poll workers of the procrastinate backend) and benchmarks/RECON.md (B4, ~8 min:
## issue 13, 10 M rows reconciled across PostgreSQL and MariaDB by `trackcheck diff` and by reladiff in a venv of its own);
## `bench-quick` (<1 min, CI) runs the same code at small sizes, prints its report and fails only if a figure is missing.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.b8_scaleout
	$(BIN)/python -m benchmarks.b4_recon

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --quick
	$(BIN)/python -m benchmarks.b8_scaleout --quick
	$(BIN)/python -m benchmarks.b4_recon --quick

## The soak (issue 9): an hour of 10,000 runs an hour through a real `trackcheck worker` with retention on,
## the state database's size every minute; writes benchmarks/SOAK.md (MINUTES=5 for a short look).
soak: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.soak --minutes $(or $(MINUTES),60)
