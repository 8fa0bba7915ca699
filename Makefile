# memclip: the two commands a newcomer types are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo pretrain test test-fast bench clean help

help:
	@echo "make demo    install into $(VENV) if needed, then run the whole method on the synthetic world"
	@echo "             (DEMO_ARGS=--pretrain-teacher re-creates the shipped tiny CLIP first, ~2 h)"
	@echo "make pretrain re-create the shipped tiny CLIP teacher and install it into the package (~2 h)"
	@echo "make test    install into $(VENV) if needed, then run the test suite (CPU, < 20 min on 2 cores)"
	@echo "make bench   print memory-layer timings (python -m memory_layers.bench)"
	@echo "make install create $(VENV) and install memclip editable with its test and kernel extras"

$(VENV)/.installed: setup.py requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[test,kernels]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m memclip_train.demo --out $(DEMO_OUT) $(DEMO_ARGS)

pretrain: $(VENV)/.installed
	$(PY) -m memclip_train.pretrain --out runs/pretrain --install

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m memory_layers.bench

clean:
	rm -rf build dist src/*.egg-info .pytest_cache
