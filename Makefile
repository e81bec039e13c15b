# virtualize: two commands on a fresh machine, `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BENCH_VENV := .venv-bench
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# A Python >= 3.12: pyenv's (selected by .python-version), python3.12 on PATH, or any
# pyenv-installed 3.12+.
define find_python
$(firstword $(foreach candidate, \
  $(shell command -v pyenv >/dev/null 2>&1 && pyenv which python 2>/dev/null) \
  $(shell command -v python3.13 python3.12 2>/dev/null) \
  $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python) \
  $(shell command -v python3 2>/dev/null), \
  $(shell "$(candidate)" -c 'import sys; print("$(candidate)" if sys.version_info >= (3, 12) else "")' 2>/dev/null)))
endef
BASE_PYTHON ?= $(strip $(find_python))

.PHONY: help install demo test lint typecheck pytest bench fuzz docs clean

help:
	@echo "make demo   - write a sample archive, open it virtually, check it against xarray"
	@echo "make test   - ruff, mypy and the test suite"
	@echo "make bench  - benchmarks against VirtualiZarr 2.8 (installs it in $(BENCH_VENV))"
	@echo "make fuzz   - 100,000 mutated files through every parser (make test runs 2,000)"
	@echo "make docs   - build the documentation site into site/"

$(STAMP): pyproject.toml
	@if [ -z "$(BASE_PYTHON)" ]; then echo "error: need Python >= 3.12 (pyenv install 3.12, or python3.12 on PATH)"; exit 1; fi
	@echo "using $(BASE_PYTHON) ($$($(BASE_PYTHON) --version))"
	@[ -x $(PY) ] || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check virtualize tests benchmarks examples
	$(VENV)/bin/ruff format --check virtualize tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -n 2 --dist loadgroup -q

test: lint typecheck pytest

$(BENCH_VENV)/.installed: pyproject.toml
	@[ -x $(BENCH_VENV)/bin/python ] || $(BASE_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[all]" netCDF4 "virtualizarr[hdf]==2.8.0"
	@touch $@

fuzz: $(STAMP)
	cd tests && ../$(PY) fuzz_support.py --cases 100000 --read --output ../fuzz-results.json

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/run.py
	$(BENCH_VENV)/bin/python benchmarks/parse_corpus.py
	$(BENCH_VENV)/bin/python benchmarks/icechunk_write.py
	$(BENCH_VENV)/bin/python benchmarks/kerchunk_write.py
	$(BENCH_VENV)/bin/python benchmarks/mfdataset.py
	$(BENCH_VENV)/bin/python benchmarks/combine_scaling.py
	$(BENCH_VENV)/bin/python benchmarks/ingest.py
	$(BENCH_VENV)/bin/python benchmarks/netcdf3_parse.py
	$(BENCH_VENV)/bin/python benchmarks/grib_open.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(BENCH_VENV) site .demo .bench .mypy_cache .ruff_cache .pytest_cache
