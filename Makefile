# `make demo`: set up .venv and the offline data, run Split-FashionMNIST 5x2 with PAH.
# `make test`: lint, then the whole suite on both legs (what CI runs):
#   - locked: Python 3.11 with the exact versions of requirements.lock (.venv, also used by the demo);
#   - latest: Python 3.12 with the newest releases that pyproject.toml's ranges admit (.venv-latest).
# `make test-fast`: the locked leg's fast tests (no end-to-end runs), for the edit-run loop.
# Each leg's pytest header names its Python, JAX stack and CPU.
PYTHON ?= python3
# Python 3.12 for the latest leg: python3.12 on PATH, else pyenv's newest 3.12.
PYTHON_LATEST ?= $(shell (python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null) || \
  (ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1))
VENV ?= .venv
VENV_LATEST ?= .venv-latest
PY := $(VENV)/bin/python
PY_LATEST := $(VENV_LATEST)/bin/python
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/demo
# pytest-xdist: one worker per core, whole files per worker (module-scoped fixtures run once).
PYTEST_ARGS ?= -n auto --dist loadfile --durations=10

.PHONY: setup setup-latest data lint test test-locked test-latest test-fast demo lock clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# A plain (not editable) install, as a user gets it from `pip install .`.
$(VENV_LATEST)/.installed: pyproject.toml $(shell find pah_jax -name '*.py')
	@test -n "$(PYTHON_LATEST)" || { echo "error: no Python 3.12 found: set PYTHON_LATEST=/path/to/python3.12"; exit 2; }
	$(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(PY_LATEST) -m pip install --quiet --upgrade pip
	$(PY_LATEST) -m pip install --quiet --upgrade ".[test]"
	rm -rf build
	touch $@

# Debian/Ubuntu's dataset-fashion-mnist holds the original IDX files (offline data).
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "note: install Debian's dataset-fashion-mnist or put the 4 Fashion-MNIST .gz files in $(FASHION_MNIST_DIR)"; \
	fi

setup: $(VENV)/.installed data

setup-latest: $(VENV_LATEST)/.installed data

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m experiments.report --check

test-locked: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-latest: setup-latest
	$(PY_LATEST) -m pytest $(PYTEST_ARGS)

test: lint test-locked test-latest

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m pah_jax.main --config=configs/fashion_mnist_official.py --workdir=$(WORKDIR)

# Re-resolve requirements.lock: the newest versions within pyproject.toml's ranges, for Python 3.11
# on x86-64 Linux. Commit the result together with the test run that passed on it.
lock: $(VENV)/.installed
	$(PY) -m pip install --quiet uv
	$(PY) -m uv pip compile pyproject.toml --extra test --upgrade --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) $(VENV_LATEST) build runs
