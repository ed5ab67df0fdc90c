# The two commands: `make book` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(wildcard book/notebooks/*.ipynb)
export PYTHONHASHSEED := 0

.PHONY: help install book test lint pytest nbval chapters sync book-check clean test-faults test-cluster

help:
	@echo "make book        build the HTML book into _build/html from the committed outputs"
	@echo "make test        pytest + nbval over every chapter + md/ipynb sync check"
	@echo "make chapters    re-execute every chapter notebook in place (quick profile)"
	@echo "make book-check  open every page in headless Chromium (needs Debian's chromium)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml (the one place versions are pinned) changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jb build . -W -n --keep-going
	@echo "book: _build/html/index.html"

test: lint pytest nbval

LINTED := infoflow tests tests_faults tests_cluster benchmarks scripts book/_ext
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

pytest: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest tests

nbval: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval --nbval-current-env \
	  --nbval-sanitize-with book/sanitize.cfg $(NOTEBOOKS)

chapters: $(STAMP)
	cd book && ../$(BIN)/jupytext --sync --execute --set-kernel python3 chapters/*.md

sync: $(STAMP)
	cd book && ../$(BIN)/jupytext --sync chapters/*.md

book-check: book
	$(BIN)/python scripts/book_check.py _build/html --screens _build/screens

clean:
	rm -rf _build

test-faults: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests_faults

# A real single-node Slurm cluster on 127.0.0.1 (Debian's slurm-wlm + munge, root), started and stopped here.
test-cluster: $(STAMP)
	scripts/slurm_cluster.sh start
	$(BIN)/python -m pytest -p no:cacheprovider tests_cluster; rc=$$?; scripts/slurm_cluster.sh stop; exit $$rc
