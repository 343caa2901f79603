# The two set-up commands in the README are `make run` and `make test`: each creates the
# virtual environment and installs labkit into it on first use (again when pyproject.toml
# changes), then does its job. Nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
SCENARIO ?= scenarios/quickstart.yaml

.PHONY: run test lint bench bench-scale clean

PROTOS := $(wildcard protos/*.proto)

# the venv, labkit (editable) with its test extras, and the gRPC code generated from protos/
$(STAMP): pyproject.toml $(PROTOS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m labkit.live.codegen
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/labkit run $(SCENARIO)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/ruff format --check labkit tests benchmarks

# LABKIT_QUICK=1 makes notebooks use their documented quick size.
test: $(STAMP) lint
	LABKIT_QUICK=1 MPLBACKEND=Agg $(BIN)/python -m pytest --nbmake --nbmake-timeout=300 tests notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sim.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .hypothesis
