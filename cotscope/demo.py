"""`make demo`: the main job on the embedded defaults, into ``runs/demo/``.

Stages (each reuses stored results when they exist; see :mod:`cotscope.stages`):
``llm`` → ``llm_answer`` → ``llm_released`` → ``exports`` → ``crossmodel`` → ``intervention`` → ``attention`` →
``prior`` → ``reconstruction`` → ``merging`` → ``bench``; then every figure (PNG + PDF + HTML), ``summary.json``,
``report.md`` and ``report.html``. ``recipes/demo.toml`` lists the same stages in the same order.

>>> from cotscope.demo import demo_stages
>>> [s.name for s in demo_stages()][:3]
['llm', 'llm_answer', 'llm_released']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotscope.stages import RunContext, Stage, run_stages

EMBEDDED_LLM = "embedded:smollm2"
DEMO_DEFAULTS: dict[str, Any] = dict(
    # sized for ≤ 6 min on a quiet 2-core CPU (measured 2026-11-29: 491 s with 160 problems, 200 permutations, 8
    # sweep prompts and 48 released pairs; 382 s with 96 / 200 / 6 / 32; collection is most of it); the papers'
    # released L2V-CoT data has ~100 pairs; 100 permutations resolve p down to 0.01
    n_problems=80,
    batch_size=16,
    cutoff=0.1,
    n_perm=100,
    seed=0,
    # the issue-15 stages, sized to stay cheap on 2 CPU cores (each reuses the run's loaded models and stored
    # results): thought pairs (of the 104 bundled; families interleaved) and permutations of the released
    # reading, items per merging/DRIFT/injection setting (the first intervention items), tokens per bench item
    released_pairs=32,
    sweep_prompts=6,
    released_n_perm=100,
    merging_prompts=4,
    bench_tokens=16,
)


def _llm(ctx: RunContext) -> dict:
    from cotscope.stages.llm import llm_summary, run_llm_stage

    c = ctx.config
    return llm_summary(
        run_llm_stage(
            ctx.run_dir,
            ctx.model(EMBEDDED_LLM),
            n_problems=c["n_problems"],
            seed=c["seed"],
            batch_size=c["batch_size"],
            cutoff=c["cutoff"],
            n_perm=c["n_perm"],
        )
    )


def _answer_pairing(ctx: RunContext) -> dict:
    from cotscope.stages.llm import answer_pairing_summary, llm_summary, run_llm_stage

    c = ctx.config
    res = llm_summary(
        run_llm_stage(
            ctx.run_dir,
            ctx.model(EMBEDDED_LLM),
            n_problems=c["n_problems"],
            seed=c["seed"],
            batch_size=c["batch_size"],
            cutoff=c["cutoff"],
            n_perm=c["n_perm"],
            pairing="answer",
            position="answer_mean",
            name="llm_answer",
        )
    )
    return answer_pairing_summary(res)


def _released(ctx: RunContext) -> dict:
    from cotscope.stages.released import released_reading_stage

    c = ctx.config
    n_perm = int(c.get("released_n_perm", 100))
    return released_reading_stage(
        ctx.run_dir,
        ctx.model(EMBEDDED_LLM),
        ctx.summary,
        cutoff=c["cutoff"],
        n_perm=n_perm,
        n_perm_dispersion=n_perm,
        seed=c["seed"],
        batch_size=int(c.get("released_batch_size", 8)),
        limit=c.get("released_pairs"),
    )


def _exports(ctx: RunContext) -> dict:
    from cotscope.stages.exports import export_stage

    return export_stage(ctx.run_dir, target=EMBEDDED_LLM)


def _crossmodel(ctx: RunContext) -> dict:
    from cotscope.stages.crossmodel import crossmodel_summary, default_vlm_spec, run_vlm_stage

    c = ctx.config
    res = run_vlm_stage(
        ctx.run_dir,
        ctx.model(default_vlm_spec()),
        n_problems=c["n_problems"],
        seed=c["seed"],
        batch_size=c["batch_size"],
        n_perm=c["n_perm"],
    )
    return crossmodel_summary(res, cutoff=c["cutoff"])


def _intervention(ctx: RunContext) -> dict:
    from cotscope.stages.crossmodel import default_vlm_spec
    from cotscope.stages.intervention import run_demo_sweep

    c = ctx.config
    own = ctx.run_dir / "directions" / "vlm_image_mean_diff.safetensors"  # from the crossmodel stage, when it ran
    return run_demo_sweep(
        ctx.model(EMBEDDED_LLM),
        ctx.model(default_vlm_spec()),
        ctx.run_dir / "directions" / "llm_mean_diff.safetensors",
        ctx.run_dir / "intervention",
        n_prompts=int(c.get("sweep_prompts", 8)),
        seed=c["seed"],
        cutoff=c["cutoff"],
        target_own=own if own.is_file() else None,
    )


def _attention(ctx: RunContext) -> dict:
    from cotscope.stages.attention import attention_stage
    from cotscope.stages.crossmodel import default_vlm_spec

    return attention_stage(ctx.run_dir, ctx.summary, model=ctx.model(default_vlm_spec()), figures=False)


def _prior(ctx: RunContext) -> dict:
    from cotscope.stages.prior import prior_stage

    return prior_stage(ctx.run_dir, ctx.summary)


def _reconstruction(ctx: RunContext) -> dict:
    from cotscope.stages.reconstruction import reconstruction_stage

    return reconstruction_stage(ctx.run_dir, ctx.summary, seed=ctx.config["seed"])


def _merging(ctx: RunContext) -> dict:
    from cotscope.stages.crossmodel import default_vlm_spec
    from cotscope.stages.merging import merging_stage

    c = ctx.config
    return merging_stage(
        ctx.run_dir,
        ctx.summary,
        vlm=ctx.model(default_vlm_spec()),
        n_prompts=int(c.get("merging_prompts", 4)),
        seed=c["seed"],
    )


def _bench(ctx: RunContext) -> dict:
    from cotscope.stages.bench import bench_fixture_stage
    from cotscope.stages.crossmodel import default_vlm_spec

    return bench_fixture_stage(
        ctx.run_dir,
        ctx.model(default_vlm_spec()),
        max_new_tokens=int(ctx.config.get("bench_tokens", 16)),
    )


def demo_stages() -> list[Stage]:
    """The demo's stages. Only ``llm`` is required; the VLM stages use the shipped reference VLM
    (``embedded:smolvlm``), else the LLaVA-SmolLM2 stand-in; prior, reconstruction and merging need the reference
    VLM (merging scores on the reference VLM with SmolLM2 as θ_reason)."""
    return [
        Stage("llm", _llm, required=True),
        Stage("llm_answer", _answer_pairing),
        Stage("llm_released", _released),
        Stage("exports", _exports, needs=("llm",)),
        Stage("crossmodel", _crossmodel, needs=("llm",)),
        Stage("intervention", _intervention, needs=("llm",)),
        Stage("attention", _attention),
        Stage("prior", _prior),
        Stage("reconstruction", _reconstruction),
        Stage("merging", _merging),
        Stage("bench", _bench),
    ]


def run_demo(run_dir: str | Path = "runs/demo", **overrides: Any) -> dict[str, Any]:
    """Run every demo stage into ``run_dir`` (``overrides`` change :data:`DEMO_DEFAULTS`); returns the summary."""
    cfg = {**DEMO_DEFAULTS, **overrides}
    return run_stages(
        run_dir,
        demo_stages(),
        cfg,
        title="cotscope demo: chain-of-thought directions in SmolLM2 and the reference VLM",
        commands=["make demo", f"cotscope demo --run-dir {run_dir}"],
    )
