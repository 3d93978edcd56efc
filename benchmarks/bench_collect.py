"""Benchmark: collection overhead vs a bare backbone forward, and peak memory vs number of pairs.

Prints ratios measured in this run (round-robin repeats, medians). Not a pass/fail test. Every forward runs
without a KV cache (a single forward never reads it; collection turns it off, which also keeps its memory flat).
Peak memory is measured in a fresh process per pair count (``--pairs``; the target is 2,048 within 5% of 256).

    .venv/bin/python benchmarks/bench_collect.py [--batch 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timing(batch: int, rounds: int) -> dict:
    import torch

    from cotscope.probes.collect import _reduce_batch, encode_batch, plan_items
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.stimuli import generate_problems, make_pairs

    torch.set_num_threads(2)
    lm = load_model("embedded:smollm2")
    pairs = make_pairs(generate_problems(batch // 2, seed=0), "cue", with_answers=False)
    items, _ = plan_items(lm, pairs)
    enc = encode_batch(lm, [it["text"] for it in items])
    n_ans = torch.zeros(len(items), dtype=torch.long)
    layers = list(range(lm.n_layers))

    def bare():  # no KV cache: one forward never reads it (collection turns it off too)
        with torch.no_grad():
            lm.hf.model(**enc, use_cache=False)

    def bare_full():
        with torch.no_grad():
            lm.hf(**enc, use_cache=False)

    def cotscope():
        _reduce_batch(lm, enc, layers, ["last_prompt"], n_ans, None, False)

    def hf_hidden():
        with torch.no_grad():
            out = lm.hf.model(**enc, output_hidden_states=True, use_cache=False)
            torch.stack([h[:, -1] for h in out.hidden_states[1:]], 1)

    methods = {
        "bare backbone forward (baseline)": bare,
        "full forward incl. lm_head": bare_full,
        "HF output_hidden_states": hf_hidden,
        "cotscope nnsight collect (30 layers, stop)": cotscope,
    }
    for f in methods.values():  # warm-up
        f()
        f()
    times = {k: [] for k in methods}
    for _ in range(rounds):
        for k, f in methods.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["bare backbone forward (baseline)"])
    n_tok = int(enc["attention_mask"].sum())
    return {
        "batch": len(items),
        "tokens": n_tok,
        "padded_shape": list(enc["input_ids"].shape),
        "rows": {
            k: {
                "median_ms": 1000 * statistics.median(v),
                "ratio": statistics.median(v) / base,
                "tokens_per_s": n_tok / statistics.median(v),
            }
            for k, v in times.items()
        },
    }


def memory_child(n_pairs: int) -> None:
    import torch

    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.stimuli import generate_problems, make_pairs

    torch.set_num_threads(2)
    lm = load_model("embedded:smollm2")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        collect_pairs(
            lm,
            make_pairs(generate_problems(n_pairs, seed=1), "cue"),
            d,
            positions=("last_prompt",),
            batch_size=32,
            progress=False,
        )
        dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"n_pairs": n_pairs, "peak_rss_mb": after / 1024, "model_loaded_rss_mb": before / 1024, "seconds": dt}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", default="256,2048")
    ap.add_argument("--child", type=int, default=0)
    a = ap.parse_args()
    if a.child:
        memory_child(a.child)
        return
    res = timing(a.batch, a.rounds)
    print(
        f"\nCollection cost at batch {res['batch']} ({res['padded_shape']} padded, {res['tokens']} real tokens), "
        f"median of {a.rounds} round-robin rounds:"
    )
    print("| method | median ms | ratio vs bare backbone | tokens/s |\n|---|---|---|---|")
    for k, r in res["rows"].items():
        print(f"| {k} | {r['median_ms']:.0f} | {r['ratio']:.3f} | {r['tokens_per_s']:.0f} |")
    print("\nPeak memory as the number of pairs grows (fresh process each; streaming to disk):")
    print("| pairs | peak RSS MB | RSS after model load MB | seconds |\n|---|---|---|---|")
    for n in [int(x) for x in a.pairs.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n} | {r['peak_rss_mb']:.0f} | {r['model_loaded_rss_mb']:.0f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
