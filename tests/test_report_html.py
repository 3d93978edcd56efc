"""report.html of a small real run, opened in headless Chromium (Debian's ``chromium``; scripts/setup_env.sh installs
it as root): no console errors, every figure present and non-empty (images decoded, plotly figures drawn), every
number of summary.json in the page, and a screenshot written into the run directory.

The run: the demo's LLM stage on the embedded SmolLM2 (6 problems, 3 layers), the same store analysed again through
``cotscope analyse`` into its own folder (the CLI layout), and a 3-prompt injection sweep into ``sweeps/`` (not the
demo's folder), all through :func:`cotscope.stages.run_stages`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from chromium_cdp import Chromium, find_chromium

if find_chromium() is None and not os.environ.get("CI"):
    pytest.skip(
        "no chromium on PATH (scripts/setup_env.sh installs Debian's chromium as root)", allow_module_level=True
    )

SWEEP_FIGURES = ("injection_layers", "injection_strength", "injection_controls", "length_vs_accuracy")


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2):
    from cotscope.cli import main as cli
    from cotscope.stages import Stage, run_stages
    from cotscope.stages.intervention import run_demo_sweep
    from cotscope.stages.llm import llm_summary, run_llm_stage

    run_dir = tmp_path_factory.mktemp("report") / "run"

    def llm(ctx):
        return llm_summary(
            run_llm_stage(
                ctx.run_dir,
                smollm2,
                n_problems=6,
                layers=[0, 15, 29],
                positions=("last_prompt",),
                batch_size=12,
                n_perm=20,
                progress=False,
            )
        )

    def cli_analyse(ctx):
        assert (
            cli(["analyse", str(ctx.run_dir / "stores" / "llm"), "--n-perm", "20", "--out", str(ctx.run_dir / "mine")])
            == 0
        )

    def sweep(ctx):
        return run_demo_sweep(
            smollm2,
            None,
            ctx.run_dir / "directions" / "llm_mean_diff.safetensors",
            ctx.run_dir / "sweeps",
            n_prompts=3,
            budget=4,
            layers=(15,),
            lams=(0.5,),
            controls=("none", "random"),
            control_lams=(0.5,),
            progress=False,
        )

    summary = run_stages(
        run_dir,
        [
            Stage("llm", llm, required=True),
            Stage("cli_analyse", cli_analyse, needs=("llm",)),
            Stage("intervention", sweep, needs=("llm",)),
        ],
        {"n_problems": 6, "layers": [0, 15, 29]},
        title="cotscope report test run",
        commands=["pytest tests/test_report_html.py"],
    )
    return run_dir, summary


def _numbers(obj, skip=("report",)):
    """Every numeric leaf of a summary (bools are not numbers; markdown paragraphs are shown as text)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in skip:
                yield from _numbers(v, skip)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v, skip)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_figures_for_every_layout(run):
    run_dir, summary = run
    assert {k: v["status"] for k, v in summary["stages"].items()} == {
        "llm": "ok",
        "cli_analyse": "ok",
        "intervention": "ok",
        "figures": "ok",
    }
    names = {Path(p).name for p in summary["figures"]}
    for base in ("probe_accuracy", "spectrum", "pca_scatter"):  # the stage's analysis keeps the demo's names,
        assert {f"{base}.png", f"{base}_mine.png"} <= names  # the CLI's analysis in mine/ gets _mine
    assert {f"{n}_sweeps.png" for n in SWEEP_FIGURES} <= names  # sweep tables outside intervention/
    skipped = summary["figures_skipped"]
    assert skipped["crossmodel_cosine"].startswith("no stored file matches") and "attention_layer_step" in skipped
    assert not [r for r in skipped.values() if r.startswith("failed")]
    meta = json.loads((run_dir / "figures" / "spectrum_mine.meta.json").read_text())
    assert meta["sources"] == ["mine/analysis.json", "mine/mean_diff.safetensors"] and meta["instance"] == "mine"


def test_report_html_in_chromium(run):
    run_dir, summary = run
    html = run_dir / "report.html"
    text = html.read_text()
    assert text.count("* plotly.js v") == 1, "plotly.js must be inlined exactly once"
    assert "<script src=" not in text and "<link " not in text
    assert text.count('src="data:image/png;base64,') == len(list((run_dir / "figures").glob("*.png")))
    pngs = sorted(p.stem for p in (run_dir / "figures").glob("*.png"))
    with Chromium(width=1400, height=1000) as page:
        page.open(html.resolve().as_uri())
        imgs = page.evaluate(
            "Array.from(document.querySelectorAll('figure.card')).map(c => [c.dataset.fig, "
            "c.querySelector('img.fig-img').complete, c.querySelector('img.fig-img').naturalWidth])"
        )
        assert sorted(n for n, _, _ in imgs) == pngs
        assert all(ok and w > 100 for _, ok, w in imgs), imgs
        page.screenshot(run_dir / "report_screenshot.png")
        drawn = page.evaluate(
            "cotscopeReport.showAll('interactive').then(() => Array.from(document.querySelectorAll('.plotly-fig'))"
            ".map(d => [d.closest('figure').dataset.fig, !!d.querySelector('svg.main-svg, canvas'),"
            " d.getBoundingClientRect().height, (d.data || []).length]))"
        )
        assert sorted(n for n, *_ in drawn) == pngs  # every figure has its interactive twin
        assert all(svg and h > 200 and n_traces > 0 for _, svg, h, n_traces in drawn), drawn
        shown = page.evaluate(
            "cotscopeReport.showAll('static').then(() => document.querySelectorAll('img.fig-img:not([hidden])').length)"
        )
        assert shown == len(pngs)
        numbers = page.evaluate(
            "(() => { const s = document.getElementById('numbers').cloneNode(true);"
            " s.querySelector('#raw-summary').remove(); return s.textContent; })()"
        )
        assert page.errors == []
    from cotscope.report import fmt_number

    missing = [
        v for v in _numbers({k: v for k, v in summary.items() if k != "figures"}) if fmt_number(v) not in numbers
    ]
    assert not missing, f"numbers of summary.json not shown in the report's tables: {missing[:10]}"
    shot = (run_dir / "report_screenshot.png").read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000


def test_report_markdown(run):
    run_dir, summary = run
    md = (run_dir / "report.md").read_text()
    for name in ("probe_accuracy", "probe_accuracy_mine", "injection_layers_sweeps"):
        assert f"![{name}](figures/{name}.png)" in md
    assert (
        "Drawn from `mine/analysis.json`" in md and "## Provenance" in md and "pytest tests/test_report_html.py" in md
    )
    assert summary["intervention"]["title"] in md


def test_report_command_on_cli_only_runs(run, tmp_path):
    """`cotscope report` on runs made only with CLI commands: `analyse --out DIR` (no summary.json) and
    `analyse --run-dir RUN` (the CLI records itself in RUN/summary.json)."""
    from cotscope.cli import main as cli

    src, _ = run
    bare, logged = tmp_path / "bare", tmp_path / "logged"
    for d in (bare, logged):
        shutil.copytree(src / "stores" / "llm", d / "stores" / "llm")
    shutil.copytree(src / "mine", bare / "mine")
    assert cli(["report", str(bare)]) == 0
    assert sorted(p.name for p in (bare / "figures").glob("*.png")) == [
        "pca_scatter_mine.png",
        "probe_accuracy_mine.png",
        "spectrum_mine.png",
    ]
    html = (bare / "report.html").read_text()
    assert "recorded no commands" in html and "stores/llm" in html and "mine/mean_diff.safetensors" in html

    analyse = ["analyse", str(logged / "stores" / "llm"), "--n-perm", "20", "--run-dir", str(logged)]
    assert cli(analyse) == 0 and cli(["report", str(logged)]) == 0
    assert sorted(p.name for p in (logged / "figures").glob("*.png")) == [
        "pca_scatter.png",
        "probe_accuracy.png",
        "spectrum.png",
    ]
    html = (logged / "report.html").read_text()
    assert "cotscope analyse" in html and "CoT vs direct in the LLM" in html and "recorded no commands" not in html
    assert cli(["report", str(tmp_path / "nothing-here")]) == 2
