# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
# GPU users: create .venv and install their CUDA build of torch first; it is kept (see README).
PYTHON ?= python3
VENV ?= .venv
# torch with its torchvision, so the models extra (smp, timm) installs and its tests run; pip takes
# the CUDA build, which runs on a CPU too. A CPU-only build: README, "Install".
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: demo test wheel-check lint bench clean-venv

# A venv whose torch has no torchvision goes without the models extra (its tests skip, and `make
# test` says so) rather than have pip replace that torch.
$(BIN)/imseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	if $(BIN)/python -c "import torchvision" 2>/dev/null; then extras=dev,models; \
	else extras=dev; fi; $(BIN)/python -m pip install -q -e ".[$$extras]"
	touch $(BIN)/imseg

demo: $(BIN)/imseg
	$(BIN)/imseg demo

test: $(BIN)/imseg
	@$(BIN)/python -c "import torchvision" 2>/dev/null || echo "note: this venv's torch has no \
	torchvision, so the encoder-model tests skip; make clean-venv test installs $(TORCH)"
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
