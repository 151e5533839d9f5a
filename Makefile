# Two commands do all set-up on a fresh machine:
#   make demo   the whole flow on the embedded default (no cloud account, no GPU, no network)
#   make test   installs everything the tests need (incl. redis-server) and runs them
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# PyTorch: the CUDA build where an NVIDIA driver is present, else the CPU build of this version.
TORCH_CPU_VERSION ?= 2.13.0
# Extra pip arguments for torch only, e.g. TORCH_PIP_ARGS="--index-url <PyTorch's CPU wheel index>".
TORCH_PIP_ARGS ?=
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo "torch==$(TORCH_CPU_VERSION)")
PYTEST_ARGS ?=
# A marker expression ANDed with each run's own (`-m` in PYTEST_ARGS would replace them), e.g. PYTEST_MARK=redis.
PYTEST_MARK ?=
_MARK := $(if $(strip $(PYTEST_MARK)), and ($(PYTEST_MARK)))
# `make test` runs the suite on this many pytest-xdist processes, each with its own redis-server and emulators; a
# file's tests stay together (`--dist loadfile`: module-scoped stacks are started once). PYTEST_WORKERS=0: one process.
# Then the tests marked `serial` (they judge timing against the machine's own pace) run alone, in one process.
PYTEST_WORKERS ?= 2
# Test-only tools outside the virtualenv: Azurite (npm) and checkov (its own venv: it pins many libraries).
TOOLS ?= .tools

.PHONY: install install-test demo test soak lint typecheck bench services browser clean gpu-wheels gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PIP) install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[worker,aws]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e ".[worker,aws,test,dev]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test services browser $(TOOLS)/.azurite $(TOOLS)/checkov/.installed

## Real services the tests start themselves: redis-server from the distribution's packages.
services:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	    command -v systemctl >/dev/null 2>&1 && $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	  else echo "no apt-get: install redis-server yourself (tests start and stop their own)"; exit 1; fi; }

## The browser the dashboard tests drive (Playwright with `executable_path`): the distribution's chromium, never a
## browser build downloaded by `playwright install`.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  else echo "no apt-get: install chromium yourself (the browser tests skip without it)"; exit 1; fi; }

$(TOOLS)/.azurite:
	@command -v npm >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund azurite@3 >/dev/null
	touch $@

$(TOOLS)/checkov/.installed:
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/python -m pip install --quiet "checkov>=3.2"
	touch $@

demo: install
	SDQ_DATA_DIR=$${SDQ_DATA_DIR:-$(CURDIR)/.sdq} HF_HUB_OFFLINE=1 $(VENV)/bin/sdq demo --out demo-out

test: install-test
	@HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not soak and not serial$(_MARK)" $(PYTEST_ARGS); \
	parallel=$$?; HF_HUB_OFFLINE=1 $(PY) -m pytest -m "serial and not soak$(_MARK)" $(PYTEST_ARGS); alone=$$?; \
	if [ $$parallel -eq 5 ] && [ $$alone -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; \
	for rc in $$parallel $$alone; do if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then exit $$rc; fi; done

## Minutes-long runs kept out of `make test` (marked `soak`): the real compiled-boot cache reuse.
soak: install-test
	@HF_HUB_OFFLINE=1 $(PY) -m pytest -m "soak$(_MARK)" $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check producer gpu_worker storage tests bench infra_templates/docker
	$(VENV)/bin/ruff format --check producer gpu_worker storage tests bench infra_templates/docker

typecheck: install-test
	$(VENV)/bin/mypy

## The prepared GPU check (README: "Checking on a GPU"). `gpu-wheels` runs here (PyPI reachable) and fills
## $(WHEELS) with what the GPU machine lacks (bench/gpu_wheels.txt, and sdqueue itself for its entry points);
## `gpu-check` runs there: it installs them into a private folder and writes $$OUT/gpu-check.jsonl.
WHEELS ?= .whl
GPU_PYTHON ?= python3
GPU_PLATFORMS := $(foreach n,2_5 2_17 2_24 2_27 2_28 2_31,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64

gpu-wheels: | $(PY)
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(PIP) download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_PLATFORMS) --platform any -d $(WHEELS) -r bench/gpu_wheels.txt
	$(PIP) wheel --quiet --no-deps --no-build-isolation -w $(WHEELS) .
	@du -sh $(WHEELS)

gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check --wheels $(WHEELS)

clean:
	rm -rf $(VENV) $(TOOLS) .sdq demo-out .pytest_cache .mypy_cache .ruff_cache .whl gpu-check-out
