"""NDIF simulation: payload bytes per request and time against a local trace, for collection, injection during
generation and attention capture (nnsight's ``remote="local"``, with cotscope's stricter module hiding).

Round-robin over the methods for ``--rounds`` rounds after one warm-up round; medians are reported, so load drift on
a shared machine spreads over every method. The simulation serialises each request (cotscope's backend serialises it
once more to record its size), deserialises it with local modules hidden, and runs it here: its extra time is the
client-side and server-side (de)serialisation cost, not the network. Printed, never asserted.

    .venv/bin/python benchmarks/bench_ndif_local.py                       # 3 rounds
    .venv/bin/python benchmarks/bench_ndif_local.py --rounds 1 --batch 4  # quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="rows per collection batch / generation call")
    ap.add_argument("--session", type=int, default=4, help="batches per request in the session variant")
    ap.add_argument("--tokens", type=int, default=8, help="generated tokens per row")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cotscope.probes.attention import CaptureRequest, capture_batch
    from cotscope.probes.collect import _reduce_batches, encode_batch, plan_items
    from cotscope.probes.intervene import RowSteer, generate_steered
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.remote import payload_log
    from cotscope.probes.stimuli import generate_problems, make_pairs

    lm = load_model("embedded:smollm2")
    items, _ = plan_items(lm, make_pairs(generate_problems(args.batch * args.session // 2, seed=0), "cue"))
    batches = []
    for k in range(args.session):
        b = items[k * args.batch : (k + 1) * args.batch]
        enc = encode_batch(lm, [it["text"] for it in b])
        batches.append((enc, torch.tensor([it["n_answer_tokens"] for it in b]), None))
    layers, pos = list(range(lm.n_layers)), ["last_prompt", "answer_mean"]
    prompts = [
        lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": p.question + " Answer directly."}], tokenize=False, add_generation_prompt=True
        )
        for p in generate_problems(max(args.batch // 4, 1), seed=1)
    ]
    prompts = [p for p in prompts for _ in range(4)][: args.batch]
    v = (np.random.default_rng(0).standard_normal(lm.hidden_size) * 4).astype(np.float32)
    rows = [
        RowSteer.none() if i % 4 == 0 else RowSteer({8 + 4 * (i % 4): v}, 0.5 * (i % 4)) for i in range(len(prompts))
    ]
    sizes: dict[str, list[dict]] = {}

    def collect(remote, group):
        def f():
            with payload_log() as sent:
                for g in range(0, len(batches), group):
                    _reduce_batches(lm, batches[g : g + group], layers, pos, False, remote)
            sizes.setdefault(f"collect {remote} x{group}", sent)

        return f

    def inject(remote):
        def f():
            with payload_log() as sent:
                generate_steered(
                    lm, prompts, rows, budget=args.tokens, stop_at_eos=False, share_prefix=False, remote=remote
                )
            sizes.setdefault(f"inject {remote}", sent)

        return f

    att_reqs = [CaptureRequest(f"q{i}", p.question) for i, p in enumerate(generate_problems(args.batch, seed=2))]
    att_layers = [4, 15, 29]

    def attention(remote):
        def f():
            with payload_log() as sent:
                capture_batch(
                    lm,
                    att_reqs,
                    layers=att_layers,
                    max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens,
                    switch="traced" if remote else "rows",
                    remote=remote,
                )
            sizes.setdefault(f"attention {remote}", sent)

        return f

    methods = {
        f"collect: local trace, {args.session} batches (baseline)": collect(False, 1),
        "collect: remote='local', 1 batch per request": collect("local", 1),
        f"collect: remote='local', {args.session} batches per session": collect("local", args.session),
        f"inject: local generate, {len(prompts)} rows x {args.tokens} tokens (baseline)": inject(False),
        "inject: remote='local', one request": inject("local"),
        f"attention: local switch='rows', {len(att_reqs)} rows x {args.tokens} steps x 3 layers (baseline)": attention(
            False
        ),
        "attention: remote='local' (switch='traced'), one request": attention("local"),
    }
    for f in methods.values():  # warm-up
        f()
    times = {k: [] for k in methods}
    for _ in range(args.rounds):
        for k, f in methods.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    keys = list(methods)
    first = {"collect": keys[0], "inject": keys[3], "attention": keys[5]}
    base = {k: med[first[k.split(":")[0]]] for k in keys}
    print(
        f"\nNDIF simulation on SmolLM2-135M (CPU, {args.threads} threads), median of {args.rounds} round-robin rounds:"
    )
    print("| method | median s | ratio vs local | requests | payload bytes per request (raw / zstd) |")
    print("|---|---|---|---|---|")
    size_keys = [
        "collect False x1",
        "collect local x1",
        f"collect local x{args.session}",
        "inject False",
        "inject local",
        "attention False",
        "attention local",
    ]
    for k, sk in zip(keys, size_keys):
        sent = sizes.get(sk, [])
        pay = ", ".join(f"{p['bytes']:,} / {p.get('bytes_zstd', 0):,}" for p in sent[:4]) or "(local: none)"
        print(f"| {k} | {med[k]:.2f} | {med[k] / base[k]:.3f} | {len(sent)} | {pay} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
