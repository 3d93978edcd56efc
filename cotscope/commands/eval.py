"""``cotscope eval MODEL --bench NAME --data PATH``: score a model on a benchmark in its published schema.

As is, with a CoT direction injected (``--inject``), or with merged weights (``--merge``); rows are resumable
(``OUT/<bench>-<setting>.csv``) and the summary (accuracy with a Wilson 95% CI, breakdowns by category and question
type, response length) is printed and written to ``OUT/<bench>-<setting>.json`` (and recorded in
``RUN/summary.json`` with ``--run-dir``).

    cotscope eval /models/Qwen2-VL-7B-Instruct --bench mathvista --data data/MathVista --device-map auto --dtype bfloat16
    cotscope eval embedded:smolvlm --bench mcq --data tests/fixtures/bench/scienceqa/test.parquet --max-new-tokens 24
    cotscope eval VLM --bench mathverse --data data/MathVerse --inject runs/x/directions/llm_mean_diff.safetensors \\
        --layers 14 --lam 0.5 --cutoff 200 --strength-reference target_direction --reference runs/x/directions/vlm.safetensors
    cotscope eval VLM_DIR --bench mmstar --data data/MMStar --merge ties --reason /models/R1-Distill --density 0.2
    cotscope eval VLM --bench mathvista --data data/MathVista --merge runs/x/merged-ties.safetensors
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from cotscope.analyses.cutoff import argparse_cutoff
    from cotscope.analyses.prior.merge import METHODS
    from cotscope.probes.bench.specs import BENCHMARKS

    p = argparse.ArgumentParser(
        prog="cotscope eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("model", help="embedded:smolvlm, a local folder or a hub name")
    p.add_argument("--bench", required=True, choices=sorted(BENCHMARKS))
    p.add_argument(
        "--data", required=True, help="the local copy: a file (parquet/jsonl/json/csv/tsv) or a save_to_disk folder"
    )
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--image-root", default=None, help="folder image paths are relative to")
    p.add_argument("--text-only", action="store_true", help="drop images (for text-only models)")
    p.add_argument("--out", default=None, help="output folder (default RUN/eval with --run-dir, else runs/eval)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--setting", default=None, help="label of this run (default: base, inject or merge-METHOD)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompt-suffix", default="", help="appended to every question (e.g. a CoT cue)")
    g = p.add_argument_group("injection")
    g.add_argument("--inject", default=None, metavar="DIRECTION", help="a cotscope direction file")
    g.add_argument("--layers", default=None, help="blocks to inject at, e.g. 14 or 12,14")
    g.add_argument("--lam", type=float, default=0.5)
    g.add_argument("--filter", default="lowpass", choices=["none", "lowpass", "highpass"])
    g.add_argument("--cutoff", type=argparse_cutoff, default=0.1, help="bins (200) or a fraction (0.1)")
    g.add_argument("--positions", default="first", help="first, last_prompt, prompt, generated (comma-separated)")
    g.add_argument("--no-renorm", action="store_true")
    g.add_argument("--strength-reference", default="source", choices=["source", "target_direction", "hidden_norm"])
    g.add_argument("--reference", default=None, help="the target's own direction file (target_direction)")
    m = p.add_argument_group("merged weights")
    m.add_argument("--merge", default=None, help=f"a merged-weights file, or a method: {', '.join(METHODS)}")
    m.add_argument("--reason", default=None, help="θ_reason checkpoint folder (with --merge METHOD)")
    m.add_argument("--vl", default=None, help="the VLM's checkpoint folder (default: MODEL when it is a folder)")
    m.add_argument("--base", default=None, help="common base checkpoint for task vectors (optional)")
    m.add_argument("--merge-lam", type=float, default=None)
    m.add_argument("--density", type=float, default=None, help="TIES: share kept")
    m.add_argument("--drop", type=float, default=None, help="DARE: drop probability")
    m.add_argument("--swap-layers", default=None, help="layer swap: blocks from θ_reason, e.g. 16-29")
    j = p.add_argument_group("judge")
    j.add_argument("--judge", default=None, help="a model that extracts answers when the rules fail")
    j.add_argument("--judge-mode", default="fallback", choices=["fallback", "always"])
    d = p.add_argument_group("loading")
    d.add_argument("--device", default="cpu")
    d.add_argument("--dtype", default="float32")
    d.add_argument("--device-map", default=None)
    d.add_argument("--overwrite", action="store_true")
    return p


def _ints(text: str | None) -> list[int] | None:
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.prior.merge import METHODS
    from cotscope.probes.bench.run import InjectSpec, run_benchmark
    from cotscope.probes.models.loading import load_model

    t0 = time.perf_counter()
    if args.inject and not args.layers:
        raise SystemExit("cotscope eval: --inject needs --layers (blocks to inject at)")
    lm = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    judge = (
        load_model(args.judge, device=args.device, dtype=args.dtype, device_map=args.device_map) if args.judge else None
    )
    inject = None
    if args.inject:
        inject = InjectSpec(
            direction=args.inject,
            layers=_ints(args.layers),
            lam=args.lam,
            filter=args.filter,
            cutoff=args.cutoff,
            positions=tuple(args.positions.split(",")),
            renorm=not args.no_renorm,
            strength_reference=args.strength_reference,
            reference=args.reference,
        )
    setting = args.setting or ("inject" if inject else "base")
    out = Path(args.out) if args.out else (Path(args.run_dir) / "eval" if args.run_dir else Path("runs/eval"))
    kw = dict(
        setting=setting,
        inject=inject,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        limit=args.limit,
        split=args.split,
        image_root=args.image_root,
        text_only=args.text_only,
        judge=judge,
        judge_mode=args.judge_mode,
        prompt_suffix=args.prompt_suffix,
        overwrite=args.overwrite,
    )
    if args.merge:
        from cotscope.probes.merge import merged_weights

        if args.merge in METHODS:
            vl = args.vl or (args.model if Path(args.model).is_dir() else None)
            if args.reason is None or vl is None:
                raise SystemExit(
                    "cotscope eval: --merge METHOD needs --reason DIR and the VLM's folder (--vl DIR, or "
                    "MODEL given as a folder)"
                )
            params = {
                k: v
                for k, v in {
                    "lam": args.merge_lam,
                    "density": args.density,
                    "drop": args.drop,
                    "swap_layers": _ints(args.swap_layers),
                }.items()
                if v is not None
            }
            ctx = merged_weights(lm, method=args.merge, reason_dir=args.reason, vl_dir=vl, base_dir=args.base, **params)
        else:
            ctx = merged_weights(lm, path=args.merge)
        with ctx as rec:
            kw["setting"] = args.setting or (f"merge-{rec['method']}" + ("-inject" if inject else ""))
            kw["merged"] = {"method": rec["method"], "params": rec["params"], "source": rec["source"]}
            res = run_benchmark(lm, args.bench, args.data, out, **kw)
    else:
        res = run_benchmark(lm, args.bench, args.data, out, **kw)
    s = res["summary"]
    write_json_atomic(out / f"{res['bench']}-{res['setting']}.json", res)
    print(
        f"{res['bench']} [{res['setting']}] {lm.model_id}: accuracy {s['accuracy']:.4f} "
        f"(95% CI {s['ci_low']:.4f}–{s['ci_high']:.4f}, n = {s['n']}), mean length {s.get('mean_tokens', 0):.1f} "
        f"tokens, no answer extracted {s.get('no_answer', 0)}"
    )
    for col, groups in s["by"].items():
        print(f"  by {col}: " + "; ".join(f"{k} {v['accuracy']:.3f} (n={v['n']})" for k, v in groups.items()))
    print(f"table: {res['table']}")
    if args.run_dir:
        from cotscope.runlog import record_stage

        record_stage(
            args.run_dir,
            f"eval_{res['bench']}_{res['setting']}",
            {
                "bench": res["bench"],
                "setting": res["setting"],
                "table": res["table"],
                **{k: v for k, v in s.items() if k != "by"},
                "by": s["by"],
            },
            "cotscope eval " + " ".join(sys.argv[1:] if argv is None else argv),
            time.perf_counter() - t0,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
