# One place for scripts and checks. Every target sets up .venv first (idempotent, see scripts/setup.sh).
VENV := .venv
PY := $(VENV)/bin/python
PKGS := mllmdr_core stream_server client_sdk training

.PHONY: setup demo test lint typecheck pytest bench demo-bundle protocol clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/mllmdr-server --demo

test: setup
	bash scripts/setup_vllm.sh  # separate venv for the real vLLM server test (~2 min once, ~1.7 GB)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -W error -q -ra

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

pytest: setup
	$(PY) -m pytest -W error -q -ra

bench: setup
	$(PY) bench/run_all.py

# the wire contract's generated files (JSON Schema, browser SDK types, docs/protocol.md) from protocol.py
protocol: setup
	$(PY) scripts/gen_protocol.py

demo-bundle: setup
	$(VENV)/bin/mllmdr-train demo-bundle

clean:
	rm -rf $(VENV) .venv-vllm .mypy_cache .pytest_cache .ruff_cache
