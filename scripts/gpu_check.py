#!/usr/bin/env python
"""``make gpu-check``: does cotscope give the same answers on your GPUs as on the CPU in float32?

Loads the model twice: a reference on the CPU in float32, and the model under test with ``--device-map`` (default
``auto``: spread over every visible GPU by accelerate) in ``--dtype`` (default ``bfloat16``). Then it runs the three
things that touch layer outputs on both and compares them within tolerances derived from the dtype's unit roundoff
(:mod:`cotscope.probes.precision`, where the derivation and measured values are written down):

* collection: residuals at a spread of layers (``last_prompt`` and ``answer_mean``): relative L2 error per row
  ``<= 4 u sqrt(l + 1)``;
* injection during generation: the same steering (the float32 mean-difference direction of the collected pairs at
  the middle layer) with teacher-forced answers: ``|d log p| <= eps_L (|log p| + 1)``;
* attention capture: the first generated step's attention rows: total-variation distance ``<= 4 u sqrt(l + 1)``.

Prints the device of every layer, then a pass/fail table; exits 1 if any check fails.

    python scripts/gpu_check.py                                    # embedded SmolLM2, device_map=auto, bf16
    python scripts/gpu_check.py --model embedded:smolvlm           # the embedded reference VLM (with images)
    python scripts/gpu_check.py --model Qwen/Qwen2-VL-7B-Instruct  # any model load_model can load
    python scripts/gpu_check.py --device-map cpu                   # the same placement code on a CPU-only machine
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _layers(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n - 1]


def _stimuli(lm: Any, n_pairs: int) -> tuple[list, list, list | None]:
    """Pairs to collect, plus prompts (and images) for generation, text or visual as the model needs."""
    from cotscope.probes.attention import render_prompt
    from cotscope.probes.stimuli import generate_problems, make_pairs

    if lm.is_vlm:
        from cotscope.probes.stimuli.visual import generate_visual_items
        from cotscope.probes.stimuli.visual_pairs import make_visual_pairs

        items = generate_visual_items(n_pairs, seed=11, kinds=("expression", "counting"))
        pairs = make_visual_pairs(items)
        prompts = [render_prompt(lm, it.direct_prompt, True) for it in items]
        return pairs, prompts, [it.image for it in items]
    probs = generate_problems(n_pairs, seed=11)
    pairs = make_pairs(probs, "cue")
    prompts = [render_prompt(lm, p.question + " Answer directly.", False) for p in probs]
    return pairs, prompts, None


def run(ref: Any, test: Any, n_pairs: int, n_layers_checked: int) -> list[dict]:
    """All checks; one row per (check, layer) with the measured error and its tolerance."""
    import numpy as np

    from cotscope.probes.attention import CaptureRequest, capture_batch
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.evaluate import forced_answer
    from cotscope.probes.intervene import RowSteer, generate_steered
    from cotscope.probes.precision import attention_tolerance, logprob_tolerance, residual_tolerance

    dtype = str(test.dtype).replace("torch.", "")
    L = test.n_layers
    layers = _layers(L, n_layers_checked)
    pairs, prompts, images = _stimuli(ref, n_pairs)
    rows: list[dict] = []
    positions = ("last_prompt", "answer_mean") if not ref.is_vlm else ("last_prompt", "image_mean")
    with tempfile.TemporaryDirectory() as d:
        kw = dict(layers=layers, positions=positions, batch_size=8, progress=False)
        a = collect_pairs(ref, pairs, Path(d) / "ref", **kw)
        b = collect_pairs(test, pairs, Path(d) / "test", **kw)
        for p in positions:
            for l in layers:
                x, y = a.get(p, l), b.get(p, l)
                rel = float((np.linalg.norm(x - y, axis=1) / np.linalg.norm(x, axis=1)).max())
                rows.append(
                    {
                        "check": f"collect {p}",
                        "layer": l,
                        "error": rel,
                        "tol": residual_tolerance(dtype, l),
                        "what": "max relative L2 error",
                    }
                )
        mid = layers[len(layers) // 2]
        cot, direct = a.paired("last_prompt", mid)
        direction = (cot.mean(0) - direct.mean(0)).astype(np.float32)
    gold = [str(getattr(pr.problem, "answer", "")) for pr in pairs]
    fa = [forced_answer(ref.tokenizer, g, " The answer is {answer}.") for g in gold]
    steer = [RowSteer.none()] * len(prompts) + [RowSteer({mid: direction}, 4.0)] * len(prompts)
    kwg = dict(
        images=(images + images) if images else None,
        budget=0,
        forced=fa + fa,
        positions=("last_prompt", "generated"),
        share_prefix=False,
    )
    want = generate_steered(ref, prompts + prompts, steer, **kwg)
    got = generate_steered(test, prompts + prompts, steer, **kwg)
    for label, sl in (("inject none", slice(0, len(prompts))), (f"inject λ=4 at {mid}", slice(len(prompts), None))):
        worst, worst_tol, ratio = 0.0, 0.0, -1.0
        for g, w in zip(got[sl], want[sl]):
            for lg, lw in zip(g.forced_logprobs, w.forced_logprobs):
                tol = logprob_tolerance(dtype, L, lw)
                if abs(lg - lw) / tol > ratio:
                    worst, worst_tol, ratio = abs(lg - lw), tol, abs(lg - lw) / tol
        rows.append(
            {
                "check": label,
                "layer": L - 1,
                "error": worst,
                "tol": worst_tol,
                "what": "max |Δ log p| of forced answer tokens",
            }
        )
    reqs = [
        CaptureRequest(f"q{i}", pr, image=(images[i] if images else None))
        for i, pr in enumerate([p.problem.question for p in pairs])
    ]
    ra = capture_batch(ref, reqs, layers=layers, max_new_tokens=1)
    for switch in ("layers", "traced"):  # traced: the capture that also runs on NDIF (rows from the trace)
        rb = capture_batch(test, reqs, layers=layers, max_new_tokens=1, switch=switch)
        for k, l in enumerate(layers):
            tv = max(
                float(0.5 * np.abs(x["tensors"]["rows"][k] - y["tensors"]["rows"][k]).sum(-1).max())
                for x, y in zip(ra, rb)
            )
            rows.append(
                {
                    "check": "attention row" if switch == "layers" else "attention row (traced)",
                    "layer": l,
                    "error": tv,
                    "tol": attention_tolerance(dtype, l),
                    "what": "max total-variation distance",
                }
            )
    for r in rows:
        r["ok"] = bool(math.isfinite(r["error"]) and r["error"] <= r["tol"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default="embedded:smollm2", help="embedded:smollm2, embedded:smolvlm, a directory or a hub name"
    )
    ap.add_argument(
        "--device-map", default="auto", help="accelerate device map for the model under test (auto, cpu, cuda:0, …)"
    )
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--pairs", type=int, default=4, help="stimulus pairs (each gives two collected rows)")
    ap.add_argument("--layers", type=int, default=5, help="how many layers (evenly spread) to check")
    args = ap.parse_args(argv)

    import torch

    from cotscope.probes.models.loading import load_model

    t0 = time.perf_counter()
    print(f"cotscope gpu-check: {args.model}, device_map={args.device_map!r}, {args.dtype} against CPU float32")
    print(
        f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.device_count()} GPU)" if torch.cuda.is_available() else "")
    )
    ref = load_model(args.model, device="cpu", dtype="float32")
    test = load_model(args.model, dtype=args.dtype, device_map=args.device_map)
    devs = Counter(str(test.layer_device(i)) for i in range(test.n_layers))
    print(f"layer placement: {dict(devs)}; inputs on {test.device}")
    rows = run(ref, test, args.pairs, args.layers)
    print("\n| check | layer | measured | tolerance | result | measure |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['check']} | {r['layer']} | {r['error']:.3g} | {r['tol']:.3g} | {'PASS' if r['ok'] else 'FAIL'} "
            f"| {r['what']} |"
        )
    n_fail = sum(not r["ok"] for r in rows)
    print(
        f"\n{len(rows) - n_fail}/{len(rows)} checks passed in {time.perf_counter() - t0:.0f} s"
        + ("" if not n_fail else f"; {n_fail} FAILED")
    )
    return 1 if n_fail else 0


if __name__ == "__main__":
    raise SystemExit(main())
