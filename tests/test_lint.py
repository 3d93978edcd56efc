"""The tree stays lint-clean and formatted (config: ``[tool.ruff]`` in pyproject.toml; fix with ``make format``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.fail("ruff is not installed: it is in the dev extra (pip install -e '.[dev]' or `make setup`)")


def test_ruff_check_passes():
    r = subprocess.run([*_ruff(), "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"ruff check found problems (fix: make format, then review):\n{r.stdout}{r.stderr}"


def test_ruff_format_is_applied():
    r = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, f"files not formatted (fix: make format):\n{r.stdout}{r.stderr}"
