# The two set-up commands in the README are `make run` and `make test`: each creates the
# virtual environment and installs labkit into it on first use (again when pyproject.toml
# changes), then does its job. Nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
SCENARIO ?= scenarios/quickstart.yaml

.PHONY: run test lint bench bench-scale clean browser compile uncompile

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

# The browser test (tests/test_browser.py) drives JupyterLab in Debian's chromium through
# Playwright (no browser download: Playwright's own installer cannot work here). Installed
# once, only when missing; `make run` does not need it.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

# LABKIT_QUICK=1 makes notebooks use their documented quick size.
test: $(STAMP) lint $(CHROMIUM)
	LABKIT_QUICK=1 MPLBACKEND=Agg $(BIN)/python -m pytest --nbmake --nbmake-timeout=300 tests notebooks

# benchmark-only dependencies (Ciw), on top of the test install
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_sim.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

# Optional: the simulator's hot path (labkit/_compiled.py MODULES) compiled with mypyc, in
# place (a .so beside each .py; importing labkit refuses a .so older than an edit to its .py).
# An editable install, so that the shared library mypyc builds beside the package
# (labkit__mypyc) is found from anywhere, as the package is.
compile: $(STAMP)
	LABKIT_COMPILE=1 $(BIN)/python -m pip install --quiet -e .

uncompile:
	rm -rf build/lib.* build/temp.* build/bdist.* build/__native* build/ops.txt build/labkit
	rm -f labkit__mypyc*.so labkit/_compiled_manifest.json
	find labkit -name '*.so' -delete

clean: uncompile
	rm -rf $(VENV) out artifacts .pytest_cache .ruff_cache .hypothesis
