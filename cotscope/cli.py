"""Command line: ``cotscope demo | collect | analyse | export | figures | setup-models``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


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
    from cotscope.probes.demo import run_demo

    over = {}
    if args.n_problems:
        over["n_problems"] = args.n_problems
    run_demo(args.run_dir, **over)
    return 0


def _collect(args: argparse.Namespace) -> int:
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.models.loading import load_model
    from cotscope.probes.stimuli import generate_problems, load_problems_jsonl, make_pairs

    lm = load_model(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    probs = load_problems_jsonl(args.stimuli) if args.stimuli else generate_problems(args.n, seed=args.seed)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    store = collect_pairs(lm, make_pairs(probs, pairing=args.pairing), args.out, layers=layers,
                          positions=args.positions.split(","), batch_size=args.batch_size)
    print(f"store: {store.path} ({store.n_items} items, layers {store.layers[0]}..{store.layers[-1]})")
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.layer_sweep import analyse_store, directions_to_sets, public
    from cotscope.analyses.store import ActivationStore

    store = ActivationStore(args.store)
    res = analyse_store(store, args.position, cutoff=args.cutoff, n_perm=args.n_perm)
    out = Path(args.out)
    for method, ds in directions_to_sets(res, store).items():
        print(f"direction: {ds.save(out / f'{method}.safetensors')}")
    write_json_atomic(out / "analysis.json", public(res))
    print(f"analysis: {out / 'analysis.json'} (best layer {res['best_layer']})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from cotscope.analyses.export.dispatch import STEERING_FORMATS, export_direction, parse_layers

    path, layers = export_direction(args.direction, args.to, args.out, layers=parse_layers(args.layers),
                                    target=args.target, model_hint=args.model_hint, normalise=args.normalise)
    note = " (block 0 left out: llama.cpp cannot steer it)" if args.to in STEERING_FORMATS and not args.layers else ""
    print(f"{args.to}: {path} — layers {layers[0]}..{layers[-1]} ({len(layers)}){note}")
    return 0


def _figures(args: argparse.Namespace) -> int:
    from cotscope.figures.__main__ import main

    return main([args.run_dir])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cotscope", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup-models", help="convert/assemble the embedded models into the cache")
    s.set_defaults(fn=_setup_models)
    s = sub.add_parser("demo", help="the main job on the embedded defaults")
    s.add_argument("--run-dir", default="runs/demo")
    s.add_argument("--n-problems", type=int, default=0)
    s.set_defaults(fn=_demo)
    s = sub.add_parser("collect", help="collect paired CoT/direct activations into a store")
    s.add_argument("--model", default="embedded:smollm2")
    s.add_argument("--stimuli", help="JSONL of your own problems (question, answer)")
    s.add_argument("--n", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pairing", default="cue", choices=["cue", "answer"])
    s.add_argument("--layers", default="", help="comma-separated block indices (default: all)")
    s.add_argument("--positions", default="last_prompt,answer_mean")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="cpu")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--device-map", default=None)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_collect)
    s = sub.add_parser("analyse", help="per-layer directions, probes, spectra of a store")
    s.add_argument("store")
    s.add_argument("--position", default="last_prompt")
    s.add_argument("--cutoff", type=float, default=0.1)
    s.add_argument("--n-perm", type=int, default=200)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=_analyse)
    s = sub.add_parser("export", help="export a direction file for llama.cpp, repeng or plain arrays")
    s.add_argument("direction", help="a cotscope direction file (.safetensors)")
    from cotscope.analyses.export.dispatch import FORMATS

    s.add_argument("--to", required=True, choices=FORMATS)
    s.add_argument("--out", required=True)
    s.add_argument("--layers", default="", help="block indices, e.g. '1-29' or '8,12,16' (default: all steerable)")
    s.add_argument("--target", default=None, help="model name or folder to check the fit against")
    s.add_argument("--model-hint", default=None, help="llama.cpp architecture name (default: the target's)")
    s.add_argument("--normalise", action="store_true",
                   help="scale each layer to unit norm, as llama.cpp's cvector generator and repeng write "
                        "(default: as measured; the file records which)")
    s.set_defaults(fn=_export)
    s = sub.add_parser("figures", help="regenerate every figure of a run from stored results")
    s.add_argument("run_dir", nargs="?", default="runs/demo")
    s.set_defaults(fn=_figures)
    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # cotscope's input errors name the problem and fix
        if os.environ.get("COTSCOPE_TRACEBACK"):
            raise
        print(f"cotscope {args.cmd}: {type(e).__name__}: {e}\n(set COTSCOPE_TRACEBACK=1 for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
