"""``cotscope run RECIPE [--dry-run]``: run one experiment declared in a recipe file (``recipes/*.toml``).

``--dry-run`` prints the plan (stages, models with their sizes, estimated GPU memory, disk use and number of
generations) from model configs alone — local ``config.json`` files, or a built-in table of the papers' models for
hub names — without loading any model. ``--json`` prints the plan as JSON.

    cotscope run recipes/embedded.toml
    cotscope run recipes/l2v_cot_main.toml --dry-run
    cotscope run recipes/demo.toml --run-dir runs/demo          # the same stages as `make demo`
"""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cotscope run", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("recipe", help="a recipe file (TOML)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimates; load nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--run-dir", default=None, help="override the recipe's run directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cotscope.recipes import compile_recipe, format_plan, load_recipe, plan, run_recipe

    recipe = load_recipe(args.recipe)
    stages = compile_recipe(recipe)  # compiles (and validates) even for a dry run
    if args.dry_run:
        pl = plan(recipe)
        if args.run_dir:
            pl["run_dir"] = args.run_dir
        print(json.dumps(pl, indent=2, default=str) if args.json else format_plan(pl))
        print(f"\n{len(stages)} stages compiled: {', '.join(s.name for s in stages)}" if not args.json else "")
        return 0
    summary = run_recipe(recipe, args.run_dir)
    st = summary["stages"]
    bad = {n: s for n, s in st.items() if s.get("status") != "ok"}
    not_ok = ", ".join(f"{n} ({s.get('status')}: {s.get('error', '')})" for n, s in bad.items())
    print(
        f"run: {summary['run_dir']} — {len(st) - len(bad)} of {len(st)} stages ok in {summary['total_seconds']} s"
        + (f"; not ok: {not_ok}" if bad else "")
    )
    return 0 if not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
