"""The orchestration layer's one protocol: a stage stores results under the run directory and returns a
summary fragment; :func:`run_stages` runs a list of stages, then draws every figure and writes the report.

The demo (:mod:`cotscope.demo`), recipes and the CLI all go through :func:`run_stages`, so a run made by
any of them has the same layout::

    RUN/summary.json   RUN/report.md   RUN/report.html   RUN/figures/
    RUN/stores/<name>  RUN/analysis/<name>.json  RUN/directions/<name>_<method>.safetensors  RUN/<stage>/…

>>> from cotscope.stages import Stage, run_stages
>>> def hello(ctx):                     # a stage: write results, return numbers for summary.json
...     (ctx.run_dir / "hello.txt").write_text("hi")
...     return {"greeting": "hi", "report": "Said hi."}
>>> import tempfile
>>> s = run_stages(tempfile.mkdtemp(), [Stage("hello", hello)], figures=False, report=False)
>>> s["hello"]["greeting"], s["stages"]["hello"]["status"]
('hi', 'ok')
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclasses.dataclass
class RunContext:
    """What a stage sees: the run directory, the run's configuration, the summary so far and shared models."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    _models: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def model(self, spec: Any, **kw: Any) -> Any:
        """``load_model(spec, **kw)``, loaded once per run and shared by the stages that ask for the same spec.

        Stages must leave a shared model as they found it (cotscope's hooks and kernel swaps are all
        undone in ``finally`` blocks).
        """
        from cotscope.probes.models.loading import LoadedModel, load_model

        if isinstance(spec, LoadedModel):
            return spec
        key = repr((str(spec), sorted(kw.items())))
        if key not in self._models:
            self._models[key] = load_model(spec, **kw)
        return self._models[key]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a run. ``fn(ctx)`` writes its results under ``ctx.run_dir`` and returns a summary fragment
    (numbers, plus optional ``title`` and markdown ``report`` for the report). A stage whose ``needs`` did not
    succeed is skipped; a failing ``required`` stage aborts the run, any other failure is recorded."""

    name: str
    fn: Callable[[RunContext], dict[str, Any] | None]
    required: bool = False
    needs: tuple[str, ...] = ()


def environment() -> dict[str, Any]:
    """Python, machine and library versions for the summary's provenance."""
    from cotscope.analyses.artifacts import library_versions

    return {"python": platform.python_version(), "machine": platform.machine(), "libraries": library_versions()}


def _run_one(stage: Stage, ctx: RunContext) -> None:
    statuses = ctx.summary["stages"]
    missing = [n for n in stage.needs if statuses.get(n, {}).get("status") != "ok"]
    if missing:
        statuses[stage.name] = {"status": "skipped", "error": f"needs stage(s) {missing}, which did not succeed"}
        log.warning("stage %s skipped: needs %s", stage.name, missing)
        return
    log.info("stage %s …", stage.name)
    t = time.perf_counter()
    try:
        out = stage.fn(ctx)
    except Exception as e:  # optional stages report their failure in the summary; required ones abort
        if stage.required:
            raise
        statuses[stage.name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        log.exception("stage %s failed", stage.name)
        return
    statuses[stage.name] = {"status": "ok", "seconds": round(time.perf_counter() - t, 2)}
    if out is not None:
        ctx.summary[stage.name] = out
    log.info("stage %s ok in %.1f s", stage.name, statuses[stage.name]["seconds"])


def run_stages(
    run_dir: str | Path,
    stages: Sequence[Stage],
    config: Mapping[str, Any] | None = None,
    *,
    title: str = "cotscope run",
    commands: Sequence[str] = (),
    figures: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Run ``stages`` in order into ``run_dir``; draw every figure whose inputs exist; write ``summary.json``
    and the reports. Returns the summary. Stages reuse stored results, so rerunning resumes."""
    from cotscope.analyses.atomic import write_json_atomic

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "title": title,
        "run_dir": str(run_dir),
        "config": dict(config or {}),
        "stages": {},
        "commands": list(commands),
        "environment": environment(),
    }
    ctx = RunContext(run_dir, summary["config"], summary)
    t0 = time.perf_counter()
    for st in stages:
        _run_one(st, ctx)
    ctx._models.clear()
    if figures:
        from cotscope.figures.__main__ import render_all

        def draw(c: RunContext) -> None:
            res = render_all(c.run_dir)
            c.summary["figures"] = list(res)
            c.summary["figures_skipped"] = {s.figure: s.reason for s in res.skipped}

        _run_one(Stage("figures", draw), ctx)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    if report:
        from cotscope.report import write_reports

        write_reports(run_dir, summary)
    log.info("run done in %.1f s → %s", summary["total_seconds"], run_dir / SUMMARY_FILE)
    return summary
