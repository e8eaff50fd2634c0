# The two newcomer commands: `make demo` and `make test`. Both build the virtual environment
# from scratch when it is missing or older than pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-container lint format bench test-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-projector demo

test-deps:
	scripts/install-test-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# test-deps has just installed every tool the tests run, so a missing one fails the run
# instead of skipping its tests (tests/fixtures/tools.py). tests/container runs beside the rest
# of the suite (scripts/run-tests.sh says why).
test: $(STAMP) test-deps lint
	BIN=$(BIN) scripts/run-tests.sh

# Only the image built and run on a Docker engine (also part of `make test`).
test-container: $(STAMP) test-deps
	STREAM_PROJECTOR_REQUIRE_TOOLS=1 $(BIN)/pytest -q -rs -p no:cacheprovider tests/container

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache
