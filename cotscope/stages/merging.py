"""Stage ``merging``: DRIFT's merging baselines, the DRIFT gradient rules and injection, scored on the same items.

One table, ``RUN/merging/merge_eval.csv`` (resumable; one row per setting × item), with the scoring of the
``intervention`` stage: the VLM answers each rendered item under a reasoning budget, then the gold answer is
teacher-forced and its log-probability recorded (plus greedy accuracy and response length). Settings:

* ``none`` — the VLM as it is (the baseline every gain is paired with);
* ``merge:<method>`` — task arithmetic, TIES, DARE, layer swap between θ_VL and θ_reason
  (:mod:`analyses.prior.merge`, applied in memory and undone by :func:`probes.merge.merged_weights`);
* ``drift:<rule>`` — the VLM after ``drift_steps`` fine-tuning steps on other rendered items with the DRIFT rule
  (``none`` = plain SFT; Δ normalised to the parameters as released), weights restored afterwards;
* ``inject:<cell>`` — the intervention stage's cells on the same items, copied from its sweep table when it ran.

Toy scale: on the embedded pair θ_reason is SmolLM2 and θ_VL is SmolLM2 plus the reference VLM's LoRA, so every
merge moves the language model back towards the LLM the VLM was built from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = {
    "cell_id": "str",
    "control": "str",
    "prompt_id": "str",
    "seed": "int",
    "gold": "str",
    "response": "json",
    "pred": "str",
    "correct": "bool",
    "n_tokens": "int",
    "gold_logprob": "float",
    "budget": "int",
}
KEY = ("cell_id", "prompt_id")
DEFAULT_MERGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("task_arithmetic", {"lam": 0.5}),
    ("ties", {"lam": 1.0, "density": 0.2}),
    ("dare", {"lam": 0.5, "drop": 0.9}),
    ("layer_swap", {}),
)


def _score(lm: Any, prompts: Sequence[Any], rendered: Sequence[str], budget: int) -> list[dict[str, Any]]:
    from cotscope.probes.evaluate import DEFAULT_TEMPLATE, extract_answer, forced_answer, is_correct
    from cotscope.probes.intervene import generate_steered

    forced = [forced_answer(lm.tokenizer, p.gold, DEFAULT_TEMPLATE) for p in prompts]
    res = generate_steered(
        lm,
        list(rendered),
        [None] * len(prompts),
        images=[p.image for p in prompts],
        budget=budget,
        forced=forced,
        share_prefix=False,
    )
    out = []
    for p, r in zip(prompts, res):
        pred = extract_answer(r.text)
        out.append(
            {
                "prompt_id": p.id,
                "gold": str(p.gold),
                "response": r.text,
                "pred": pred,
                "correct": is_correct(pred, p.gold, extracted=True),
                "n_tokens": r.n_tokens,
                "gold_logprob": r.gold_logprob,
            }
        )
    return out


def _drift_finetune(
    lm: Any, prior_path: str | Path, rule: str | None, *, steps: int, batch_size: int, lr: float, seed: int
) -> dict[str, Any]:
    """Train the prior's tensors of ``lm`` in place for ``steps`` AdamW steps with ``rule`` (caller restores)."""
    import torch

    from cotscope.probes.drift import _sft_example, log_gradient_alignment, prior_tensors
    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.probes.vision_latents import chat_prompt

    model = lm.hf
    torch.manual_seed(seed)
    items = generate_visual_items(steps * batch_size, seed=seed + 5000, kinds=("expression", "counting", "bars"))
    ex = [
        _sft_example(lm.processor, it.image, chat_prompt(lm.processor, it.direct_prompt), str(it.answer))
        for it in items
    ]
    batches = [{"examples": ex[i : i + batch_size]} for i in range(0, len(ex), batch_size)]
    deltas = prior_tensors(model, prior_path)
    for p in model.parameters():
        p.requires_grad_(False)
    params = dict(model.named_parameters())
    for n in deltas:
        params[n].requires_grad_(True)

    def loss_fn(m, batch):
        return torch.stack([m(**e).loss for e in batch["examples"]]).mean()

    rows = log_gradient_alignment(model, deltas, batches, steps, rule=rule, lr=lr, loss_fn=loss_fn, progress=False)
    model.eval()
    return {"loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"], "n_tensors": len(deltas)}


def merging_stage(
    run_dir: str | Path,
    summary: Mapping[str, Any] | None = None,
    *,
    vlm: Any = None,
    reason_dir: str | Path | None = None,
    vl_dir: str | Path | None = None,
    n_prompts: int = 8,
    seed: int = 0,
    budget: int = 12,
    merges: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_MERGES,
    drift_rules: Sequence[str | None] = (None, "absolute", "grad_norm", "adaptive"),
    drift_steps: int = 2,
    drift_batch: int = 2,
    drift_lr: float = 1e-4,
    prior_path: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every setting on the intervention stage's VLM items; return per-setting means and paired gains.

    Defaults: SmolLM2 (θ_reason) against the reference VLM (θ_VL); layer swap takes the upper half of the blocks
    from θ_reason; the prior for the DRIFT rules is ``RUN/prior/prior.safetensors`` (computed if absent).
    """
    import torch

    from cotscope.analyses.sweeps import SweepTable, paired_gains, read_table
    from cotscope.probes.merge import merged_weights
    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.probes.sweep import visual_prompts

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if reason_dir is None:
        from cotscope.probes.models.embedded import smollm2_dir

        reason_dir = smollm2_dir()
    if vl_dir is None:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir

        vl_dir = reference_vlm_dir()
    if vlm is None or isinstance(vlm, (str, Path)):
        from cotscope.probes.models.loading import load_model

        vlm = load_model(vlm or vl_dir)
    out_dir = run_dir / "merging"
    items = generate_visual_items(n_prompts, seed=seed + 2000, kinds=("expression",))  # the intervention items
    prompts = visual_prompts(items)
    rendered = [p.render(vlm) for p in prompts]
    n_layers = vlm.n_layers
    merges = [
        (
            m,
            dict(kw)
            if m != "layer_swap" or kw.get("swap_layers")
            else {**kw, "swap_layers": list(range(n_layers // 2, n_layers))},
        )
        for m, kw in merges
    ]
    prior = Path(prior_path) if prior_path is not None else run_dir / "prior" / "prior.safetensors"
    config = {
        "vlm": {k: v for k, v in vlm.provenance().items() if k != "source"},
        "reason": str(reason_dir),
        "items": [p.id for p in prompts],
        "budget": budget,
        "merges": merges,
        "drift": {
            "rules": [r or "none" for r in drift_rules],
            "steps": drift_steps,
            "batch": drift_batch,
            "lr": drift_lr,
            "normalize_delta_to_param": True,
        },
        "seed": seed,
    }
    table = SweepTable(out_dir / "merge_eval.csv", config, SCHEMA, KEY)
    done = {c for c, _ in table.done_keys()}
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    records: dict[str, Any] = {}
    c0 = time.process_time()

    def run_cell(cell: str, control: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        rows = _score(vlm, prompts, rendered, budget)
        table.append([{**r, "cell_id": cell, "control": control, "seed": seed, "budget": budget} for r in rows])
        timings[cell] = round(time.perf_counter() - t, 2)
        cpu[cell] = round(time.process_time() - c, 2)

    if "none" not in done:
        run_cell("none", "none")
    for method, kw in merges:
        cell = f"merge:{method}"
        if cell in done:
            continue
        t, c = time.perf_counter(), time.process_time()
        with merged_weights(vlm, method=method, reason_dir=reason_dir, vl_dir=vl_dir, seed=seed, **kw) as rec:
            records[cell] = {k: rec[k] for k in ("params", "n_tensors", "change_norm")}
            run_cell(cell, "merge")
        timings[cell] = round(time.perf_counter() - t, 2)
        cpu[cell] = round(time.process_time() - c, 2)
    todo_rules = [r for r in drift_rules if f"drift:{r or 'none'}" not in done]
    if todo_rules:
        if not prior.is_file():
            from cotscope.analyses.prior import run_prior_analysis

            run_prior_analysis(reason_dir, vl_dir, prior.parent, out_dtype="float16", progress=False)
        model = vlm.hf
        was_training = model.training
        grads = {n: p.requires_grad for n, p in model.named_parameters()}
        from cotscope.probes.drift import prior_tensors

        covered = list(prior_tensors(model, prior))
        named = dict(model.named_parameters())
        saved = {n: named[n].detach().clone() for n in covered}
        try:
            for rule in todo_rules:
                cell = f"drift:{rule or 'none'}"
                t, c = time.perf_counter(), time.process_time()
                records[cell] = _drift_finetune(
                    vlm, prior, rule, steps=drift_steps, batch_size=drift_batch, lr=drift_lr, seed=seed
                )
                run_cell(cell, "drift")
                timings[cell] = round(time.perf_counter() - t, 2)
                cpu[cell] = round(time.process_time() - c, 2)
                with torch.no_grad():
                    for n, v in saved.items():
                        named[n].copy_(v)
        finally:
            with torch.no_grad():
                for n, v in saved.items():
                    named[n].copy_(v)
                for n, p in model.named_parameters():
                    p.requires_grad_(grads[n])
                    p.grad = None
            model.train(was_training)
    rows = read_table(table.path)
    # injection on the same items: the intervention stage's VLM sweep (same prompts, budget and forced answer)
    sweep = run_dir / "intervention" / "sweep_vlm.csv"
    inject_note = None
    if sweep.is_file():
        srows = read_table(sweep)
        ids = {p.id for p in prompts}
        base_s = {r["prompt_id"]: r["gold_logprob"] for r in srows if r["cell_id"] == "none" and r["prompt_id"] in ids}
        base_m = {r["prompt_id"]: r["gold_logprob"] for r in rows if r["cell_id"] == "none"}
        common = set(base_s) & set(base_m)
        if common and srows[0]["budget"] == budget:
            diff = max(abs(base_s[k] - base_m[k]) for k in common)
            inject_note = {"table": str(sweep), "baseline_max_abs_diff": diff}
            for r in srows:
                if r["control"] == "real" and r["prompt_id"] in ids:
                    rows.append(
                        {
                            **{k: r[k] for k in SCHEMA if k in r},
                            "cell_id": f"inject:{r['cell_id']}",
                            "control": "inject",
                        }
                    )
    out: dict[str, Any] = {"table": str(table.path), "n_items": len(prompts), "budget": budget, "settings": {}}
    for metric in ("gold_logprob", "correct", "n_tokens"):
        for g in paired_gains(rows, metric, carry=("control",), method="bootstrap", n_boot=2000, seed=0):
            s = out["settings"].setdefault(g["cell_id"], {"control": g.get("control")})
            s[f"gain_{metric}"] = round(g["gain"], 4)
            s[f"gain_{metric}_ci"] = [round(g["ci_low"], 4), round(g["ci_high"], 4)]
    base = [r for r in rows if r["cell_id"] == "none"]
    out["baseline"] = {
        "gold_logprob": float(np.mean([r["gold_logprob"] for r in base])),
        "accuracy": float(np.mean([r["correct"] for r in base])),
        "n_tokens": float(np.mean([r["n_tokens"] for r in base])),
    }
    for cell, s in out["settings"].items():
        rs = [r for r in rows if r["cell_id"] == cell]
        s["accuracy"] = round(float(np.mean([r["correct"] for r in rs])), 4)
        s["gold_logprob"] = round(float(np.mean([r["gold_logprob"] for r in rs])), 4)
        if cell in records:
            s.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in records[cell].items()})
    out["injection_source"] = inject_note
    out["timings_s"] = timings
    out["cpu_seconds"] = {**cpu, "total": round(time.process_time() - c0, 1)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["title"] = "Merging baselines vs DRIFT rules vs injection (same items; toy scale)"
    out["report"] = merging_report(out)
    from cotscope.analyses.atomic import write_json_atomic

    write_json_atomic(out_dir / "merging.json", out)
    return out


def merging_report(s: Mapping[str, Any]) -> str:
    """A markdown table: one row per setting, Δ log p(gold) and Δ accuracy vs the unchanged VLM."""
    b = s["baseline"]
    lines = [
        f"{s['n_items']} rendered items (the intervention stage's VLM items), reasoning budget {s['budget']} "
        f"tokens, then the gold answer teacher-forced. Baseline (VLM as is): log p(gold) {b['gold_logprob']:.3f}, "
        f"accuracy {b['accuracy']:.2f}, {b['n_tokens']:.1f} tokens. Gains are paired by item with 95% bootstrap "
        "CIs. **Toy scale**: θ_reason is SmolLM2 and θ_VL is SmolLM2 + the reference VLM's LoRA, so every merge "
        "moves the language model back towards the LLM it was built from.",
        "",
        "| setting | Δ log p(gold) [95% CI] | Δ accuracy | accuracy | notes |",
        "|---|---|---|---|---|",
    ]
    order = sorted(s["settings"], key=lambda c: ({"merge": 0, "drift": 1, "inject": 2}.get(c.split(":")[0], 3), c))
    for c in order:
        r = s["settings"][c]
        ci = r.get("gain_gold_logprob_ci", [float("nan")] * 2)
        note = ""
        if "change_norm" in r:
            note = f"‖θ − θ_VL‖ = {r['change_norm']:.3g}"
        elif "loss_first" in r:
            note = f"train loss {r['loss_first']:.3f} → {r['loss_last']:.3f}"
        lines.append(
            f"| {c} | {r.get('gain_gold_logprob', float('nan')):+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
            f"{r.get('gain_correct', float('nan')):+.2f} | {r['accuracy']:.2f} | {note} |"
        )
    return "\n".join(lines)
