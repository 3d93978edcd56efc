"""Distributed overhead: 2 Ray workers × 1 torch thread against 1 process × 2 threads, same pairs, same store.

Model: the embedded SmolLM2-135M (30 layers, d = 576), all 30 layers, token rules last_prompt + answer_mean,
batch size 16, float32 storage. Both runs collect the same ``--pairs`` pairs (2 items each):

* ``baseline`` — ``collect_pairs`` in this process with ``torch.set_num_threads(2)``;
* ``ray``      — ``collect_distributed(workers=2)`` on a local Ray cluster (``ray.init(num_cpus=2)``), each actor
  one process with one torch thread; the wall time includes starting the actors, loading two model replicas
  and merging the parts (cluster start-up is excluded and printed separately).

Printed: wall seconds, items/s, the throughput ratio ray / baseline (target ≥ 0.9 from the issue, not asserted),
whether the two stores are byte-identical (they may differ: 2 threads vs 1 thread can change float summation
order in torch's CPU kernels; the test suite compares equal-thread runs), and the measured store bytes per
(item × layer × token rule), which the README's projection uses.

    .venv/bin/python benchmarks/bench_workers.py              # 512 pairs (the issue's size; ~10+ min on 2 cores)
    .venv/bin/python benchmarks/bench_workers.py --pairs 64   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def store_bytes(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args()

    import ray
    import torch

    import cotscope as cs
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.models.loading import load_model
    from cotscope.workers import collect_distributed

    job = cs.pairs(a.pairs, seed=0)
    kw = dict(positions=["last_prompt", "answer_mean"], batch_size=a.batch_size)
    tmp = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    try:
        torch.set_num_threads(2)
        t0 = time.perf_counter()
        lm = load_model("embedded:smollm2")
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = collect_pairs(lm, job, tmp / "one", progress=False, **kw)
        t_base = time.perf_counter() - t0
        del lm

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t0
        t0 = time.perf_counter()
        st = collect_distributed("embedded:smollm2", job, tmp / "ray", workers=2, progress=False, **kw)
        t_ray = time.perf_counter() - t0
        ray.shutdown()

        n = base.n_items
        identical = store_bytes(base.path) == store_bytes(st.path)
        max_abs = 0.0
        for layer in base.layers:
            for pos in base.positions:
                max_abs = max(max_abs, float(abs(base.get(pos, layer) - st.get(pos, layer)).max()))
        shard_bytes = sum(f.stat().st_size for f in base.path.glob("shard-*.safetensors"))
        per = shard_bytes / (n * len(base.layers) * len(base.positions))
        out = {
            "pairs": a.pairs,
            "items": n,
            "layers": len(base.layers),
            "d": base.hidden_size,
            "baseline_seconds": round(t_base, 2),
            "baseline_load_seconds": round(t_load, 2),
            "ray_init_seconds": round(t_init, 2),
            "ray_seconds": round(t_ray, 2),
            "ray_parts": st.worker_reports,
            "baseline_items_per_s": round(n / t_base, 2),
            "ray_items_per_s": round(n / t_ray, 2),
            "throughput_ratio": round(t_base / t_ray, 3),
            "stores_identical": identical,
            "max_abs_diff": max_abs,
            "store_bytes": shard_bytes,
            "bytes_per_item_layer_rule": round(per, 1),
            "bytes_per_item_layer_rule_over_d": round(per / base.hidden_size, 3),
        }
        print(f"{a.pairs} pairs ({n} items), SmolLM2 30 layers × d {base.hidden_size}, batch {a.batch_size}")
        print(
            f"  1 process × 2 threads : {t_base:7.1f} s  ({n / t_base:.2f} items/s; model load {t_load:.1f} s not counted)"
        )
        print(
            f"  2 Ray workers × 1 thr : {t_ray:7.1f} s  ({n / t_ray:.2f} items/s; incl. actor start, 2 model loads, "
            f"merge; ray.init {t_init:.1f} s not counted)"
        )
        for r in st.worker_reports:
            print(f"    part {r['part']}: {r['seconds']:.1f} s in pid {r['pid']}")
        print(f"  throughput ratio ray / baseline = {t_base / t_ray:.3f}   (issue target >= 0.9)")
        print(f"  stores byte-identical: {identical}   max |diff| = {max_abs:.3g}")
        print(
            f"  store: {shard_bytes / 1e6:.1f} MB = {per:.0f} B per item × layer × token rule "
            f"({per / base.hidden_size:.2f} × d)"
        )
        if a.json:
            a.json.write_text(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
