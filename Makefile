# cotscope: `make demo` and `make test` set everything up themselves (venv, CPU torch, embedded model).
PY      := .venv/bin/python
RUN_DIR ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup models demo test test-fast test-latest lock lint format figures report bench compat clean

setup:
	@bash scripts/setup_env.sh

models: setup
	@$(PY) -m cotscope setup-models

demo: models
	$(PY) -m cotscope demo --run-dir $(RUN_DIR)

test: models
	$(PY) -m pytest -q -p no:cacheprovider tests

# The newest versions pyproject.toml's ranges allow, in a separate venv (the lock is not touched).
test-latest:
	@VENV=.venv-latest COTSCOPE_LATEST=1 bash scripts/setup_env.sh
	.venv-latest/bin/python -m cotscope setup-models
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider tests

# Re-resolve requirements/lock.txt from pyproject.toml's ranges (review the diff, then `make test`).
lock: setup
	@$(PY) -m pip install -q "uv==0.13.9"
	.venv/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
	  -c requirements/torch.txt --upgrade -o requirements/lock.txt

# ruff (config in pyproject.toml); tests/test_lint.py runs the same check in the suite.
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

test-fast: models
	$(PY) -m pytest -q -m "not slow" tests

figures: setup
	$(PY) -m cotscope.figures $(RUN_DIR)

# Redraw the figures and write report.md + the self-contained report.html of a run (any run, not only the demo).
report: setup
	$(PY) -m cotscope report $(RUN_DIR)

# On a GPU machine: device_map="auto" + bf16 against CPU float32 (MODEL=... for another model).
gpu-check: models
	$(PY) scripts/gpu_check.py $(if $(MODEL),--model $(MODEL),)

# The VLM compatibility table: census of transformers' image-text-to-text families + the five checks per family
# on tiny models → docs/compatibility.md and the README block between the compat markers.
compat: models
	OMP_NUM_THREADS=1 $(PY) scripts/compat_table.py --census

bench: models
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
