"""Activation store v2 at scale: streaming analysis memory and time, writing cost, bf16, verification, v1.

Writes a synthetic store of ``--pairs`` pairs × ``--layers`` layers × ``--d`` dims (float32; defaults
20,000 × 30 × 576 ≈ 2.8 GB for one token rule) with a planted CoT direction per layer, then measures,
each measurement in a fresh subprocess (``--threads``, default 1) (peak RSS = its ``VmHWM``):

1. one sequential read of every shard file (cold page cache via ``posix_fadvise(DONTNEED)``, and warm);
2. the I/O ``analyse_store`` does: all 30 layer slices read one at a time (``paired``), with first-read
   sha256 verification and with ``trust=True``: the verification cost;
3. ``analyse_store`` itself: wall time (I/O and compute split), peak RSS, recovery of the planted direction;
4. bf16 storage: size and slice-read time against float32, cos(direction from bf16, from float32);
5. store format v1 with the pre-v2 analysis (kept in tests/store_oracle.py) against v2, at
   ``--v1-pairs`` (default a quarter of ``--pairs``: v1 loads every layer, so its memory is extrapolated);
6. writing ``--small-shards`` small shards: manifest + index cost against the array writes, v2 and v1.

Ratios are measured side by side in this run and printed; nothing is asserted. Disk: about 2.3× the
store size under ``--dir`` (deleted afterwards unless ``--keep``). Run it smaller with e.g.
``--pairs 2000 --small-shards 500``.

    .venv/bin/python benchmarks/bench_store_scale.py [--pairs 20000] [--layers 30] [--d 576] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}
ENV.pop("COTSCOPE_TRUST_STORE", None)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
arg = json.loads(sys.argv[3])

def hwm():
    return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]

import scipy.linalg, sklearn.linear_model, sklearn.decomposition, sklearn.pipeline   # imports are not timed
import store_oracle
from cotscope.analyses import layer_sweep
from cotscope.analyses.io import store as _store
base_rss = hwm()
out = {{"mode": mode}}
t0 = time.perf_counter()
if mode in ("io", "io_trusted"):
    from cotscope.analyses.io.store import ActivationStore
    from cotscope.analyses.io import verify
    st = ActivationStore(path, trust=mode == "io_trusted")
    n, d = st.n_pairs, st.hidden_size
    buf = (np.empty((n, d), np.float32), np.empty((n, d), np.float32))
    for l in st.layers:
        st.paired(arg["position"], l, out=buf)
    out["verify_seconds"] = verify.STATS["seconds"]
    out["verify_bytes"] = verify.STATS["bytes"]
elif mode == "analyse":
    from cotscope.analyses.io.store import ActivationStore
    from cotscope.analyses import layer_sweep
    from cotscope.analyses.io import verify
    st = ActivationStore(path)
    io_s = [0.0]
    real = st.paired
    def timed(*a, **k):
        t = time.perf_counter(); r = real(*a, **k); io_s[0] += time.perf_counter() - t; return r
    st.paired = timed
    comp_s = [0.0]
    real_layer = layer_sweep.analyse_layer
    def timed_layer(*a, **k):
        t = time.perf_counter(); r = real_layer(*a, **k); comp_s[0] += time.perf_counter() - t; return r
    layer_sweep.analyse_layer = timed_layer
    res = layer_sweep.analyse_store(st, arg["position"], n_perm=arg["n_perm"], progress=False).to_private_dict()
    out["io_seconds"] = io_s[0]
    out["compute_seconds"] = comp_s[0]
    # the floor of any analysis that needs the d×d scatter (LAT, the dispersion null): one Xᵀ X per layer
    X = np.random.default_rng(0).standard_normal((st.n_pairs, st.hidden_size))
    t = time.perf_counter(); X.T @ X; out["scatter_seconds_per_layer"] = time.perf_counter() - t
    out["verify_seconds"] = verify.STATS["seconds"]
    planted = np.load(arg["planted"])
    li = {{l: i for i, l in enumerate(st.layers)}}
    cos = lambda a, b: float(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b))
    out["cos_mean_diff"] = [cos(v, planted[li[l]]) for l, v in res["_directions"]["mean_diff"].items()]
    out["cos_lat"] = [cos(v, planted[li[l]]) for l, v in res["_directions"]["lat"].items()]
    out["probe_test_acc"] = [r["probe"]["test_accuracy"] for r in res["layers"].values()]
elif mode == "analyse_v1":
    import store_oracle as O
    st = O.V1Store(path)
    res = O.old_analyse_store(st, arg["position"], n_perm=arg["n_perm"], progress=False)
    planted = np.load(arg["planted"])
    li = {{l: i for i, l in enumerate(st.layers)}}
    cos = lambda a, b: float(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b))
    out["cos_mean_diff"] = [cos(v, planted[li[l]]) for l, v in res["_directions"]["mean_diff"].items()]
elif mode == "directions":
    from cotscope.analyses.io.store import ActivationStore
    from cotscope.analyses.streaming import PairMoments, lat_flips
    from cotscope.analyses.directions import lat_from_moments
    st = ActivationStore(path, trust=True)
    md, lat = {{}}, {{}}
    for l in st.layers:
        m = PairMoments(st.hidden_size, lat_flips=lat_flips(st.n_pairs, 0))
        for _, c, dd in st.iter_pairs(arg["position"], l):
            m.update(c, dd)
        md[l] = m.mean_difference().tolist()
        lat[l] = lat_from_moments(m, lambda: ((c, dd) for _, c, dd in st.iter_pairs(arg["position"], l))).direction.tolist()
    out["mean_diff"], out["lat"] = md, lat
out["seconds"] = time.perf_counter() - t0
out["peak_rss"] = hwm()
out["base_rss"] = base_rss
print("RESULT " + json.dumps(out))
"""


def child(mode: str, path: Path, **arg) -> dict:
    code = CHILD.format(tests=str(ROOT / "tests"))
    r = subprocess.run(
        [sys.executable, "-c", code, mode, str(path), json.dumps(arg)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    line = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"child {mode} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(line[0][7:])


def drop_cache(path: Path) -> None:
    """Evict a store's files from the page cache (no root needed: fadvise on clean pages)."""
    for f in path.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def sequential_read(path: Path) -> tuple[float, int]:
    buf = bytearray(1 << 22)
    t0 = time.perf_counter()
    total = 0
    for f in sorted(path.glob("shard-*")):
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return time.perf_counter() - t0, total


def planted_directions(layers: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((layers, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def shard_data(k: int, rows: int, layers: int, d: int, planted: np.ndarray, shift: float, seed: int) -> np.ndarray:
    """Rows of shard ``k`` (CoT, direct alternating; ``rows`` even): pairs share a base, CoT adds the planted shift."""
    rng = np.random.default_rng([seed, k])
    n_p = rows // 2
    base = rng.standard_normal((n_p, layers, d), dtype=np.float32)
    X = np.empty((rows, layers, d), np.float32)
    X[0::2] = (
        base + 0.5 * rng.standard_normal((n_p, layers, d), dtype=np.float32) + (shift * planted).astype(np.float32)
    )
    X[1::2] = base + 0.5 * rng.standard_normal((n_p, layers, d), dtype=np.float32)
    return X


def write_synthetic(
    path: Path,
    n_pairs: int,
    layers: int,
    d: int,
    rows_per_shard: int,
    planted: np.ndarray,
    dtype: str = "float32",
    seed: int = 0,
    shift: float = 1.5,
    v1: bool = False,
    timing: bool = False,
) -> dict:
    """Write a store shard by shard (data generated per shard; generation is not timed)."""
    from cotscope.analyses.io import resumable
    from cotscope.analyses.io.store import StoreWriter

    n = 2 * n_pairs
    items = [{"row": i, "pair_id": i // 2, "label": 1 - i % 2} for i in range(n)]
    cfg = {
        "model": {
            "model_id": "synthetic",
            "revision": "none",
            "model_type": "toy",
            "n_layers": layers,
            "hidden_size": d,
        },
        "layers": list(range(layers)),
        "positions": ["last_prompt"],
        "stimulus_hash": "synthetic",
        "pairings": ["cue"],
        "batch_size": rows_per_shard,
    }
    t = {"array": 0.0, "index": 0.0, "manifest": 0.0, "total_write": 0.0}
    real_append = resumable.UnitLog.append
    real_header = resumable.Output.write_header

    def timed_append(self, *a, **k):
        t0 = time.perf_counter()
        r = real_append(self, *a, **k)
        t["index"] += time.perf_counter() - t0
        return r

    def timed_header(self):
        t0 = time.perf_counter()
        real_header(self)
        t["manifest"] += time.perf_counter() - t0

    if v1:
        from store_oracle import V1StoreWriter

        w = V1StoreWriter(path, cfg, items)
        for k in range(0, n, rows_per_shard):
            X = shard_data(k // rows_per_shard, min(rows_per_shard, n - k), layers, d, planted, shift, seed)
            t0 = time.perf_counter()
            w.write_shard(k // rows_per_shard, np.arange(k, k + len(X)), {"last_prompt": X})
            t["total_write"] += time.perf_counter() - t0
        w.finish()
        return t
    resumable.UnitLog.append, resumable.Output.write_header = timed_append, timed_header
    try:
        t0 = time.perf_counter()
        w = StoreWriter(path, cfg, items, dtype=dtype)
        t["total_write"] += time.perf_counter() - t0
        for b in w.todo():
            a, e = w.batch_rows(b)
            X = shard_data(b, e - a, layers, d, planted, shift, seed)
            t0 = time.perf_counter()
            w.write_shard(b, np.arange(a, e), {"last_prompt": X})
            t["total_write"] += time.perf_counter() - t0
        t["manifest_create"] = t["manifest"]
        t0 = time.perf_counter()
        w.finish()
        t["finish"] = time.perf_counter() - t0
        t["total_write"] += t["finish"]
    finally:
        resumable.UnitLog.append, resumable.Output.write_header = real_append, real_header
    t["array"] = t["total_write"] - t["index"] - t["manifest_create"] - t["finish"]
    return t


def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("shard-*"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--rows-per-shard", type=int, default=32, help="rows per shard (= collection batch size)")
    ap.add_argument("--v1-pairs", type=int, default=None, help="size of the v1 comparison (default pairs/4)")
    ap.add_argument("--small-shards", type=int, default=5000, help="shards in the writing benchmark")
    ap.add_argument("--n-perm", type=int, default=200)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of the measuring processes")
    ap.add_argument(
        "--skip",
        default="",
        help="comma list of sections to skip: io (the big store; implies analyse,bf16), analyse, bf16, v1, write",
    )
    args = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        ENV[k] = str(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    if "io" in skip:
        skip |= {"analyse", "bf16"}
    root = Path(tempfile.mkdtemp(prefix="cotscope-bench-store-", dir=args.dir))
    planted = planted_directions(args.layers, args.d, seed=1)
    np.save(root / "planted.npy", planted)
    P, L, d = args.pairs, args.layers, args.d
    report: dict = {"config": vars(args) | {"dir": str(root)}}
    print(
        f"store: {P} pairs x {L} layers x d={d}, {args.rows_per_shard} rows/shard "
        f"({-(-2 * P // args.rows_per_shard)} shards), float32 {gb(2 * P * L * d * 4)} per token rule; {args.threads} thread(s)"
    )
    try:
        if "io" not in skip:
            # ------------------------------------------------------------------ write + sequential read
            s32 = root / "v2_f32"
            t = time.perf_counter()
            wt = write_synthetic(s32, P, L, d, args.rows_per_shard, planted)
            size32 = store_bytes(s32)
            print(
                f"\n[write] v2 float32: {gb(size32)} in {time.perf_counter() - t:.1f}s (of which store writes "
                f"{wt['total_write']:.1f}s: arrays {wt['array']:.1f}s, index appends {wt['index']:.3f}s, manifest "
                f"{wt['manifest_create']:.3f}s, finish {wt['finish']:.2f}s)"
            )
            drop_cache(s32)
            cold, nbytes = sequential_read(s32)
            warm, _ = sequential_read(s32)
            print(
                f"[read] one sequential read of all shards: cold {cold:.2f}s ({nbytes / cold / 1e9:.2f} GB/s), "
                f"warm {warm:.2f}s ({nbytes / warm / 1e9:.2f} GB/s)"
            )
            report["sequential_read"] = {"cold_s": cold, "warm_s": warm, "bytes": nbytes}
            # ------------------------------------------------------------------ I/O of the streaming analysis
            res = {}
            for mode in ("io", "io_trusted"):
                drop_cache(s32)
                res[mode + "_cold"] = child(mode, s32, position="last_prompt")
                res[mode + "_warm"] = child(mode, s32, position="last_prompt")
            report["io"] = res
            print(f"[io] all {L} slices, one layer at a time (what analyse_store reads):")
            for k, r in res.items():
                print(
                    f"     {k:17s} {r['seconds']:7.2f}s  = {r['seconds'] / (cold if 'cold' in k else warm):5.2f}x one "
                    f"sequential read ({'cold' if 'cold' in k else 'warm'}); sha256 {r['verify_seconds']:.2f}s over "
                    f"{gb(r['verify_bytes'])}; peak RSS {r['peak_rss'] / 1e6:.0f} MB"
                )
            vc = res["io_cold"]["seconds"] - res["io_trusted_cold"]["seconds"]
            vw = res["io_warm"]["seconds"] - res["io_trusted_warm"]["seconds"]
            print(
                f"[verify] first-read sha256 verification costs {vc:+.2f}s cold / {vw:+.2f}s warm on this store "
                f"({res['io_warm']['verify_bytes'] / max(res['io_warm']['verify_seconds'], 1e-9) / 1e9:.2f} GB/s hashing); "
                "opt out with trust=True or COTSCOPE_TRUST_STORE=1"
            )
            # ------------------------------------------------------------------ the analysis
            if "analyse" not in skip:
                drop_cache(s32)
                a = child("analyse", s32, position="last_prompt", n_perm=args.n_perm, planted=str(root / "planted.npy"))
                report["analyse"] = a
                sc = a["scatter_seconds_per_layer"] * L
                print(
                    f"[analyse_store] wall {a['seconds']:.1f}s = {a['seconds'] / cold:.1f}x one cold sequential read "
                    f"({a['seconds'] / warm:.1f}x warm); reading slices {a['io_seconds']:.1f}s in the read-ahead "
                    f"thread ({a['io_seconds'] / cold:.2f}x cold read, incl. sha256 {a['verify_seconds']:.1f}s), "
                    f"overlapped with computing {a['compute_seconds']:.1f}s ({a['compute_seconds'] / L:.2f}s per layer: "
                    "probe, LAT scatter, nulls)"
                )
                print(
                    f"                compute floor: one float64 Xᵀ X per layer (the d×d scatter LAT and the dispersion "
                    f"null need) = {sc:.1f}s = {sc / cold:.1f}x one cold sequential read on {args.threads} thread(s)"
                )
                print(
                    f"                peak RSS {a['peak_rss'] / 1e9:.2f} GB (interpreter+imports {a['base_rss'] / 1e9:.2f} GB; "
                    f"store {gb(size32)}, one slice {gb(2 * P * d * 4)})"
                )
                print(
                    f"                planted direction: cos(mean diff, planted) min {min(a['cos_mean_diff']):.4f}, "
                    f"cos(LAT, planted) min {min(a['cos_lat']):.4f}, median {np.median(a['cos_lat']):.4f}; probe "
                    f"test accuracy {np.mean(a['probe_test_acc']):.3f}"
                )
            # ------------------------------------------------------------------ bf16
            if "bf16" not in skip:
                sbf = root / "v2_bf16"
                write_synthetic(sbf, P, L, d, args.rows_per_shard, planted, dtype="bfloat16")
                sizebf = store_bytes(sbf)
                times = {}
                for name, p in (("float32", s32), ("bfloat16", sbf)):
                    drop_cache(p)
                    times[name + "_cold"] = child("io_trusted", p, position="last_prompt")["seconds"]
                    times[name + "_warm"] = child("io_trusted", p, position="last_prompt")["seconds"]
                d32 = child("directions", s32, position="last_prompt")
                dbf = child("directions", sbf, position="last_prompt")
                cos = lambda a, b: float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
                c_md = [cos(np.array(d32["mean_diff"][k]), np.array(dbf["mean_diff"][k])) for k in d32["mean_diff"]]
                c_lat = [cos(np.array(d32["lat"][k]), np.array(dbf["lat"][k])) for k in d32["lat"]]
                report["bf16"] = {
                    "size_ratio": sizebf / size32,
                    "times": times,
                    "cos_mean_diff": c_md,
                    "cos_lat": c_lat,
                }
                print(
                    f"\n[bf16] size {gb(sizebf)} = {sizebf / size32:.3f}x float32; reading all slices: cold "
                    f"{times['bfloat16_cold']:.2f}s vs {times['float32_cold']:.2f}s "
                    f"({times['bfloat16_cold'] / times['float32_cold']:.2f}x), warm {times['bfloat16_warm']:.2f}s vs "
                    f"{times['float32_warm']:.2f}s ({times['bfloat16_warm'] / times['float32_warm']:.2f}x)"
                )
                print(
                    f"       cos(direction bf16, direction float32): mean difference min {min(c_md):.6f}, "
                    f"LAT min {min(c_lat):.6f} (target >= 0.999)"
                )
                if not args.keep:
                    shutil.rmtree(sbf)
            if not args.keep:
                shutil.rmtree(s32)
        # ------------------------------------------------------------------ v1 vs v2 at a smaller size
        if "v1" not in skip:
            P1 = args.v1_pairs or max(2, P // 4)
            s1, s2 = root / "v1_small", root / "v2_small"
            write_synthetic(s1, P1, L, d, args.rows_per_shard, planted, v1=True)
            write_synthetic(s2, P1, L, d, args.rows_per_shard, planted)
            drop_cache(s1)
            r1 = child("analyse_v1", s1, position="last_prompt", n_perm=args.n_perm, planted=str(root / "planted.npy"))
            drop_cache(s2)
            r2 = child("analyse", s2, position="last_prompt", n_perm=args.n_perm, planted=str(root / "planted.npy"))
            report["v1_vs_v2"] = {"pairs": P1, "v1": r1, "v2": r2}
            small = store_bytes(s1)
            extra1 = r1["peak_rss"] - r1["base_rss"]
            extra2 = r2["peak_rss"] - r2["base_rss"]
            print(
                f"\n[v1 vs v2] at {P1} pairs ({gb(small)} per token rule; v1 at the full size would hold the whole "
                f"{gb(2 * P * L * d * 4)} in memory):"
            )
            print(
                f"     v1 (pre-v2 store + analysis): wall {r1['seconds']:.1f}s, peak RSS {r1['peak_rss'] / 1e9:.2f} GB "
                f"({extra1 / 1e9:.2f} GB above imports = {extra1 / small:.2f}x the store)"
            )
            print(
                f"     v2 (streaming):               wall {r2['seconds']:.1f}s, peak RSS {r2['peak_rss'] / 1e9:.2f} GB "
                f"({extra2 / 1e9:.2f} GB above imports)"
            )
            print(
                f"     ratios v1/v2: wall {r1['seconds'] / r2['seconds']:.2f}x, peak RSS {r1['peak_rss'] / r2['peak_rss']:.2f}x; "
                f"v1 extrapolated to {P} pairs: about {(r1['base_rss'] + extra1 * P / P1) / 1e9:.1f} GB peak RSS "
                f"(v2 measured above: {report.get('analyse', {}).get('peak_rss', float('nan')) / 1e9:.2f} GB)"
            )
            if not args.keep:
                shutil.rmtree(s1)
                shutil.rmtree(s2)
        # ------------------------------------------------------------------ many small shards
        if "write" not in skip:
            K = args.small_shards
            rows = 2
            wv2 = write_synthetic(root / "small_v2", K * rows // 2, L, d, rows, planted)
            print(
                f"\n[write {K} small shards] ({rows} rows x {L} layers x d={d} = "
                f"{rows * L * d * 4 / 1e3:.0f} KB each, each fsynced)"
            )
            mi = wv2["index"] + wv2["manifest_create"] + wv2["finish"]
            print(
                f"     v2: arrays {wv2['array']:.2f}s, index appends {wv2['index']:.3f}s, manifest {wv2['manifest_create']:.3f}s, "
                f"finish (compacted index + manifest) {wv2['finish']:.3f}s -> manifest+index = "
                f"{100 * mi / wv2['array']:.1f}% of the array writes (target <= 10%)"
            )
            K1 = min(K, 2000)
            import store_oracle as O

            times = []
            real_write = O.write_json_atomic

            def timed(*a, **k):
                t0 = time.perf_counter()
                real_write(*a, **k)
                times.append(time.perf_counter() - t0)

            O.write_json_atomic = timed
            try:
                wv1 = write_synthetic(root / "small_v1", K1 * rows // 2, L, d, rows, planted, v1=True)
            finally:
                O.write_json_atomic = real_write
            first, last = np.mean(times[1:51]), np.mean(times[-51:-1])
            print(
                f"     v1 ({K1} shards): total {wv1['total_write']:.2f}s; manifest rewrite per shard {1e3 * first:.2f} ms "
                f"(shards 1-50) -> {1e3 * last:.2f} ms (last 50): grows with k; plus a re-read to hash each shard"
            )
            report["write"] = {
                "v2": wv2,
                "v1_total": wv1["total_write"],
                "v1_manifest_ms_first": 1e3 * first,
                "v1_manifest_ms_last": 1e3 * last,
            }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\nRESULTS " + json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
