# Inhibitron — the two README commands (`make demo`, `make test`) and friends.
# Every target creates or reuses .venv and installs what it needs by itself.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch lies on the project machines; pin it here so pip
# never fetches a multi-GB CUDA build. pyproject.toml keeps a range.
TORCH_PIN := torch==2.13.0
STAMP  := $(VENV)/.installed
JOBS   ?= 2

.PHONY: all install demo test test-all bench lint clean

all: test

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip
	$(PIP) install --quiet --disable-pip-version-check "$(TORCH_PIN)"
	$(PIP) install --quiet --disable-pip-version-check -e ".[all]" "$(TORCH_PIN)"
	touch $(STAMP)

install: $(STAMP)

## make demo: the main job end to end on the embedded defaults.
demo: $(STAMP)
	$(VENV)/bin/inhibitron demo

## make test: the CI suite (fast and medium tests; slow ones need test-all).
test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow" tests

## make test-all: every suite, the slow cosimulations and sweeps included.
test-all: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests

## make formal: every formal proof (SymbiYosys from PyPI), the slow ones included.
.PHONY: formal
formal: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests/formal

## make bench: benchmarks; results go to docs/performance.md.
bench: $(STAMP)
	$(VENV)/bin/inhibitron bench --out docs/performance.md

## make lint: ruff with the project's rules ([tool.ruff] in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build sim_build .pytest_cache out
