"""Command line: thin argument parsing over cotscope's stages and layers.

``cotscope demo`` runs everything on the embedded models. Step by step, every command that takes
``--run-dir RUN`` stores its results in the run layout and records itself in ``RUN/summary.json``, so
``cotscope figures RUN`` and ``cotscope report RUN`` work on runs made only with the CLI::

    cotscope collect --run-dir runs/mine --n 64
    cotscope analyse runs/mine/stores/llm --run-dir runs/mine
    cotscope export runs/mine/directions/llm_mean_diff.safetensors --to gguf --out runs/mine/cot.gguf
    cotscope figures runs/mine && cotscope report runs/mine
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("cotscope.cli")


def _command_line(argv: list[str]) -> str:
    return "cotscope " + " ".join(shlex.quote(a) for a in argv)


def _ints(spec: str) -> list[int] | None:
    from cotscope.analyses.export.dispatch import parse_layers

    return parse_layers(spec) if spec else None


def _floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()]


def _load(args: argparse.Namespace, spec: str | None = None) -> Any:
    from cotscope.probes.models.loading import load_model

    kw: dict[str, Any] = {}
    if getattr(args, "revision", None):
        kw["revision"] = args.revision
    if getattr(args, "remote", None):
        kw["remote"] = True if args.remote == "ndif" else "local"
    return load_model(
        spec or args.model,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
        **kw,
    )


def _model_options(p: argparse.ArgumentParser, default: str | None = "embedded:smollm2") -> None:
    if default is None:
        p.add_argument("model", help="model: embedded:smollm2, embedded:smolvlm, a local folder or a hub name")
    else:
        p.add_argument("--model", default=default, help="embedded:smollm2, embedded:smolvlm, a folder or a hub name")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of the model")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own modelling code")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device-map", default=None, help='e.g. "auto" to spread a large model over GPUs')
    p.add_argument(
        "--remote",
        choices=["ndif", "local"],
        default=None,
        help="run the model's traces on NDIF through nnsight (NDIF_API_KEY; no weights are downloaded), or "
        "'local': nnsight's simulation of the remote path, run here",
    )


# ------------------------------------------------------------------------------------------------ handlers
def _setup_models(args: argparse.Namespace) -> int:
    from cotscope.probes.models.embedded import smollm2_dir

    print(f"[setup] SmolLM2: {smollm2_dir()}")
    try:
        from cotscope.probes.models.reference_vlm import reference_vlm_dir
    except ImportError:
        return 0
    print(f"[setup] reference VLM: {reference_vlm_dir()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cotscope.demo import run_demo

    over = {"n_problems": args.n_problems} if args.n_problems else {}
    s = run_demo(args.run_dir, **over)
    print(f"demo done in {s['total_seconds']} s → {args.run_dir}/summary.json, report.md, report.html")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from cotscope.api import pairs
    from cotscope.probes.collect import collect_pairs

    if not args.out and not args.run_dir:
        raise SystemExit("cotscope collect: pass --out STORE_DIR or --run-dir RUN (store goes to RUN/stores/NAME)")
    t0 = time.perf_counter()
    lm = _load(args)
    source: Any = args.stimuli if args.stimuli else args.n
    out = Path(args.out) if args.out else Path(args.run_dir) / "stores" / args.name
    kw = dict(
        layers=_ints(args.layers),
        positions=args.positions.split(","),
        batch_size=args.batch_size,
        **({"overwrite": True} if args.overwrite else {}),
    )
    if args.shard or args.workers > 1 or args.ray_address:
        from cotscope.workers import run_collect_command

        return run_collect_command(lm, pairs(source, pairing=args.pairing, seed=args.seed), out, args, **kw)
    store = collect_pairs(lm, pairs(source, pairing=args.pairing, seed=args.seed), out, **kw)
    print(f"store: {store.path} ({store.n_items} items, layers {store.layers[0]}..{store.layers[-1]})")
    if args.run_dir:
        from cotscope.runlog import record_stage

        record_stage(
            args.run_dir,
            f"collect_{args.name}",
            {"store": str(store.path), "model": lm.model_id, "n_items": store.n_items, "pairing": args.pairing},
            args.command_line,
            time.perf_counter() - t0,
        )
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.store import ActivationStore
    from cotscope.api import analyse

    if not args.out and not args.run_dir:
        raise SystemExit("cotscope analyse: pass --out DIR or --run-dir RUN")
    t0 = time.perf_counter()
    store = ActivationStore(args.store)
    name = args.name or Path(args.store).name
    res = analyse(store, args.position, cutoff=args.cutoff, n_perm=args.n_perm)
    if args.run_dir:
        from cotscope.runlog import record_stage
        from cotscope.stages.llm import llm_summary

        run = Path(args.run_dir)
        paths = {m: str(ds.save(run / "directions" / f"{name}_{m}.safetensors")) for m, ds in res.directions.items()}
        full = {
            **res.to_dict(),
            "model_id": store.model["model_id"],
            "cutoff": args.cutoff,
            "pairing": ",".join(store.manifest.get("pairings", [])),
            "directions": paths,
            "store": str(store.path),
            "timings_s": {"analyse": time.perf_counter() - t0},
        }
        write_json_atomic(run / "analysis" / f"{name}.json", full)
        record_stage(run, name, llm_summary(full), args.command_line, time.perf_counter() - t0)
        print(f"analysis: {run / 'analysis' / f'{name}.json'} (best layer {res.best_layer})")
    if args.out:
        out = Path(args.out)
        for method, ds in res.directions.items():
            print(f"direction: {ds.save(out / f'{method}.safetensors')}")
        write_json_atomic(out / "analysis.json", res.to_dict())
        print(f"analysis: {out / 'analysis.json'} (best layer {res.best_layer})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from cotscope.analyses.export.dispatch import STEERING_FORMATS, export_direction, parse_layers

    path, layers = export_direction(
        args.direction,
        args.to,
        args.out,
        layers=parse_layers(args.layers),
        target=args.target,
        model_hint=args.model_hint,
        normalise=args.normalise,
    )
    note = " (block 0 left out: llama.cpp cannot steer it)" if args.to in STEERING_FORMATS and not args.layers else ""
    print(f"{args.to}: {path} — layers {layers[0]}..{layers[-1]} ({len(layers)}){note}")
    return 0


def _prompts(args: argparse.Namespace, lm: Any) -> list[str]:
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.sweep import direct_prompts

    if args.prompt:
        return [
            lm.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in args.prompt
        ]
    return [p.render(lm) for p in direct_prompts(generate_problems(args.n, seed=args.seed))]


def _inject(args: argparse.Namespace) -> int:
    import json

    from cotscope.probes.intervene import inject_generate

    lm = _load(args)
    layers = _ints(args.layers)
    if not layers:
        raise SystemExit("cotscope inject: pass --layers, e.g. --layers 12 or --layers 8-16")
    prompts = _prompts(args, lm)
    rows = inject_generate(
        lm, prompts, args.direction, layers, args.lam, positions=args.positions.split(","), budget=args.budget
    )
    base = (
        inject_generate(
            lm, prompts, args.direction, layers, 0.0, positions=args.positions.split(","), budget=args.budget
        )
        if args.compare
        else None
    )
    for i, r in enumerate(rows):
        print(f"--- prompt {i} (λ={args.lam}): {r.text!r}")
        if base:
            print(f"    no injection:        {base[i].text!r}")
    if args.run_dir:
        from cotscope.analyses.atomic import write_text_atomic
        from cotscope.runlog import record_stage

        out = Path(args.run_dir) / "inject" / f"{args.name}.jsonl"
        write_text_atomic(
            out,
            "".join(
                json.dumps({"prompt": p, "lam": args.lam, "layers": layers, "text": r.text, "n_tokens": r.n_tokens})
                + "\n"
                for p, r in zip(prompts, rows)
            ),
        )
        record_stage(
            args.run_dir,
            f"inject_{args.name}",
            {"file": str(out), "lam": args.lam, "layers": layers, "n_prompts": len(prompts)},
            args.command_line,
        )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.sweep import SweepConfig, direct_prompts, run_sweep
    from cotscope.runlog import record_stage
    from cotscope.stages.intervention import summarise_table

    t0 = time.perf_counter()
    lm = _load(args)
    cfg = SweepConfig(
        layers=tuple(_ints(args.layers) or (lm.n_layers // 2,)),
        lams=tuple(_floats(args.lams)),
        controls=tuple(args.controls.split(",")),
        positions=tuple(args.positions.split(",")),
        budget=args.budget,
        cutoff=args.cutoff,
        seed=args.seed,
    )
    table = Path(args.run_dir) / "intervention" / f"sweep_{args.name}.csv"
    res = run_sweep(
        lm,
        args.direction,
        direct_prompts(generate_problems(args.n, seed=args.seed + 1000, difficulties=("easy",))),
        table,
        cfg,
        overwrite=args.overwrite,
    )
    s = summarise_table(table, res)
    s["model"] = lm.model_id
    record_stage(args.run_dir, f"sweep_{args.name}", s, args.command_line, time.perf_counter() - t0)
    print(f"sweep table: {table} ({s['rows']} rows, {s['cells']} cells)")
    return 0


def _attention(args: argparse.Namespace) -> int:
    from cotscope.runlog import record_stage
    from cotscope.stages.attention import run_attention_demo

    t0 = time.perf_counter()
    s = run_attention_demo(
        _load(args),
        None,
        args.run_dir,
        n_items=args.n_items,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        figures=False,
        overwrite=args.overwrite,
    )
    record_stage(args.run_dir, "attention", s, args.command_line, time.perf_counter() - t0)
    print(f"attention: {args.run_dir}/analysis/attention_shift.json")
    return 0


def _prior(args: argparse.Namespace) -> int:
    from cotscope.runlog import record_stage
    from cotscope.stages.prior import prior_stage

    t0 = time.perf_counter()
    s = prior_stage(args.run_dir, {}, reason_dir=args.reason, vl_dir=args.vl, n_steps=args.sft_steps)
    record_stage(args.run_dir, "prior", s, args.command_line, time.perf_counter() - t0)
    print(f"prior: {args.run_dir}/prior/prior.safetensors, prior_analysis.json, drift_cos.csv")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from cotscope.figures.__main__ import main

    return main([args.run_dir])


def _report(args: argparse.Namespace) -> int:
    from cotscope.api import report

    for p in report(args.run_dir):
        print(f"report: {p}")
    return 0


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    """A subcommand whose parsing lives in ``cotscope.commands.<module>`` (it gets the remaining argv)."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"cotscope.commands.{module}").main(args.rest) or 0)

    return run


# ------------------------------------------------------------------------------------------------ parser
DELEGATED = {
    "store": "store maintenance: merge A B … --out C | migrate DIR | verify DIR | info DIR",
    "run": "run a recipe (recipes/*.toml); --dry-run prints the plan",
    "eval": "evaluate a model on a benchmark in its published schema",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cotscope", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("setup-models", help="convert/assemble the embedded models into the cache")
    s.set_defaults(fn=_setup_models)

    s = sub.add_parser("demo", help="the main job on the embedded defaults (all stages, figures, reports)")
    s.add_argument("--run-dir", default="runs/demo")
    s.add_argument("--n-problems", type=int, default=0)
    s.set_defaults(fn=_demo)

    s = sub.add_parser("collect", help="collect paired CoT/direct activations into a store")
    _model_options(s)
    s.add_argument("--stimuli", help="JSONL of your own problems (question, answer)")
    s.add_argument("--n", type=int, default=128, help="number of generated problems when --stimuli is not given")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pairing", default="cue", choices=["cue", "answer"])
    s.add_argument("--layers", default="", help="block indices, e.g. '0-29' or '8,12' (default: all)")
    s.add_argument("--positions", default="last_prompt,last,answer_mean", help="token rules to store")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--out", help="store directory")
    s.add_argument("--run-dir", help="run directory (store goes to RUN/stores/NAME)")
    s.add_argument("--name", default="llm", help="store name inside the run")
    s.add_argument("--overwrite", action="store_true", help="discard an existing store of another configuration")
    s.add_argument("--workers", type=int, default=1, help="Ray actors, one model replica each (needs cotscope[ray])")
    s.add_argument("--ray-address", help="join this Ray cluster ('auto', 'ray://head:10001'); default: a local one")
    s.add_argument(
        "--shard", help="i/N: collect only part i of N into --out (SLURM arrays); then `cotscope store merge`"
    )
    s.set_defaults(fn=_collect)

    s = sub.add_parser("analyse", help="per-layer directions, probes, spectra and nulls of a store")
    s.add_argument("store")
    s.add_argument("--position", default="last_prompt")
    s.add_argument("--cutoff", type=float, default=0.1)
    s.add_argument("--n-perm", type=int, default=200)
    s.add_argument("--out", help="folder for analysis.json and the direction files")
    s.add_argument("--run-dir", help="run directory (RUN/analysis/NAME.json, RUN/directions/NAME_*.safetensors)")
    s.add_argument("--name", default=None, help="analysis name inside the run (default: the store's folder name)")
    s.set_defaults(fn=_analyse)

    s = sub.add_parser("export", help="export a direction file for llama.cpp, repeng or plain arrays")
    s.add_argument("direction", help="a cotscope direction file (.safetensors)")
    from cotscope.analyses.export.dispatch import FORMATS

    s.add_argument("--to", required=True, choices=FORMATS)
    s.add_argument("--out", required=True)
    s.add_argument("--layers", default="", help="block indices, e.g. '1-29' or '8,12,16' (default: all steerable)")
    s.add_argument("--target", default=None, help="model name or folder to check the fit against")
    s.add_argument("--model-hint", default=None, help="llama.cpp architecture name (default: the target's)")
    s.add_argument(
        "--normalise",
        action="store_true",
        help="scale each layer to unit norm, as llama.cpp's cvector generator and repeng write "
        "(default: as measured; the file records which)",
    )
    s.set_defaults(fn=_export)

    s = sub.add_parser("inject", help="generate with a direction injected (h' = h + λ·v, norm-preserving)")
    _model_options(s)
    s.add_argument("--direction", required=True, help="direction file (.safetensors)")
    s.add_argument("--layers", required=True, help="block indices, e.g. '12' or '8-16'")
    s.add_argument("--lam", type=float, required=True, help="strength λ")
    s.add_argument("--positions", default="first", help="first, last_prompt, prompt, generated (comma-joined)")
    s.add_argument("--prompt", action="append", help="a user message (repeatable); default: --n generated problems")
    s.add_argument("--n", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--budget", type=int, default=64, help="tokens to generate")
    s.add_argument("--compare", action="store_true", help="also print the uninjected generation")
    s.add_argument("--run-dir", default=None)
    s.add_argument("--name", default="inject")
    s.set_defaults(fn=_inject)

    s = sub.add_parser("sweep", help="layer × λ injection sweep with controls into a resumable table")
    _model_options(s)
    s.add_argument("--direction", required=True)
    s.add_argument("--layers", default="", help="block indices (default: the middle block)")
    s.add_argument("--lams", default="0.3,0.9")
    s.add_argument("--controls", default="none,random,highpass")
    s.add_argument("--positions", default="first")
    s.add_argument("--n", type=int, default=8, help="number of generated direct-answer problems")
    s.add_argument("--budget", type=int, default=12)
    s.add_argument("--cutoff", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--run-dir", required=True)
    s.add_argument("--name", default="llm", help="table name: RUN/intervention/sweep_NAME.csv")
    s.add_argument("--overwrite", action="store_true", help="discard a table of another configuration")
    s.set_defaults(fn=_sweep)

    s = sub.add_parser("attention", help="attention shift (IVT-LR R, F, H) of a VLM on rendered problems")
    _model_options(s, default="embedded:smolvlm")
    s.add_argument("--n-items", type=int, default=4)
    s.add_argument("--max-new-tokens", type=int, default=48)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--run-dir", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=_attention)

    s = sub.add_parser("prior", help="DRIFT reasoning prior Δ = θ_reason − θ_VL and cos(g, Δ) during SFT")
    s.add_argument("reason", help="folder of the reasoning LLM")
    s.add_argument("vl", help="folder of the VLM")
    s.add_argument("--sft-steps", type=int, default=4)
    s.add_argument("--run-dir", required=True)
    s.set_defaults(fn=_prior)

    s = sub.add_parser("figures", help="draw every figure whose stored inputs exist in a run")
    s.add_argument("run_dir", nargs="?", default="runs/demo")
    s.set_defaults(fn=_figures)

    s = sub.add_parser("report", help="write report.md / report.html of a run from its summary.json")
    s.add_argument("run_dir")
    s.set_defaults(fn=_report)

    for name, help_ in DELEGATED.items():
        if importlib.util.find_spec(f"cotscope.commands.{name}") is not None:
            s = sub.add_parser(name, help=help_, add_help=False)
            s.add_argument("rest", nargs=argparse.REMAINDER)
            s.set_defaults(fn=_delegate(name))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED and importlib.util.find_spec(f"cotscope.commands.{argv[0]}") is not None:
        argv = [argv[0], "--", *argv[1:]]  # the subcommand parses its own options, --help included
    args = build_parser().parse_args(argv)
    if getattr(args, "rest", None) and args.rest[0] == "--":
        args.rest = args.rest[1:]
    args.command_line = _command_line(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[%(name)s] %(message)s")
    from cotscope.errors import CotscopeError

    try:
        return int(args.fn(args) or 0)
    except (CotscopeError, ValueError, FileNotFoundError, RuntimeError) as e:  # input errors name problem and fix
        if os.environ.get("COTSCOPE_TRACEBACK"):
            raise
        print(
            f"cotscope {args.cmd}: {type(e).__name__}: {e}\n(set COTSCOPE_TRACEBACK=1 for the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
