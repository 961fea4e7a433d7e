# The book's two commands (see README.md). Each does all of its own set-up on a fresh machine:
#   make book [PROFILE=smoke|book|paper]   execute the notebooks, then build the site
#   make test                              unit tests, nbval (smoke), strict site build, browser check
# Set-up is idempotent and quick once done (stamp files under .venv/).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PROFILE ?= book
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and alone, pinned, so that no later requirement can pull another build
# (with no torch present, pip would take the newest CUDA build from the registry). Extra pip
# arguments for it (e.g. a CPU-only index elsewhere) go in TORCH_PIP_ARGS.
TORCH_VERSION := 2.13.0
TORCH_PIP_ARGS ?=
SETUP_STAMP := $(VENV)/.nora-setup-done
# The start-up hook that lets torchvision (so timm, peft, transformers) import next to CPU torch in
# any order (nora/_torchvision.py); its own target, so an existing .venv gets it too.
TORCHVISION_HOOK := $(VENV)/lib/python3.11/site-packages/nora_torchvision_hook.pth
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup book test chromium mathjax

help:
	@echo "make book [PROFILE=smoke|book|paper]   run the notebooks and build the site (_build/html)"
	@echo "make test                              unit tests, nbval (smoke), strict build, browser check"

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is needed, {sys.executable} is {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)

$(SETUP_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[all]"
	$(PY) -c 'import torch; v = torch.__version__.split("+")[0]; assert v == "$(TORCH_VERSION)", f"torch {torch.__version__} installed, $(TORCH_VERSION) pinned"'
	touch $@

$(TORCHVISION_HOOK): nora/_torchvision.py | $(SETUP_STAMP)
	$(PY) -m nora.torchvision_hook install

setup: $(SETUP_STAMP) $(TORCHVISION_HOOK) mathjax

mathjax: $(SETUP_STAMP)
	$(PY) -m nora.book vendor >/dev/null

# Debian's Chromium and its driver, for the browser check; installed only when missing.
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	echo "installing Debian chromium + chromium-driver"; \
	( $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver ) \
	  || echo "WARNING: could not install chromium; the browser test will say why"

book: setup
	$(PY) -m nora.book run --profile $(PROFILE)
	$(PY) -m nora.book build

test: setup chromium
	@t=$$(date +%s); $(PY) -m pytest tests -m "not browser"; \
	  echo "[make test] unit tests: $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); \
	if compgen -G "notebooks/*.ipynb" >/dev/null; then \
	  NORA_PROFILE=smoke $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/; \
	else echo "no notebooks yet: nbval skipped"; fi; \
	echo "[make test] nbval (smoke): $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); $(PY) -m nora.book build; echo "[make test] strict site build: $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); $(PY) -m pytest tests/test_browser.py -m browser; \
	  echo "[make test] browser check: $$(( $$(date +%s) - t )) s"
