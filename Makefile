# wsi-dram: every target runs inside the project's venv (.venv), made by `install`.
# torch is pinned to 2.13.0 first (the CPU wheel); the project itself asks for a
# range, so GPU users can bring their own CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

SHARED ?= ../shared
SLIDES ?= $(SHARED)/data/slides/*/*
ANNOTATIONS ?=
CACHE ?= cache
WORKERS ?= 2
SCHEDULER ?=
DEMO_DIR ?= demo_out
DEMO_SCALE ?= 1
PYTEST_ARGS ?=

.PHONY: install test lint preprocess demo demo-real bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check wsi_dram tests pipelines
	$(BIN)/ruff format --check wsi_dram tests
	$(BIN)/mypy

preprocess: $(STAMP)
	$(BIN)/wsi-dram preprocess $(SLIDES) --cache $(CACHE) --workers $(WORKERS) \
		$(if $(ANNOTATIONS),--annotations $(ANNOTATIONS)) \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER))

demo: $(STAMP)
	$(BIN)/wsi-dram demo --out $(DEMO_DIR) --scale $(DEMO_SCALE)

demo-real: $(STAMP)
	$(BIN)/wsi-dram demo-real --data $(SHARED)/data --out $(DEMO_DIR)/real --checkpoint $(DEMO_DIR)/runs/synthetic/checkpoints/best.pt

bench: $(STAMP)
	$(BIN)/python -m wsi_dram.benchmarks.run --out BENCHMARKS.md

clean:
	rm -rf $(CACHE) $(DEMO_DIR) .pytest_cache
