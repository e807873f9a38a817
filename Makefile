# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, run the SGD / NGD / K-FAC comparison on digits
#   make test   create .venv, install with the test and MPI extras, run the test suite
#   make gpu-check  on a CUDA machine: add the gpu extra, run tests + benchmarks + compare on CuPy
#                   (under 8 minutes), report in $(OUT) (default results/gpu-check)
# and, for developers: make docs (the documentation site), make test-cov, make lint
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?=

.PHONY: demo test test-all test-cov docs lint bench gpu-check notebooks venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,mpi]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m kfac_ref demo --threads 1 --out $(or $(OUT),results/demo)

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

test-all: $(VENV)/.installed
	$(PY) -m pytest

$(VENV)/.installed-gpu: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[gpu,test]'
	touch $@

gpu-check: $(VENV)/.installed-gpu
	$(PY) benchmarks/gpu_check.py --out $(or $(OUT),results/gpu-check)

# the fast suite with line coverage of kfac_ref (terminal report; htmlcov/ for the pages)
test-cov: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" --cov=kfac_ref --cov-report=term --cov-report=html

# the documentation site, offline, into docs/_build/html; every notebook is executed,
# and any warning fails the build (-E: a fresh read every time, so no warning hides in the cache)
$(VENV)/.installed-docs: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -b html -E -W --keep-going -q docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

notebooks: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[notebooks]'
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_forward_backward.py

clean:
	rm -rf $(VENV) results .pytest_cache docs/_build docs/notebooks docs/api/generated htmlcov .coverage
