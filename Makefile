# Two entry points that set themselves up (venv + install, idempotent): `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENV := source scripts/env.sh &&
OUT ?= runs/tiny
CONFIG ?= configs/tiny.yaml

.PHONY: setup demo test lint fast-test clean

setup:
	@scripts/setup_env.sh

## The main job: WaltzRL on the embedded tiny world (builds the tiny agents on first use).
demo: setup
	$(ENV) $(VENV)/bin/waltz-ray train --config $(CONFIG) --out $(OUT)

## Lint, type-check and the whole test suite (slow tests included), CPU only.
test: setup lint
	$(ENV) $(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check waltz_ray tests benchmarks jobs
	$(VENV)/bin/ruff format --check waltz_ray tests benchmarks jobs
	$(VENV)/bin/mypy waltz_ray/core waltz_ray/types.py

## The quick loop while editing (under ~2 minutes): no Ray, no Serve, no vLLM engine, no slow runs. WALTZ_FORBID_RAY makes any test
## that would start Ray anyway fail with a message naming it (it then needs the `ray` marker).
fast-test: setup lint
	$(ENV) WALTZ_FORBID_RAY=1 $(PY) -m pytest -q -m "not slow and not ray and not serve and not vllm"

clean:
	rm -rf .cache runs .pytest_cache .mypy_cache .ruff_cache
