# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, run the SGD / NGD / K-FAC comparison on digits
#   make test   create .venv, install with the test extras, run the test suite
#   make gpu-check  on a CUDA machine: add the gpu extra, run tests + benchmarks + compare on CuPy
#                   (under 8 minutes), report in $(OUT) (default results/gpu-check)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?=

.PHONY: demo test test-all bench gpu-check notebooks venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
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

notebooks: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[notebooks]'
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_forward_backward.py

clean:
	rm -rf $(VENV) results .pytest_cache
