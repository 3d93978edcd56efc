"""Memory and time of attention capture during generation, selected layers vs all layers, as the prompt grows.

Model: the embedded SmolLM2-135M (30 layers × 9 heads; the language model of every reference VLM), loaded with
sdpa. Greedy generation of ``--new-tokens`` tokens from prompts of ``--lengths`` tokens. Configurations:

* ``sdpa``        — plain generation, no capture (the baseline of every ratio);
* ``sel-eager``   — cotscope capture of ``--layers`` (default 3): only those layers run eager, query rows kept;
* ``all-eager``   — cotscope capture of all 30 layers (all eager, query rows kept);
* ``hf-all``      — HF ``generate(output_attentions=True)`` on an all-eager model: keeps every full matrix.

Each (configuration, length) runs in a fresh subprocess (so allocator state does not leak between them), after a
short warm-up: peak RSS above the post-warm-up level is sampled every 2 ms during one call; time is the minimum
of ``--repeats`` further calls without the sampler. ``held`` is what the capture keeps after generation (query rows / HF matrices).
The ``sel-eager`` child also verifies that unrequested layers produced no attention weights at all.

    .venv/bin/python benchmarks/bench_attention.py                 # full table (a few minutes)
    .venv/bin/python benchmarks/bench_attention.py --quick         # 2 lengths, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ("sdpa", "sel-eager", "all-eager", "hf-all")
TEXT = ("The quick brown fox jumps over the lazy dog while the committee reviews the annual budget, "
        "counting every red circle and blue square drawn on the whiteboard before lunch. ")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """Resident set size of this process (cheap: one read of /proc/self/statm; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


class PeakSampler:
    """Samples this process's RSS every ``dt`` seconds in a thread; ``peak`` is the maximum seen."""

    def __init__(self, dt: float = 0.002) -> None:
        self.dt, self.peak, self._stop = dt, _rss(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.dt)

    def __enter__(self) -> "PeakSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())


def child(config: str, length: int, new_tokens: int, layers: list[int], repeats: int) -> dict:
    import torch

    from probes.attention import recording
    from probes.models.loading import load_model

    torch.set_num_threads(2)
    lm = load_model("embedded:smollm2", attn_implementation="sdpa")
    tok = lm.tokenizer
    ids = tok(TEXT * (length // 20 + 2), add_special_tokens=False, return_tensors="pt")["input_ids"][:, :length]
    assert ids.shape[1] == length, ids.shape
    mask = torch.ones_like(ids)
    if config == "hf-all":
        lm.hf.set_attn_implementation("eager")
    gen_kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
    n_layers = lm.n_layers
    attn = [layer.self_attn for layer in lm.layers()]
    produced: dict[int, int] = {i: 0 for i in range(n_layers)}

    def run() -> tuple[float, int, object]:
        t0 = time.perf_counter()
        with torch.no_grad():
            if config == "sdpa":
                lm.hf.generate(ids, attention_mask=mask, **gen_kw)
                return time.perf_counter() - t0, 0, None
            if config == "hf-all":
                out = lm.hf.generate(ids, attention_mask=mask, output_attentions=True, return_dict_in_generate=True,
                                     **gen_kw)
                held = sum(a.numel() * a.element_size() for step in out.attentions for a in step)
                return time.perf_counter() - t0, held, out
            chosen = layers if config == "sel-eager" else None
            with recording(lm, layers=chosen) as rec:
                lm.hf.generate(ids, attention_mask=mask, **gen_kw)
            return time.perf_counter() - t0, rec.held_bytes(), rec

    # warm-up on a short prompt (allocators, kernels), then baseline RSS
    with torch.no_grad():
        lm.hf.generate(ids[:, :16], attention_mask=mask[:, :16], max_new_tokens=2, do_sample=False,
                       pad_token_id=tok.eos_token_id)
    base = _rss()
    hooks = []
    if config == "sel-eager":
        hooks = [m.register_forward_hook(lambda _m, _a, out, i=i: produced.__setitem__(i, produced[i] + (out[1] is not None)))
                 for i, m in enumerate(attn)]
    with PeakSampler() as ps:
        t, held, obj = run()
    for h in hooks:
        h.remove()
    peak = ps.peak - base
    del obj
    times = [run()[0] for _ in range(repeats)]  # timed without the sampler thread (it competes for the GIL)
    res = {"config": config, "length": length, "time_s": min(times), "peak_mb": peak / 2**20, "held_mb": held / 2**20}
    if config == "sel-eager":
        res["layers_with_weights"] = sorted(i for i, n in produced.items() if n)
        res["unrequested_hold_nothing"] = res["layers_with_weights"] == sorted(layers)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[5, 15, 25])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hf-max-length", type=int, default=1024,
                    help="skip hf-all above this length (it holds 30 full T×T matrices per prompt)")
    ap.add_argument("--quick", action="store_true", help="lengths 128 and 512, one repeat")
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "LENGTH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(child(a.child[0], int(a.child[1]), a.new_tokens, a.layers, a.repeats)))
        return 0
    if a.quick:
        a.lengths, a.repeats = [128, 512], 1
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    rows = []
    for length in a.lengths:
        for config in CONFIGS:  # configurations interleaved per length, so drift spreads over all of them
            if config == "hf-all" and length > a.hf_max_length:
                rows.append({"config": config, "length": length, "skipped": f"> --hf-max-length {a.hf_max_length}"})
                continue
            cmd = [sys.executable, __file__, "--child", config, str(length), "--new-tokens", str(a.new_tokens),
                   "--repeats", str(a.repeats), "--layers", *map(str, a.layers)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(p.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"child {config} {length} failed")
            rows.append(json.loads(line[7:]))
            print(f"  {config:10s} T={length:5d} done", file=sys.stderr, flush=True)
    print(f"\nAttention capture, SmolLM2-135M (30 layers x 9 heads), {a.new_tokens} new tokens, selected layers "
          f"{a.layers}; time = min of {a.repeats}; peak = RSS above post-warm-up level; ratios vs sdpa (no capture)\n")
    print(f"| prompt T | config | time s | x sdpa | peak MB | held MB | unrequested layers hold nothing |")
    print("|---|---|---|---|---|---|---|")
    for length in a.lengths:
        base = next(r for r in rows if r["length"] == length and r["config"] == "sdpa")
        for r in (r for r in rows if r["length"] == length):
            if "skipped" in r:
                print(f"| {length} | {r['config']} | skipped ({r['skipped']}) | | | | |")
                continue
            chk = {True: "yes", False: "NO"}.get(r.get("unrequested_hold_nothing"), "")
            print(f"| {length} | {r['config']} | {r['time_s']:.2f} | {r['time_s'] / base['time_s']:.2f} | "
                  f"{r['peak_mb']:.0f} | {r['held_mb']:.2f} | {chk} |")
    bad = [r for r in rows if r.get("unrequested_hold_nothing") is False]
    if bad:
        print(f"\nFAILED: unrequested layers produced attention weights: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
