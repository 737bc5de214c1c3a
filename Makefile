# Two commands matter: `make demo` runs the main job end to end, `make test` runs every test.
# Both create (or reuse) .venv and install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-kafka test-browser kafka lint bench schemas clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rebalancer demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	HYPOTHESIS_PROFILE=quick $(BIN)/python -m pytest -m "not broker"

# Every broker-facing test on Apache Kafka (deploy/kafka/run: Java 17+ and Maven needed).
test-kafka: $(STAMP)
	REBALANCER_TEST_BROKER=kafka $(BIN)/python -m pytest -m "broker or kafka_only"

# The dashboard in headless Chromium (Debian's chromium package: apt-get install chromium).
test-browser: $(STAMP)
	REBALANCER_TEST_BROWSER=1 $(BIN)/python -m pytest -m browser

# One Apache Kafka node in the foreground, for a person (Ctrl-C stops it).
kafka:
	deploy/kafka/run --port 9092

lint: $(STAMP)
	$(BIN)/ruff check service consumers tests bench
	$(BIN)/ruff format --check service consumers tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/planner.py

schemas: $(STAMP)
	$(BIN)/rebalancer schemas

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
