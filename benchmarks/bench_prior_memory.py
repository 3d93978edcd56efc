"""Peak memory of streaming Δ = θ_reason − θ_VL (analyses.prior) against the full-state-dict approach.

The pair is SmolLM2-135M against a perturbed copy of itself saved in the Idefics2 layout
(``model.text_model.layers.*``, rank-8 LoRA-style deltas on q/v plus small noise everywhere, a fake
vision tensor). Each method runs in its own subprocess; we print peak RSS (``VmHWM``) above a
baseline subprocess that only imports the same libraries, the ``tracemalloc`` peak (numpy buffers),
wall time, and the ratio full / streaming. Both methods compute Δ for every language-model tensor
(module set ``full``) and write it to disk.

    .venv/bin/python benchmarks/bench_prior_memory.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
import cotscope.analyses.prior as prior
mode, reason, vl, out = sys.argv[1:5]
tracemalloc.start()
t0 = time.perf_counter()
if mode == "stream":
    prior.compute_prior(reason, vl, "full", out_path=out, spectrum=False, verbose=False, progress=False)
elif mode == "stream_spectrum":
    prior.compute_prior(reason, vl, "full", out_path=out, spectrum=True, n_perm=20, verbose=False, progress=False)
elif mode == "full_state_dict":
    a = load_file(reason + "/model.safetensors"); b = load_file(vl + "/model.safetensors")
    pairs, _ = prior.match_checkpoints(reason, vl, "full")
    delta = {{"delta." + p.canonical: a[p.reason_key] - b[p.vl_key] for p in pairs}}
    save_file(delta, out)
dt = time.perf_counter() - t0
cur, peak = tracemalloc.get_traced_memory()
# VmHWM is this process's own RSS high-water mark (ru_maxrss survives exec and would include the parent's)
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({{"mode": mode, "seconds": dt, "tracemalloc_peak": peak, "maxrss": hwm}}))
"""


def make_perturbed_copy(src: Path, dst: Path, rank: int = 8, noise: float = 1e-3, seed: int = 0) -> None:
    """Write SmolLM2's tensors under Idefics2 names with a LoRA-like delta (the benchmark's VL side)."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(seed)
    sd = load_file(str(src / "model.safetensors"))
    out = {}
    for k, v in sd.items():
        w = v.astype(np.float32)
        if k.endswith(("q_proj.weight", "v_proj.weight")):
            B = rng.normal(0, 0.02, (w.shape[0], rank)).astype(np.float32)
            A = rng.normal(0, 0.02, (rank, w.shape[1])).astype(np.float32)
            w = w + B @ A
        w = w + noise * rng.standard_normal(w.shape, dtype=np.float32) * float(np.std(w))
        out[k.replace("model.", "model.text_model.", 1)] = w
    out["model.vision_model.embeddings.patch_embedding.weight"] = rng.normal(size=(16, 3, 8, 8)).astype(np.float32)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dst / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({"model_type": "idefics2", "text_config": cfg}))


def run(mode: str, reason: Path, vl: Path, out: Path) -> dict:
    code = CHILD.format(root=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", code, mode, str(reason), str(vl), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="directory for the perturbed copy (kept); default: a temp dir")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cotscope.probes.models.embedded import smollm2_dir

    src = smollm2_dir()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_prior_"))
    try:
        vl = work / "smollm2_perturbed"
        if not (vl / "model.safetensors").is_file():
            make_perturbed_copy(src, vl)
        model_mb = (src / "model.safetensors").stat().st_size / 2**20
        base = run("baseline", src, vl, work / "none")
        rows = [
            run(m, src, vl, work / f"delta_{m}.safetensors") for m in ("stream", "stream_spectrum", "full_state_dict")
        ]
        print(
            f"SmolLM2-135M: {model_mb:.0f} MiB per checkpoint; largest tensor (embed_tokens) "
            f"{49152 * 576 * 4 / 2**20:.0f} MiB"
        )
        print(f"baseline subprocess (imports only): maxrss {base['maxrss'] / 2**20:.0f} MiB")
        print(f"{'method':<18}{'peak RSS - base (MiB)':>24}{'tracemalloc peak (MiB)':>25}{'seconds':>10}")
        for r in rows:
            print(
                f"{r['mode']:<18}{(r['maxrss'] - base['maxrss']) / 2**20:>24.0f}"
                f"{r['tracemalloc_peak'] / 2**20:>25.0f}{r['seconds']:>10.1f}"
            )
        s, f = rows[0], rows[2]
        print(
            f"ratio full-state-dict / streaming: peak RSS above baseline "
            f"{(f['maxrss'] - base['maxrss']) / max(1, s['maxrss'] - base['maxrss']):.1f}x, "
            f"tracemalloc {f['tracemalloc_peak'] / max(1, s['tracemalloc_peak']):.1f}x, "
            f"time {f['seconds'] / s['seconds']:.2f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
