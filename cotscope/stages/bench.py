"""Stage ``bench``: the benchmark harness on fixtures in the published layouts (rendered into the run directory).

Runs a model on the MathVista-testmini and ScienceQA-style fixtures (a few rendered items each): accuracy with a
Wilson 95% CI, breakdowns and response length per benchmark; with a direction, also the injected setting. This
shows the harness end to end; the numbers describe six toy items, not a benchmark score.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def bench_fixture_stage(
    run_dir: str | Path,
    lm: Any,
    *,
    benches: Sequence[str] = ("mathvista", "scienceqa"),
    max_new_tokens: int = 24,
    direction: str | Path | None = None,
    layer: int = 24,
    lam: float = 0.5,
    cutoff: int | float = 0.1,
) -> dict[str, Any]:
    from cotscope.analyses.bench.score import summarize_settings
    from cotscope.probes.bench.fixtures import BENCH_OF, write_fixtures
    from cotscope.probes.bench.run import InjectSpec, bench_rows, run_benchmark
    from cotscope.probes.bench.specs import BENCHMARKS

    run_dir = Path(run_dir)
    files = write_fixtures(run_dir / "bench" / "fixtures")
    out: dict[str, Any] = {"max_new_tokens": max_new_tokens, "files": {b: str(files[b]) for b in benches}}
    lines = []
    for b in benches:
        bench = BENCH_OF[b]
        settings = [("base", None)]
        if direction is not None and Path(direction).is_file():
            settings.append(("inject", InjectSpec(direction, [layer], lam, cutoff=cutoff)))
        tables = []
        for name, inj in settings:
            r = run_benchmark(
                lm,
                bench,
                files[b],
                run_dir / "bench" / b,
                setting=name,
                inject=inj,
                max_new_tokens=max_new_tokens,
                progress=False,
            )
            tables.append(r["table"])
        s = summarize_settings(
            [row for t in tables for row in bench_rows(t)], BENCHMARKS[bench].breakdowns, baseline="base"
        )
        out[b] = s
        base = s["base"]
        lines.append(
            f"- **{b}** ({bench} schema, {base['n']} items): accuracy {base['accuracy']:.2f} (95% CI "
            f"{base['ci_low']:.2f}–{base['ci_high']:.2f}), {base.get('mean_tokens', 0):.1f} tokens, no answer "
            f"extracted {base.get('no_answer', 0)}"
            + (f"; injected (L{layer}, λ={lam}): {s['inject']['accuracy']:.2f}" if "inject" in s else "")
            + "."
        )
    out["title"] = "Benchmark harness on the fixtures (published layouts; toy items)"
    out["report"] = (
        "The harness end to end on a few rendered items per benchmark, written in the published column "
        "layouts (`bench/fixtures`); put a real copy of the benchmark in their place with `cotscope eval "
        "MODEL --bench NAME --data PATH`.\n\n" + "\n".join(lines)
    )
    return out
