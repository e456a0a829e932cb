# Every target sets itself up: a .venv inside the repo, created on first use.
# torch==2.13.0 goes in first: this registry serves it as a CPU build, and an
# unpinned torch pulled in by the project would fetch a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

INPUT  ?=
OUTPUT ?=
CONFIG ?=
MODEL  ?=
ARGS   ?=

.PHONY: install test score clean help

help:
	@echo "make install                         create .venv and install batchscore (+ test extras)"
	@echo "make test                            run the test suite"
	@echo "make score INPUT=... [OUTPUT=...] [CONFIG=...] [MODEL=...] [ARGS='--top-k all']"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

score: $(STAMP)
	@test -n "$(INPUT)" || { echo "usage: make score INPUT=path/or/url [OUTPUT=...] [CONFIG=...] [MODEL=...]"; exit 2; }
	$(BIN)/batchscore score "$(INPUT)"$(if $(OUTPUT), --output "$(OUTPUT)")$(if $(CONFIG), --config "$(CONFIG)")$(if $(MODEL), --model "$(MODEL)") $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
