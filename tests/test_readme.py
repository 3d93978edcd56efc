"""The README's Python quickstart runs as written, with at most 3 imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_needs_at_most_three_imports():
    lines = [l for l in quickstart().splitlines() if re.match(r"\s*(import|from)\s", l)]
    assert 1 <= len(lines) <= 3, lines


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", quickstart()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "2"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs/quick/cot.gguf").stat().st_size > 1000
    assert (tmp_path / "runs/quick/cot.safetensors").is_file()
    assert r.stdout.strip()  # the steered generation printed something
