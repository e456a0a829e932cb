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
CONFIG ?= configs/default.yaml
MODEL  ?=
ARGS   ?=
# The offline sentiment model that configs/default.yaml points at.
OFFLINE_MODEL := models/minilm-vader-sentiment

.PHONY: install test test-slow lint typecheck model score bench gpu-pack gpu-check docs need-input clean help

help:
	@echo "make install                         create .venv and install batchscore (+ test extras)"
	@echo "make test                            run the test suite"
	@echo "make lint                            ruff check + ruff format --check"
	@echo "make typecheck                       mypy over src/"
	@echo "make model                           build the offline sentiment model ($(OFFLINE_MODEL), ~4 min)"
	@echo "make score INPUT=... [OUTPUT=...] [CONFIG=...] [MODEL=...] [ARGS='--top-k all']"
	@echo "make test-slow                       also run the slow tests (builds the real model)"
	@echo "make bench                           batchscore vs transformers.pipeline: benchmarks/results/ and docs/performance.md"
	@echo "make gpu-pack                        .gpu/: what a GPU machine without network needs for make gpu-check"
	@echo "make gpu-check [DEVICE=cpu]          on the GPU machine: gpu tests + GPU bench, gpu-check.md/json into \$$OUT (<= 8 min)"
	@echo "make docs                            regenerate docs/options.md from OPTIONS (src/batchscore/options.py)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,build,delta,iceberg]"
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The slow tests also run batchscore on Ray Data and Spark: their extras (ray, pyspark: ~400 MB) come in here only.
SLOW_STAMP := $(VENV)/.installed-slow
$(SLOW_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,build,delta,iceberg,ray,spark]"
	@touch $@

test-slow: $(SLOW_STAMP)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

# The directory appears only when complete (built aside, then renamed), so its
# weights file is a sound "already built" marker.
$(OFFLINE_MODEL)/model.safetensors: | $(STAMP)
	$(BIN)/batchscore build-model --out $(OFFLINE_MODEL)

model: $(OFFLINE_MODEL)/model.safetensors

# Without MODEL=, the default config's offline model is built once if missing.
score: need-input $(STAMP) $(if $(MODEL),,$(if $(filter configs/default.yaml,$(CONFIG)),$(OFFLINE_MODEL)/model.safetensors))
	$(BIN)/batchscore score "$(INPUT)"$(if $(OUTPUT), --output "$(OUTPUT)")$(if $(CONFIG), --config "$(CONFIG)")$(if $(MODEL), --model "$(MODEL)") --report $(ARGS)

# batchscore vs transformers.pipeline on the same model, texts and machine (~10 min on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(ARGS)

# The GPU check (docs/gpu.md): gpu-pack here, then gpu-check on the GPU machine, which has no venv and no
# network: there it runs the system python3 on the source tree. DEVICE=cpu is its dry run (tiny sizes), which
# `make test` runs too. Results go to $OUT when set (the device tool's folder), else build/gpu-check.
GPU_PACK   ?= .gpu
DEVICE     ?=
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpu-pack: $(STAMP)
	$(BIN)/python benchmarks/gpu_pack.py --out "$(GPU_PACK)"

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --pack "$(GPU_PACK)"$(if $(DEVICE), --device $(DEVICE))

# docs/options.md is generated from OPTIONS; tests/test_docs.py fails when it drifts. (docs/performance.md: make bench.)
docs: $(STAMP)
	$(BIN)/python -m batchscore.options_doc docs/options.md

need-input:
	@test -n "$(INPUT)" || { echo "usage: make score INPUT=path/or/url [OUTPUT=...] [CONFIG=...] [MODEL=...]"; exit 2; }

clean:
	rm -rf $(VENV) .pytest_cache build dist src/*.egg-info
	@echo "(kept $(OFFLINE_MODEL); rm -rf models/ to rebuild it)"
