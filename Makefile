# One command each: `make demo` (set up + offline Split-FashionMNIST run), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/demo

.PHONY: setup data test demo clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
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

# pytest-xdist: one worker per core, whole files per worker (module-scoped fixtures run once).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

demo: setup
	$(PY) -m pah_jax.main --config=configs/fashion_mnist_official.py --workdir=$(WORKDIR)

clean:
	rm -rf $(VENV) runs
