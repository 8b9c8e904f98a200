# Two commands do all set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# CPU torch first, pinned exactly: a looser pin pulls gigabytes of CUDA wheels.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,robot,onnx]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sage-distill demo --out out/demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) out
