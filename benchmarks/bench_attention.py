"""Memory and time of attention capture during generation, selected layers vs all layers, as the prompt grows.

Model: the embedded SmolLM2-135M (30 layers × 9 heads; the language model of every reference VLM), loaded with
sdpa. Greedy generation of ``--new-tokens`` tokens from prompts of ``--lengths`` tokens. Configurations:

* ``sdpa``        — plain generation, no capture (the baseline of every ratio);
* ``sel-eager``   — cotscope capture of ``--layers`` (default 3), ``switch="layers"``: only those layers run eager;
* ``sel-rows``    — the same layers, ``switch="rows"``: their own kernel for the output, eager for the query row only;
* ``all-eager``   — cotscope capture of all 30 layers, all eager (query rows kept);
* ``all-rows``    — all 30 layers, ``switch="rows"``;
* ``hf-all``      — HF ``generate(output_attentions=True)`` on an all-eager model: keeps every full matrix.

Memory: each (configuration, length) runs in a fresh subprocess (allocator state does not leak between them), after a
short warm-up: peak RSS above the post-warm-up level is sampled every 2 ms during one call. Time is measured
separately, round-robin over the configurations in one process per length (median of ``--repeats``), so load
drift on a shared machine spreads over all of them. ``held`` is what the capture keeps after generation (query rows / HF matrices).
The ``sel-*`` children also verify that unrequested layers produced no attention weights at all (and, for
``sel-rows``, that no layer returned a full weight matrix).

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
CONFIGS = ("sdpa", "sel-eager", "sel-rows", "all-eager", "all-rows", "hf-all")
TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the annual budget, "
    "counting every red circle and blue square drawn on the whiteboard before lunch. "
)


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

    def __enter__(self) -> PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())


def _setup(length: int):
    import torch

    from cotscope.probes.models.loading import load_model

    torch.set_num_threads(int(os.environ.get("COTSCOPE_BENCH_THREADS", "1")))
    lm = load_model("embedded:smollm2", attn_implementation="sdpa")
    tok = lm.tokenizer
    ids = tok(TEXT * (length // 20 + 2), add_special_tokens=False, return_tensors="pt")["input_ids"][:, :length]
    assert ids.shape[1] == length, ids.shape
    with torch.no_grad():  # warm-up on a short prompt (allocators, kernels)
        lm.hf.generate(ids[:, :16], max_new_tokens=2, do_sample=False, pad_token_id=tok.eos_token_id)
    return lm, ids


def _runner(lm, ids, config: str, new_tokens: int, layers: list[int]):
    """A zero-argument callable running one generation of ``config``; returns ``(held_bytes, keep_alive)``."""
    import torch

    from cotscope.probes.attention import recording

    mask = torch.ones_like(ids)
    kw = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id
    )

    def run():
        with torch.no_grad():
            if config == "sdpa":
                lm.hf.generate(ids, attention_mask=mask, **kw)
                return 0, None
            if config == "hf-all":
                lm.hf.set_attn_implementation("eager")
                try:
                    out = lm.hf.generate(
                        ids, attention_mask=mask, output_attentions=True, return_dict_in_generate=True, **kw
                    )
                finally:
                    lm.hf.set_attn_implementation("sdpa")
                return sum(a.numel() * a.element_size() for step in out.attentions for a in step), out
            with recording(
                lm,
                layers=layers if config.startswith("sel") else None,
                switch="rows" if config.endswith("rows") else "layers",
            ) as rec:
                lm.hf.generate(ids, attention_mask=mask, **kw)
            return rec.held_bytes(), rec

    return run


def child_memory(config: str, length: int, new_tokens: int, layers: list[int]) -> dict:
    """Peak RSS above the post-warm-up level during one generation, in a fresh process; what the capture holds."""
    lm, ids = _setup(length)
    attn = [layer.self_attn for layer in lm.layers()]
    produced = {i: 0 for i in range(len(attn))}
    hooks = (
        [
            m.register_forward_hook(
                lambda _m, _a, out, i=i: produced.__setitem__(i, produced[i] + (out[1] is not None))
            )
            for i, m in enumerate(attn)
        ]
        if config.startswith("sel")
        else []
    )
    run = _runner(lm, ids, config, new_tokens, layers)
    base = _rss()
    with PeakSampler() as ps:
        held, keep = run()
    for h in hooks:
        h.remove()
    res = {"config": config, "length": length, "peak_mb": (ps.peak - base) / 2**20, "held_mb": held / 2**20}
    if config == "sel-eager":
        res["layers_with_weights"] = sorted(i for i, n in produced.items() if n)
        res["unrequested_hold_nothing"] = res["layers_with_weights"] == sorted(layers)
    if config == "sel-rows":  # no layer materialises T x T weights: outputs come from sdpa, rows are recomputed
        res["layers_with_weights"] = sorted(i for i, n in produced.items() if n)
        res["unrequested_hold_nothing"] = res["layers_with_weights"] == []
    return res


def child_time(configs: list[str], length: int, new_tokens: int, layers: list[int], repeats: int) -> dict:
    """Median wall time per configuration, round-robin in one process (load drift spreads over all of them)."""
    lm, ids = _setup(length)
    runs = {c: _runner(lm, ids, c, new_tokens, layers) for c in configs}
    for c in configs:  # one untimed call each
        runs[c]()
    times: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            t0 = time.perf_counter()
            runs[c]()
            times[c].append(time.perf_counter() - t0)
    return {"length": length, "time_s": {c: sorted(v)[len(v) // 2] for c, v in times.items()}}


def _child(args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(p.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"child {args} failed")
    return json.loads(line[7:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[5, 15, 25])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--hf-max-length",
        type=int,
        default=1024,
        help="skip hf-all above this length (it holds 30 full T×T matrices per prompt)",
    )
    ap.add_argument("--quick", action="store_true", help="lengths 128 and 512, one repeat")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per child (1: on a shared, oversubscribed machine 2 threads were 4-15x slower)",
    )
    ap.add_argument("--child-memory", nargs=2, metavar=("CONFIG", "LENGTH"), help=argparse.SUPPRESS)
    ap.add_argument("--child-time", nargs="+", metavar="LENGTH CONFIG", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_memory:
        print("RESULT " + json.dumps(child_memory(a.child_memory[0], int(a.child_memory[1]), a.new_tokens, a.layers)))
        return 0
    if a.child_time:
        print(
            "RESULT "
            + json.dumps(child_time(a.child_time[1:], int(a.child_time[0]), a.new_tokens, a.layers, a.repeats))
        )
        return 0
    if a.quick:
        a.lengths, a.repeats = [128, 512], 1
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        COTSCOPE_BENCH_THREADS=str(a.threads),
    )
    common = ["--new-tokens", str(a.new_tokens), "--repeats", str(a.repeats), "--layers", *map(str, a.layers)]
    rows: dict[tuple[int, str], dict] = {}
    for length in a.lengths:
        configs = [c for c in CONFIGS if not (c == "hf-all" and length > a.hf_max_length)]
        for config in configs:
            rows[(length, config)] = _child(["--child-memory", config, str(length), *common], env)
            print(f"  memory {config:10s} T={length:5d}", file=sys.stderr, flush=True)
        t = _child(["--child-time", str(length), *configs, *common], env)["time_s"]
        for config in configs:
            rows[(length, config)]["time_s"] = t[config]
        print(f"  time   T={length:5d}", file=sys.stderr, flush=True)
    print(
        f"\nAttention capture, SmolLM2-135M (30 layers x 9 heads), {a.new_tokens} new tokens, selected layers "
        f"{a.layers}, {a.threads} torch thread(s). time = median of {a.repeats} round-robin calls in one process; peak = RSS above the "
        "post-warm-up level during one call (fresh process); held = what the capture keeps\n"
    )
    print("| prompt T | config | time s | x sdpa | peak MB | held MB | unrequested layers hold nothing |")
    print("|---|---|---|---|---|---|---|")
    for length in a.lengths:
        base = rows[(length, "sdpa")]["time_s"]
        for config in CONFIGS:
            r = rows.get((length, config))
            if r is None:
                print(f"| {length} | {config} | skipped (> --hf-max-length {a.hf_max_length}) | | | | |")
                continue
            chk = {True: "yes", False: "NO"}.get(r.get("unrequested_hold_nothing"), "")
            print(
                f"| {length} | {config} | {r['time_s']:.2f} | {r['time_s'] / base:.2f} | {r['peak_mb']:.0f} | "
                f"{r['held_mb']:.2f} | {chk} |"
            )
    bad = [r for r in rows.values() if r.get("unrequested_hold_nothing") is False]
    if bad:
        print(f"\nFAILED: unrequested layers produced attention weights: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
