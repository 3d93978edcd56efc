# cotscope: `make demo` and `make test` set everything up themselves (venv, CPU torch, embedded model).
PY      := .venv/bin/python
RUN_DIR ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup models demo test test-fast figures bench clean

setup:
	@bash scripts/setup_env.sh

models: setup
	@$(PY) -m probes.cli setup-models

demo: models
	$(PY) -m probes.cli demo --run-dir $(RUN_DIR)

test: models
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: models
	$(PY) -m pytest -q -m "not slow" tests

figures: setup
	$(PY) -m figures $(RUN_DIR)

bench: models
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
