# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when it
# is missing and installs the package with every extra; pip's wheel cache keeps rebuilds away.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp without the multimodal library, and without its AMX kernels: built natively on a CPU
# with AMX (Sapphire Rapids and later), llama-cpp-python 0.3.36's AMX matmul segfaults on a batch
# under a grammar (a tool call); AVX-512 and AVX2 stay on.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

.PHONY: install test demo bench lint clean system-deps chaos proto docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,all]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples docs
	$(BIN)/mypy --strict src

# The whole suite, then again with every stream and server on a Redis event log (a redis-server
# of the suite's own): the two backends must read the same.
test: lint system-deps
	$(BIN)/pytest -q
	$(BIN)/pytest -q -m "not e2e" --log-backend redis

# Binaries the tests use, installed when missing: redis-server (the Redis event-log tests start
# their own from it), ss from iproute2 (the chaos checks read the server's socket memory), and
# Node.js with npm (the AI SDK's own client reads the UI message stream; tests/js pins it), and
# espeak-ng (tokenwire.consumers.speech's text-to-speech engine).
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@command -v ss >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }

# The chaos checks at full size (minutes): one line per check with its figures.
chaos: $(STAMP)
	TOKENWIRE_CHAOS_SCALE=10 $(BIN)/pytest -q -s -o timeout=1800 -p no:randomly tests/test_chaos.py 2>&1 | grep -oE "chaos: .*|[0-9]+ (passed|failed).*"

# The gRPC modules generated from src/tokenwire/grpc/tokenwire.proto (committed; a test checks they are current).
proto: $(STAMP)
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. tokenwire/grpc/tokenwire.proto

# The documentation site into site/ (strict; the suite builds it too, tests/test_docs.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: $(STAMP)
	$(BIN)/tokenwire chat "Write one sentence about rivers." --max-tokens 96 --seed 7

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/providers.py
	$(BIN)/python bench/local_model.py
	$(BIN)/python bench/tools.py
	$(BIN)/python bench/sse.py
	$(BIN)/python bench/server_memory.py
	$(BIN)/python bench/redis_log.py
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/linear.py
	$(BIN)/python bench/wire_formats.py
	$(BIN)/python bench/telemetry.py
	$(BIN)/python bench/transports.py
	$(BIN)/python bench/speech.py
	$(BIN)/python bench/model_quality.py
	$(BIN)/python bench/adapters.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
