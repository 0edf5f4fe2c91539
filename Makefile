# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
# GPU users: create .venv and install their CUDA build of torch first; it is kept (see README).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test wheel-check lint bench clean-venv

# The models extra (smp, timm) needs torchvision: a venv whose torch has none goes without it
# (its model tests skip) rather than have pip replace that torch.
$(BIN)/imseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	if $(BIN)/python -c "import torchvision" 2>/dev/null; then extras=dev,models; \
	else extras=dev; fi; $(BIN)/python -m pip install -q -e ".[$$extras]"
	touch $(BIN)/imseg

demo: $(BIN)/imseg
	$(BIN)/imseg demo

test: $(BIN)/imseg
	$(BIN)/python -m pytest

# The wheel installed into a fresh venv outside the clone, used from another directory.
wheel-check: $(BIN)/imseg
	PYTHON=$(PYTHON) TORCH="$(TORCH)" bash .ci/wheel-check

lint: $(BIN)/imseg
	$(BIN)/ruff check src tests bench

bench: $(BIN)/imseg
	$(BIN)/python bench/run_all.py

clean-venv:
	rm -rf $(VENV)
