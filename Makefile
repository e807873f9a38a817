# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, run the SGD / NGD / K-FAC comparison on digits
#   make test   create .venv, install with the test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= results/demo

.PHONY: demo test test-all bench notebooks venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m kfac_ref demo --threads 1 --out $(OUT)

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

test-all: $(VENV)/.installed
	$(PY) -m pytest

notebooks: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[notebooks]'
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_forward_backward.py

clean:
	rm -rf $(VENV) results .pytest_cache
