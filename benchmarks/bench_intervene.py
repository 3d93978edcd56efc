"""Cost of a sweep cell with per-row batched injection vs a naive loop, and the steering overhead.

Model: the embedded SmolLM2-135M. Prompts: ``--prompts`` direct-answer arithmetic questions (chat template,
~65 tokens). Grid: layers (8, 16, 24) × λ (0.3, 0.9) plus no injection = 7 cells per prompt. Every row
generates exactly ``--tokens`` greedy tokens (EOS not allowed to stop early), so all methods do the same work.

Sweep-cost methods (same rows, same tokens):

* ``sweep``         — cotscope: all rows of all prompts in one ``generate`` (per-row injection via nnsight),
                      positions ``first`` (the L2V-CoT rule);
* ``sweep-shared``  — the same with positions ``generated`` and the prompt prefix computed once per prompt;
* ``sweep-unshared``— positions ``generated`` without prefix sharing (the baseline of ``sweep-shared``);
* ``naive-hook``    — one HF ``generate`` per (prompt, layer, λ) at batch 1 with a plain forward hook;
* ``naive-nnsight`` — one cotscope ``inject_generate`` per (prompt, layer, λ) at batch 1.

Steering-overhead methods (one batch of all rows):

* ``hf-plain``      — HF ``generate``, no injection (baseline);
* ``hf-hook``       — HF ``generate`` with a per-row forward hook doing the same arithmetic;
* ``cs-unsteered``  — cotscope ``generate_steered`` with no injection (HF + its decoding processor);
* ``cs-steered``    — cotscope ``generate_steered`` with the grid's per-row injection (nnsight).

Round-robin over all methods for ``--rounds`` rounds after one warm-up round; medians are reported, so load
drift on a shared machine spreads over every method. Prints one table; ratios come from this one run.

    .venv/bin/python benchmarks/bench_intervene.py               # 3 rounds (several minutes on 2 busy cores)
    .venv/bin/python benchmarks/bench_intervene.py --rounds 1 --prompts 1 --tokens 6    # quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS, LAMS = (8, 16, 24), (0.3, 0.9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cotscope.probes.collect import encode_batch
    from cotscope.probes.intervene import RowSteer, generate_steered, inject_generate
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.sweep import direct_prompts

    lm = load_model("embedded:smollm2")
    k = args.tokens
    texts = [p.render(lm) for p in direct_prompts(generate_problems(args.prompts, seed=7, difficulties=("easy",)))]
    rng = np.random.default_rng(0)
    vec = {l: (rng.standard_normal(lm.hidden_size) * 10).astype(np.float32) for l in LAYERS}
    cells = [(l, lam) for l in LAYERS for lam in LAMS] + [None]
    rows_t = [t for t in texts for _ in cells]
    rows_s = [RowSteer.none() if c is None else RowSteer({c[0]: vec[c[0]]}, c[1]) for _ in texts for c in cells]
    n_rows, n_cells = len(rows_t), len(cells)

    def hook_generate(prompts, steers):
        enc = encode_batch(lm, prompts)
        handles = []
        for l in sorted({l for s in steers for l in s.vectors}):
            add = torch.stack(
                [
                    torch.as_tensor(s.lam * s.vectors[l]) if l in s.vectors else torch.zeros(lm.hidden_size)
                    for s in steers
                ]
            )
            on = torch.tensor([l in s.vectors for s in steers])
            calls = [0]

            first = enc["attention_mask"].shape[1] - enc["attention_mask"].sum(1)

            def hook(m, a, out, add=add, on=on, calls=calls, first=first):
                if calls[0] == 0:  # prompt pass: the first real token of each row
                    mask = torch.zeros(out.shape[:2], dtype=torch.bool)
                    mask[torch.arange(out.shape[0]), first] = True
                    mask &= on[:, None]
                else:  # every generated token
                    mask = on[:, None].expand(out.shape[0], out.shape[1])
                calls[0] += 1
                new = out + add[:, None]
                new = new * (out.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True))
                return torch.where(mask[..., None], new, out)

            handles.append(lm.layers()[l].register_forward_hook(hook))
        try:
            with torch.no_grad():
                lm.hf.generate(**enc, max_new_tokens=k, min_new_tokens=k, do_sample=False)
        finally:
            for h in handles:
                h.remove()

    def sweep(positions="first", share=False):
        return lambda: generate_steered(
            lm, rows_t, rows_s, positions=positions, budget=k, stop_at_eos=False, share_prefix=share
        )

    def naive_hook():
        for t, s in zip(rows_t, rows_s):
            hook_generate([t], [s])

    def naive_nnsight():
        for t, c in zip(rows_t, [c for _ in texts for c in cells]):
            if c is None:
                generate_steered(lm, [t], [None], budget=k, stop_at_eos=False)
            else:
                inject_generate(lm, [t], vec[c[0]], [c[0]], c[1], budget=k, stop_at_eos=False)

    def hf_plain():
        enc = encode_batch(lm, rows_t)
        with torch.no_grad():
            lm.hf.generate(**enc, max_new_tokens=k, min_new_tokens=k, do_sample=False)

    methods = {
        "sweep": sweep("first"),
        "sweep-unshared": sweep("generated", False),
        "sweep-shared": sweep("generated", True),
        "naive-hook": naive_hook,
        "naive-nnsight": naive_nnsight,
        "hf-plain": hf_plain,
        "hf-hook": lambda: hook_generate(rows_t, rows_s),
        "cs-unsteered": lambda: generate_steered(lm, rows_t, [None] * n_rows, budget=k, stop_at_eos=False),
        "cs-steered": sweep("first"),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    print(
        f"SmolLM2-135M, {args.prompts} prompts × {n_cells} cells = {n_rows} rows, {k} new tokens each, "
        f"{args.rounds} rounds (+1 warm-up), {torch.get_num_threads()} threads",
        flush=True,
    )
    for r in range(args.rounds + 1):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r > 0:
                times[name].append(dt)
        print(
            f"  round {r}{' (warm-up)' if r == 0 else ''}: "
            + " ".join(f"{m}={times[m][-1]:.1f}s" for m in methods if r > 0 and times[m]),
            flush=True,
        )
    med = {m: statistics.median(v) for m, v in times.items()}

    print(f"\n{'method':16s} {'median s':>9s} {'min':>7s} {'max':>7s} {'s/row':>7s} {'s/cell':>7s} {'ratio':>7s}")
    groups = [
        (
            "sweep cost (ratio vs naive-hook)",
            ["sweep", "sweep-unshared", "sweep-shared", "naive-hook", "naive-nnsight"],
            "naive-hook",
        ),
        ("steering overhead (ratio vs hf-plain)", ["hf-plain", "hf-hook", "cs-unsteered", "cs-steered"], "hf-plain"),
    ]
    for title, names, base in groups:
        print(f"-- {title}")
        for m in names:
            v = times[m]
            print(
                f"{m:16s} {med[m]:9.2f} {min(v):7.2f} {max(v):7.2f} {med[m] / n_rows:7.3f} "
                f"{med[m] / n_cells:7.2f} {med[m] / med[base]:7.3f}"
            )
    print("\nderived ratios (medians of this run):")
    print(
        f"  naive-hook / sweep                = {med['naive-hook'] / med['sweep']:.2f}x  (speed-up of batched per-row injection)"
    )
    print(f"  naive-nnsight / sweep             = {med['naive-nnsight'] / med['sweep']:.2f}x")
    print(f"  sweep-unshared / sweep-shared     = {med['sweep-unshared'] / med['sweep-shared']:.2f}x  (prefix sharing)")
    print(f"  cs-steered / hf-plain             = {med['cs-steered'] / med['hf-plain']:.3f}x  (target <= 1.05)")
    print(f"  cs-steered / hf-hook              = {med['cs-steered'] / med['hf-hook']:.3f}x  (nnsight vs a plain hook)")
    print(
        f"  cs-steered / cs-unsteered         = {med['cs-steered'] / med['cs-unsteered']:.3f}x  (nnsight injection alone)"
    )
    print(
        f"  cost per sweep cell ({args.prompts} prompts, {k} tokens): sweep {med['sweep'] / n_cells:.2f} s, "
        f"naive-hook {med['naive-hook'] / n_cells:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
