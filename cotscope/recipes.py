"""Recipe files: one experiment end to end in TOML, compiled into the stage list :func:`cotscope.stages.run_stages` runs.

A recipe names its models once and lists its stages in order::

    [run]
    name = "embedded"                       # RUN directory defaults to runs/<name>
    title = "…"
    seed = 0

    [models.llm]                            # any spec load_model takes; dtype/device_map optional
    spec = "embedded:smollm2"

    [[stage]]
    kind = "directions"                     # collect paired states and read CoT directions
    name = "llm_released"
    model = "llm"
    data = "bundled:thoughts"               # or "arithmetic:160", or a path (+ columns = {…})
    pairing = "answer"                      # answer | cue
    token_rule = "eot"                      # eot | turn_end | last | last_prompt | answer_mean
    cutoff = 0.1                            # bins (int, e.g. 200) or a fraction of the rfft bins (float)

Stage kinds (each documents its keys in :data:`KINDS`): ``directions``, ``compare``, ``sweep``, ``eval``,
``attention``, ``prior``, ``merging`` and ``demo`` (one of ``make demo``'s stages by name, so ``recipes/demo.toml``
compiles to exactly :func:`cotscope.demo.demo_stages`). Unknown keys are refused with the list of valid ones.
:func:`plan` estimates GPU memory, disk use and generations from model configs alone (``cotscope run --dry-run``).

>>> r = load_recipe("recipes/embedded.toml")          # doctest: +SKIP
>>> [s.name for s in compile_recipe(r)]               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError
from cotscope.stages import RunContext, Stage


class RecipeError(CotscopeError):
    """A recipe that cannot be compiled (the message names the file, the stage and the key)."""


# ------------------------------------------------------------------------------------------------- schema
COMMON = {"kind", "name", "needs", "required"}
KINDS: dict[str, dict[str, str]] = {
    "directions": {
        "model": "model name (from [models])",
        "data": "bundled:thoughts | arithmetic:N | path",
        "columns": "column mapping for a data file",
        "pairing": "answer | cue",
        "token_rule": "position to read (eot, turn_end, last, last_prompt, answer_mean)",
        "positions": "extra positions to store",
        "layers": "'all' or a list",
        "cutoff": "bins or fraction",
        "n_perm": "permutations for the nulls",
        "limit": "first N items",
        "batch_size": "rows per forward",
        "released": "released-code settings this stage follows (file:line notes)",
    },
    "compare": {
        "a": "directions stage (LLM)",
        "b": "directions stage (VLM)",
        "cutoffs": "list of bins/fractions",
        "dispersion_cutoff": "cutoff for the dispersion references",
        "n_perm": "permutations",
    },
    "sweep": {
        "model": "target model",
        "direction": "directions stage name (its mean_diff)",
        "method": "mean_diff | lat",
        "prompts": "arithmetic:N | visual:N | bench:NAME:PATH",
        "layers": "list",
        "lams": "λ grid",
        "controls": "none, random, highpass, unfiltered, own_lowpass",
        "control_lams": "λ for controls",
        "cutoff": "bins or fraction",
        "filter": "lowpass | highpass | none",
        "positions": "first | last_prompt | prompt | generated",
        "strength_reference": "source | target_direction | hidden_norm",
        "reference": "directions stage of the target (own)",
        "budget": "reasoning tokens before the forced answer",
        "match_norm": "controls at the real norm",
        "released": "released-code settings this stage follows",
    },
    "eval": {
        "model": "model name",
        "bench": "mathvista | mathverse | mmstar | mcq",
        "data": "local copy",
        "split": "split",
        "limit": "first N items",
        "max_new_tokens": "generation budget",
        "settings": "list of tables: {name, inject = {direction, layers, lam, cutoff, …}, merge = {method, …}}",
        "batch_size": "rows per generate",
        "text_only": "drop images",
        "judge": "judge model name",
    },
    "attention": {
        "model": "VLM",
        "n_items": "visual problems",
        "max_new_tokens": "tokens per generation",
        "layers": "layers to capture",
        "k": "IVT-LR top-k patches",
        "n_sink": "attention-sink keys",
        "released": "released-code settings",
    },
    "prior": {
        "reason": "θ_reason folder or hub name",
        "vl": "θ_VL folder or hub name",
        "modules": "preset",
        "n_steps": "SFT steps for cos(g, Δ)",
        "out_dtype": "float16 | float32",
        "released": "notes",
    },
    "merging": {
        "model": "VLM",
        "reason": "θ_reason folder",
        "vl": "θ_VL folder",
        "merges": "list of {method, …}",
        "drift_rules": "list",
        "drift_steps": "SFT steps per rule",
        "n_prompts": "items",
        "budget": "tokens",
    },
    "demo": {},
}
PAPER_MODELS: dict[str, dict[str, Any]] = {
    # hub name: decoder blocks, hidden size, parameters (billions) of the whole model; from the published configs
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": {"n_layers": 64, "hidden_size": 5120, "params_b": 32.8},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": {"n_layers": 28, "hidden_size": 3584, "params_b": 7.6},
    "Qwen/Qwen2-VL-7B-Instruct": {"n_layers": 28, "hidden_size": 3584, "params_b": 8.3},
    "Qwen/Qwen2.5-VL-7B-Instruct": {"n_layers": 28, "hidden_size": 3584, "params_b": 8.3},
    "Qwen/Qwen2.5-7B": {"n_layers": 28, "hidden_size": 3584, "params_b": 7.6},
    "llava-hf/llama3-llava-next-8b-hf": {"n_layers": 32, "hidden_size": 4096, "params_b": 8.4},
    "OpenGVLab/InternVL2-8B": {"n_layers": 32, "hidden_size": 4096, "params_b": 8.1},
    "embedded:smollm2": {"n_layers": 30, "hidden_size": 576, "params_b": 0.135},
    "embedded:smolvlm": {"n_layers": 30, "hidden_size": 576, "params_b": 0.14},
}
BENCH_SIZES = {"mathvista": 1000, "mathverse": 3940, "mmstar": 1500, "mcq": 4241}  # published eval splits
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclasses.dataclass
class Recipe:
    """A parsed recipe: run settings, named models, stage tables, and where it came from."""

    path: Path
    run: dict[str, Any]
    models: dict[str, dict[str, Any]]
    stages: list[dict[str, Any]]
    figures: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.run.get("dir") or f"runs/{self.run.get('name', self.path.stem)}")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (every stage kind and key is checked before anything runs)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise RecipeError("reading recipes needs Python 3.11+ (tomllib) or `pip install tomli`") from None
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe {p} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{p}: not valid TOML ({e})") from None
    unknown = [k for k in data if k not in ("run", "models", "stage", "figures")]
    if unknown:
        raise RecipeError(f"{p}: unknown top-level tables {unknown}; use [run], [models.NAME], [[stage]], [figures]")
    models = data.get("models", {})
    for name, m in models.items():
        if not isinstance(m, Mapping) or "spec" not in m:
            raise RecipeError(f'{p}: [models.{name}] needs spec = "…" (a folder, hub name or embedded:…)')
        bad = [
            k
            for k in m
            if k not in ("spec", "dtype", "device_map", "device", "revision", "trust_remote_code", "released")
        ]
        if bad:
            raise RecipeError(f"{p}: [models.{name}] has unknown keys {bad}")
    stages = list(data.get("stage", []))
    if not stages:
        raise RecipeError(f"{p}: no [[stage]] tables; a recipe needs at least one stage")
    names = set()
    for i, st in enumerate(stages):
        where = f"{p}: stage {i + 1} ({st.get('name', st.get('kind', '?'))})"
        kind = st.get("kind")
        if kind not in KINDS:
            raise RecipeError(f"{where}: unknown kind {kind!r}; choose from {sorted(KINDS)}")
        bad = [k for k in st if k not in COMMON | set(KINDS[kind]) | ({"config"} if kind == "demo" else set())]
        if bad:
            raise RecipeError(f"{where}: unknown keys {bad}; kind {kind!r} takes {sorted(set(KINDS[kind]) | COMMON)}")
        st.setdefault("name", kind if kind != "demo" else st.get("name"))
        if not st.get("name"):
            raise RecipeError(f'{where}: needs name = "…"')
        if st["name"] in names:
            raise RecipeError(f"{where}: stage name {st['name']!r} is used twice")
        names.add(st["name"])
        for key in ("model",):
            if key in st and st[key] not in models:
                raise RecipeError(f"{where}: model {st[key]!r} is not declared; declared: {sorted(models)}")
        if "cutoff" in st:
            from cotscope.analyses.cutoff import parse_cutoff

            try:
                st["cutoff"] = parse_cutoff(st["cutoff"])
            except ValueError as e:
                raise RecipeError(f"{where}: cutoff: {e}") from None
    for i, st in enumerate(stages):
        for ref_key in ("direction", "reference", "a", "b"):
            if ref_key in st and st[ref_key] not in names:
                raise RecipeError(f"{p}: stage {st['name']!r}: {ref_key} = {st[ref_key]!r} names no stage")
    return Recipe(
        p,
        dict(data.get("run", {})),
        {k: dict(v) for k, v in models.items()},
        stages,
        bool(data.get("figures", {}).get("enabled", True)),
    )


# ------------------------------------------------------------------------------------------------- stage bodies
def _model(ctx: RunContext, recipe: Recipe, name: str) -> Any:
    m = recipe.models[name]
    kw = {k: m[k] for k in ("dtype", "device_map", "device", "revision", "trust_remote_code") if k in m}
    return ctx.model(m["spec"], **kw)


def _pairs(spec: Any, columns: Mapping[str, Any] | None, pairing: str, seed: int, limit: int | None) -> list[Any]:
    from cotscope.probes.stimuli import generate_problems, make_pairs
    from cotscope.probes.stimuli.load import load_stimuli, load_thought_pairs, stimulus_pairs

    s = str(spec)
    if s == "bundled:thoughts":
        return stimulus_pairs(load_thought_pairs(limit=limit), pairing=pairing)
    if s.startswith("arithmetic:"):
        return make_pairs(generate_problems(int(s.split(":", 1)[1]), seed=seed), pairing=pairing)
    rows = load_stimuli(
        s, columns, limit=limit, require=("question", "cot", "direct") if pairing == "answer" else ("question",)
    )
    return stimulus_pairs(rows, pairing=pairing)


def _directions(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.analyses.atomic import write_json_atomic
        from cotscope.analyses.cutoff import describe_cutoff
        from cotscope.analyses.layer_sweep import analyse_store, directions_to_sets, public
        from cotscope.probes.collect import collect_pairs
        from cotscope.stages.llm import llm_summary

        lm = _model(ctx, recipe, st["model"])
        seed = int(recipe.run.get("seed", 0))
        rule = st.get("token_rule", "last_prompt")
        pairs = _pairs(
            st.get("data", "arithmetic:128"), st.get("columns"), st.get("pairing", "cue"), seed, st.get("limit")
        )
        positions = list(dict.fromkeys([rule, *st.get("positions", [])]))
        layers = None if st.get("layers", "all") == "all" else list(st["layers"])
        store = collect_pairs(
            lm,
            pairs,
            ctx.run_dir / "stores" / st["name"],
            layers=layers,
            positions=positions,
            batch_size=int(st.get("batch_size", 8)),
        )
        cutoff = st.get("cutoff", 0.1)
        res = analyse_store(store, rule, cutoff=cutoff, n_perm=int(st.get("n_perm", 200)), seed=seed)
        paths = {
            m: str(ds.save(ctx.run_dir / "directions" / f"{st['name']}_{m}.safetensors"))
            for m, ds in directions_to_sets(res, store).items()
        }
        full = public(res)
        full.update(
            {
                "model_id": lm.model_id,
                "pairing": st.get("pairing", "cue"),
                "n_problems": len(pairs),
                "directions": paths,
                "store": str(store.path),
                "cutoff": cutoff,
                "timings_s": {"load": 0.0, "collect": 0.0, "analyse": 0.0},
            }
        )
        write_json_atomic(ctx.run_dir / "analysis" / f"{st['name']}.json", full)
        out = llm_summary(full)
        out.update(
            {
                "token_rule": rule,
                "cutoff": describe_cutoff(cutoff, lm.hidden_size),
                "directions": paths,
                "eot_tokens": sorted({it.get("eot_token") for it in store.items if it.get("eot_token")}),
                "released": st.get("released"),
            }
        )
        return out

    return fn


def _compare(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.analyses.atomic import write_json_atomic
        from cotscope.analyses.crossmodel import DEFAULT_CUTOFFS, crossmodel_analysis
        from cotscope.analyses.store import ActivationStore

        stages = {s["name"]: s for s in recipe.stages}
        a, b = stages[st["a"]], stages[st["b"]]
        res = crossmodel_analysis(
            ActivationStore(ctx.run_dir / "stores" / a["name"]),
            ActivationStore(ctx.run_dir / "stores" / b["name"]),
            position=a.get("token_rule", "last_prompt"),
            vlm_position=b.get("token_rule"),
            cutoffs=st.get("cutoffs", DEFAULT_CUTOFFS),
            dispersion_cutoff=st.get("dispersion_cutoff", b.get("cutoff", 0.1)),
            n_perm=int(st.get("n_perm", 200)),
            seed=int(recipe.run.get("seed", 0)),
        )
        write_json_atomic(ctx.run_dir / "analysis" / f"{st['name']}.json", res)
        mid = res["layers"][len(res["layers"]) // 2]
        return {
            "pairs": res["layer_matching"]["pairs"],
            "mid_layer": {
                k: mid[k]
                for k in (
                    "llm_layer",
                    "vlm_layer",
                    "raw_cosine",
                    "dispersion_llm",
                    "dispersion_vlm",
                    "dispersion_vlm_lowpass",
                    "dispersion_vlm_lowpass_ref",
                )
            },
        }

    return fn


def _prompts(spec: str, lm: Any, seed: int) -> list[Any]:
    from cotscope.probes.sweep import EvalPrompt, direct_prompts, visual_prompts

    kind, _, rest = str(spec).partition(":")
    if kind == "arithmetic":
        from cotscope.probes.stimuli import generate_problems

        return direct_prompts(generate_problems(int(rest), seed=seed + 1000, difficulties=("easy",)))
    if kind == "visual":
        from cotscope.probes.stimuli.visual import generate_visual_items

        return visual_prompts(generate_visual_items(int(rest), seed=seed + 2000, kinds=("expression",)))
    if kind == "bench":
        from cotscope.probes.bench.specs import load_benchmark

        name, _, path = rest.partition(":")
        n = None
        if "@" in path:
            path, n = path.rsplit("@", 1)
        items = load_benchmark(name, path, limit=int(n) if n else None)
        return [EvalPrompt(id=s.id, question=s.question, gold=s.answer.display, image=s.image) for s in items]
    raise RecipeError(f"prompts {spec!r}: use arithmetic:N, visual:N or bench:NAME:PATH[@N]")


def _sweep(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.probes.sweep import SweepConfig, run_sweep
        from cotscope.stages.intervention import _summarise

        lm = _model(ctx, recipe, st["model"])
        seed = int(recipe.run.get("seed", 0))
        d = ctx.run_dir / "directions" / f"{st['direction']}_{st.get('method', 'mean_diff')}.safetensors"
        ref = None
        if st.get("reference"):
            ref = ctx.run_dir / "directions" / f"{st['reference']}_mean_diff.safetensors"
        controls = tuple(st.get("controls", ("none", "random", "highpass")))
        cfg = SweepConfig(
            layers=tuple(st.get("layers", (lm.n_layers // 2,))),
            lams=tuple(st.get("lams", (0.5,))),
            controls=controls,
            control_lams=tuple(st["control_lams"]) if "control_lams" in st else None,
            positions=tuple(st.get("positions", ("first",))),
            filter=st.get("filter", "lowpass"),
            cutoff=st.get("cutoff", 0.1),
            budget=int(st.get("budget", 32)),
            seed=seed,
            match_norm=bool(st.get("match_norm", False)),
            strength_reference=st.get("strength_reference", "source"),
            rows_per_batch=48,
        )
        prompts = _prompts(st.get("prompts", "arithmetic:8"), lm, seed)
        table = ctx.run_dir / "sweeps" / f"{st['name']}.csv"
        res = run_sweep(
            lm,
            d,
            prompts,
            table,
            cfg,
            own=ref if "own_lowpass" in controls else None,
            reference=ref if cfg.strength_reference == "target_direction" else None,
        )
        out = _summarise(table, res.to_dict() if hasattr(res, "to_dict") else res)
        out.update(
            {
                "model": lm.model_id,
                "strength_reference": cfg.strength_reference,
                "cutoff": cfg.cutoff,
                "released": st.get("released"),
            }
        )
        return out

    return fn


def _eval(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.analyses.bench.score import summarize_settings
        from cotscope.probes.bench.run import InjectSpec, bench_rows, run_benchmark
        from cotscope.probes.merge import merged_weights

        lm = _model(ctx, recipe, st["model"])
        judge = _model(ctx, recipe, st["judge"]) if st.get("judge") else None
        out_dir = ctx.run_dir / "eval"
        tables = []
        for s in st.get("settings", [{"name": "base"}]):
            inject = None
            if "inject" in s:
                i = dict(s["inject"])
                i["direction"] = (
                    ctx.run_dir / "directions" / f"{i.pop('direction')}_{i.pop('method', 'mean_diff')}.safetensors"
                )
                if "reference" in i:
                    i["reference"] = ctx.run_dir / "directions" / f"{i['reference']}_mean_diff.safetensors"
                inject = InjectSpec(**i)
            kw = dict(
                setting=s.get("name", "base"),
                inject=inject,
                max_new_tokens=int(st.get("max_new_tokens", 512)),
                batch_size=int(st.get("batch_size", 4)),
                limit=st.get("limit"),
                split=st.get("split"),
                text_only=bool(st.get("text_only", False)),
                judge=judge,
                progress=False,
            )
            if "merge" in s:
                m = dict(s["merge"])
                method = m.pop("method")
                reason = m.pop("reason")
                vl = m.pop("vl", recipe.models[st["model"]]["spec"])
                with merged_weights(lm, method=method, reason_dir=reason, vl_dir=vl, **m) as rec:
                    kw["merged"] = {"method": rec["method"], "params": rec["params"]}
                    r = run_benchmark(lm, st["bench"], st["data"], out_dir, **kw)
            else:
                r = run_benchmark(lm, st["bench"], st["data"], out_dir, **kw)
            tables.append(r["table"])
        rows = [row for t in tables for row in bench_rows(t)]
        from cotscope.probes.bench.specs import BENCHMARKS

        return {
            "bench": st["bench"],
            "tables": tables,
            "settings": summarize_settings(rows, BENCHMARKS[st["bench"]].breakdowns, baseline="base"),
        }

    return fn


def _attention(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.stages.attention import run_attention_demo

        lm = _model(ctx, recipe, st["model"])
        kw = {k: st[k] for k in ("max_new_tokens", "layers", "k") if k in st}
        out = run_attention_demo(
            lm,
            None,
            ctx.run_dir,
            n_items=int(st.get("n_items", 6)),
            seed=int(recipe.run.get("seed", 0)),
            figures=False,
            **kw,
        )
        return {**out, "released": st.get("released")}

    return fn


def _prior(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.stages.prior import prior_stage

        return prior_stage(
            ctx.run_dir,
            ctx.summary,
            reason_dir=_resolve_dir(st.get("reason")),
            vl_dir=_resolve_dir(st.get("vl")),
            n_steps=int(st.get("n_steps", 4)),
            out_dtype=st.get("out_dtype", "float16"),
        )

    return fn


def _merging(recipe: Recipe, st: dict[str, Any]) -> Callable[[RunContext], dict]:
    def fn(ctx: RunContext) -> dict:
        from cotscope.stages.merging import DEFAULT_MERGES, merging_stage

        merges = (
            [(m["method"], {k: v for k, v in m.items() if k != "method"}) for m in st["merges"]]
            if "merges" in st
            else DEFAULT_MERGES
        )
        rules = [
            None if r in ("none", None) else r
            for r in st.get("drift_rules", ("none", "absolute", "grad_norm", "adaptive"))
        ]
        return merging_stage(
            ctx.run_dir,
            ctx.summary,
            vlm=_model(ctx, recipe, st["model"]),
            reason_dir=_resolve_dir(st.get("reason")),
            vl_dir=_resolve_dir(st.get("vl")),
            n_prompts=int(st.get("n_prompts", 8)),
            budget=int(st.get("budget", 12)),
            merges=merges,
            drift_rules=rules,
            drift_steps=int(st.get("drift_steps", 2)),
            seed=int(recipe.run.get("seed", 0)),
        )

    return fn


def _resolve_dir(spec: Any) -> Any:
    """``embedded:smollm2`` / ``embedded:smolvlm`` → their folders; anything else unchanged."""
    if spec == "embedded:smollm2":
        from cotscope.probes.models.embedded import smollm2_dir

        return smollm2_dir()
    if spec == "embedded:smolvlm":
        from cotscope.probes.models.reference_vlm import reference_vlm_dir

        return reference_vlm_dir()
    return spec


BUILDERS = {
    "directions": _directions,
    "compare": _compare,
    "sweep": _sweep,
    "eval": _eval,
    "attention": _attention,
    "prior": _prior,
    "merging": _merging,
}


def compile_recipe(recipe: Recipe | str | Path) -> list[Stage]:
    """The recipe's stages as :class:`~cotscope.stages.Stage` objects, in order (``demo`` kinds are
    :func:`cotscope.demo.demo_stages`' own objects)."""
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out: list[Stage] = []
    demo = None
    for st in r.stages:
        if st["kind"] == "demo":
            if demo is None:
                from cotscope.demo import demo_stages

                demo = {s.name: s for s in demo_stages()}
            if st["name"] not in demo:
                raise RecipeError(f"{r.path}: demo stage {st['name']!r} does not exist; demo stages: {sorted(demo)}")
            out.append(demo[st["name"]])
            continue
        out.append(
            Stage(
                st["name"],
                BUILDERS[st["kind"]](r, st),
                required=bool(st.get("required", False)),
                needs=tuple(st.get("needs", ())),
            )
        )
    return out


def recipe_config(recipe: Recipe) -> dict[str, Any]:
    """The run configuration ``run_stages`` records (the demo's defaults for demo recipes, overridden by [run])."""
    cfg: dict[str, Any] = {}
    if any(st["kind"] == "demo" for st in recipe.stages):
        from cotscope.demo import DEMO_DEFAULTS

        cfg.update(DEMO_DEFAULTS)
    for st in recipe.stages:
        if st["kind"] == "demo":
            cfg.update(st.get("config", {}))
    cfg.update({k: v for k, v in recipe.run.items() if k not in ("name", "title", "dir")})
    cfg["recipe"] = str(recipe.path)
    return cfg


def run_recipe(recipe: Recipe | str | Path, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Compile and run a recipe into ``run_dir`` (default ``[run] dir`` or ``runs/<name>``); returns the summary."""
    from cotscope.stages import run_stages

    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    return run_stages(
        run_dir or r.run_dir,
        compile_recipe(r),
        recipe_config(r),
        title=r.run.get("title", r.path.stem),
        commands=[f"cotscope run {r.path}"],
        figures=r.figures,
    )


# ------------------------------------------------------------------------------------------------- dry run
def model_info(spec: str, m: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Blocks, width and parameter count from a local ``config.json`` (+ safetensors headers), the built-in table
    of the papers' models, or ``None`` fields when neither knows the model (no network is used)."""
    info = {"spec": spec, "source": "unknown", "n_layers": None, "hidden_size": None, "params_b": None}
    p = Path(str(spec))
    if p.is_dir() and (p / "config.json").is_file():
        cfg = json.loads((p / "config.json").read_text())
        tc = cfg.get("text_config") or cfg.get("llm_config") or cfg
        n = 0
        for f in p.glob("*.safetensors"):
            with open(f, "rb") as fh:
                hl = int.from_bytes(fh.read(8), "little")
                hdr = json.loads(fh.read(hl))
            n += sum(math.prod(v["shape"]) for k, v in hdr.items() if k != "__metadata__")
        info.update(
            source=str(p / "config.json"),
            n_layers=tc.get("num_hidden_layers"),
            hidden_size=tc.get("hidden_size"),
            params_b=n / 1e9 if n else None,
        )
        return info
    if str(spec) in PAPER_MODELS:
        info.update(PAPER_MODELS[str(spec)], source="built-in table (published configs)")
        return info
    base = Path(str(spec)).name.lower()  # a local folder not downloaded yet, named like the hub model
    for hub, v in PAPER_MODELS.items():
        if hub.split("/")[-1].lower() == base:
            info.update(v, source=f"built-in table (as {hub}; {spec} has no config.json yet)")
            break
    return info


def plan(recipe: Recipe | str | Path) -> dict[str, Any]:
    """What running the recipe will take, without loading any model: per stage the models, forward passes,
    generations and disk; overall the GPU memory (models stay loaded for the whole run) and totals."""
    r = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    infos = {n: {**model_info(m["spec"], m), "dtype": m.get("dtype", "float32")} for n, m in r.models.items()}
    for n, i in infos.items():
        b = DTYPE_BYTES.get(i["dtype"], 4)
        i["weights_gb"] = round(i["params_b"] * b, 2) if i["params_b"] else None
    rows, used = [], set()
    for st in r.stages:
        k = st["kind"]
        row = {"stage": st["name"], "kind": k, "generations": 0, "forward_passes": 0, "disk_gb": 0.0, "notes": ""}
        mi = infos.get(st.get("model", ""), {})
        if "model" in st:
            used.add(st["model"])
        if k == "directions":
            n = _n_items(st.get("data", "arithmetic:128"), st.get("limit"))
            L, d = mi.get("n_layers") or 0, mi.get("hidden_size") or 0
            pos = 1 + len(st.get("positions", []))
            row["forward_passes"] = 2 * n
            row["disk_gb"] = round(2 * n * L * d * 4 * pos / 1e9, 3)
            row["notes"] = f"{n} pairs × {L} layers × d={d}, {st.get('token_rule', 'last_prompt')}"
            if "cutoff" in st and d:
                from cotscope.analyses.cutoff import describe_cutoff

                c = describe_cutoff(st["cutoff"], d)
                row["notes"] += f", cutoff {c['bins']} of {c['n_bins']} bins ({c['fraction_of_bins']:.1%})"
        elif k == "sweep":
            n_p = _n_items(st.get("prompts", "arithmetic:8"), None)
            n_cells = len(st.get("layers", [1])) * len(st.get("lams", [0.5]))
            c_l = len(st.get("control_lams", st.get("lams", [0.5])))
            n_cells += sum(len(st.get("layers", [1])) * c_l for c in st.get("controls", []) if c != "none")
            n_cells += 1 if "none" in st.get("controls", ["none"]) else 0
            row["generations"] = n_p * n_cells
            row["notes"] = f"{n_p} prompts × {n_cells} cells, ≤ {st.get('budget', 32)} tokens each"
        elif k == "eval":
            n = st.get("limit") or _bench_rows(st.get("bench"), st.get("data"))
            row["generations"] = n * len(st.get("settings", [{}]))
            row["notes"] = (
                f"{n} items × {len(st.get('settings', [{}]))} settings, ≤ {st.get('max_new_tokens', 512)} tokens"
            )
            if st.get("judge"):
                used.add(st["judge"])
        elif k == "attention":
            row["generations"] = 2 * int(st.get("n_items", 6))
            row["notes"] = "eager attention on the captured layers; rows only"
        elif k in ("prior", "merging"):
            src = infos.get(st.get("model", ""), {}) or {}
            reason = model_info(
                str(
                    _resolve_dir(st.get("reason"))
                    if str(st.get("reason", "")).startswith("embedded:")
                    else st.get("reason", "")
                )
            )
            pb = reason.get("params_b") or src.get("params_b") or 0
            row["disk_gb"] = (
                round(pb * 0.8 * (2 if st.get("out_dtype", "float16") == "float16" else 4), 2) if k == "prior" else 0.0
            )
            row["notes"] = "streams one tensor pair at a time (peak ≈ the largest tensor)"
            if k == "merging":
                n_set = 1 + len(st.get("merges", [1, 2, 3, 4])) + len(st.get("drift_rules", [1, 2, 3, 4]))
                row["generations"] = int(st.get("n_prompts", 8)) * n_set
        elif k == "demo":
            row["notes"] = "a make-demo stage (embedded models; CPU)"
        rows.append(row)
    gpu = sum(infos[n]["weights_gb"] or 0 for n in used if n in infos)
    per_stage = [
        sum(infos[m]["weights_gb"] or 0 for m in {st.get("model"), st.get("judge")} if m in infos) for st in r.stages
    ]
    unknown = sorted(n for n in used if n in infos and infos[n]["weights_gb"] is None)
    return {
        "recipe": str(r.path),
        "run_dir": str(r.run_dir),
        "models": infos,
        "stages": rows,
        "gpu_memory_gb": round(gpu * 1.15, 1),
        "gpu_memory_one_model_at_a_time_gb": round(max(per_stage, default=0) * 1.15, 1),
        "unknown_models": unknown,
        "disk_gb": round(sum(x["disk_gb"] for x in rows), 3),
        "generations": sum(x["generations"] for x in rows),
        "forward_passes": sum(x["forward_passes"] for x in rows),
        "assumptions": "weights × 1.15 for activations/KV cache; every model of the run stays loaded (stages "
        "share them); float32 activation stores; eval sizes are the published splits unless "
        "limit= or a local copy says otherwise",
    }


def _n_items(spec: Any, limit: int | None) -> int:
    s = str(spec)
    if s == "bundled:thoughts":
        from cotscope.probes.stimuli.load import bundled_thoughts_path

        n = sum(1 for l in bundled_thoughts_path().read_text().splitlines() if l.strip())
    elif ":" in s and s.split(":", 1)[0] in ("arithmetic", "visual"):
        n = int(s.split(":", 1)[1])
    elif s.startswith("bench:"):
        name, _, path = s[6:].partition(":")
        n = int(path.rsplit("@", 1)[1]) if "@" in path else _bench_rows(name, path)
    else:
        n = _bench_rows(None, s)
    return min(n, limit) if limit else n


def _bench_rows(bench: str | None, data: Any) -> int:
    p = Path(str(data)) if data else None
    if p is not None and p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(p).metadata.num_rows
    if p is not None and p.is_file() and p.suffix in (".jsonl", ".csv", ".tsv"):
        return sum(1 for l in p.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()) - (
            1 if p.suffix in (".csv", ".tsv") else 0
        )
    if bench == "mcq" and p is not None and "m3cot" in str(p).lower():
        return 2318  # M3CoT test split
    return BENCH_SIZES.get(bench or "", 0)


def format_plan(pl: Mapping[str, Any]) -> str:
    """The dry-run plan as text."""
    lines = [f"recipe {pl['recipe']} → {pl['run_dir']}", "", "models:"]
    for n, i in pl["models"].items():
        lines.append(
            f"  {n}: {i['spec']} — {i['n_layers']} layers, d={i['hidden_size']}, "
            f"{i['params_b'] if i['params_b'] is None else round(i['params_b'], 3)} B params, {i['dtype']}"
            f" ≈ {i['weights_gb']} GB weights ({i['source']})"
        )
    lines += ["", "stages:"]
    for s in pl["stages"]:
        lines.append(
            f"  {s['stage']} [{s['kind']}]: {s['generations']} generations, {s['forward_passes']} forward "
            f"passes, {s['disk_gb']} GB disk — {s['notes']}"
        )
    lines += [
        "",
        f"estimated GPU memory {pl['gpu_memory_gb']} GB with every model of the run loaded "
        f"({pl['gpu_memory_one_model_at_a_time_gb']} GB for the largest single stage), disk {pl['disk_gb']} GB, "
        f"{pl['generations']} generations, {pl['forward_passes']} forward passes",
        f"({pl['assumptions']})",
    ]
    if pl.get("unknown_models"):
        lines.append(
            f"no size known for {pl['unknown_models']} (no local config.json, not in the built-in table): "
            "the memory estimate leaves them out"
        )
    return "\n".join(lines)
