"""Runs made command by command: each CLI step records its summary fragment and command line in
``RUN/summary.json``, so ``cotscope figures RUN`` and ``cotscope report RUN`` work on them like on the demo.

>>> import tempfile, json, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = record_stage(run, "llm", {"n_pairs": 4}, "cotscope analyse …")
>>> json.loads((run / "summary.json").read_text())["stages"]["llm"]["status"]
'ok'
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".summary.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two commands finishing at once must not lose a fragment
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_stage(
    run_dir: str | Path, name: str, fragment: dict[str, Any] | None, command: str, seconds: float | None = None
) -> dict[str, Any]:
    """Merge one step's results into ``RUN/summary.json`` (atomically, under a lock); returns the summary."""
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.stages import environment

    run_dir = Path(run_dir)
    with _locked(run_dir):
        path = run_dir / SUMMARY_FILE
        s = (
            json.loads(path.read_text())
            if path.is_file()
            else {
                "title": f"cotscope run {run_dir.name}",
                "run_dir": str(run_dir),
                "config": {},
                "stages": {},
                "commands": [],
                "environment": environment(),
            }
        )
        if fragment is not None:
            s[name] = fragment
        s["stages"][name] = {"status": "ok", **({"seconds": round(seconds, 2)} if seconds is not None else {})}
        if command not in s["commands"]:
            s["commands"].append(command)
        write_json_atomic(path, s)
    return s
