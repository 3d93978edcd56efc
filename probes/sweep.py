"""Layer × λ sweeps of latent intervention, with controls, batched per prompt, resumable.

One batch holds the rows of one prompt (or a few prompts) under many settings — every (layer, λ) cell of
the real vector, the controls and the no-injection baseline — and runs as **one** ``generate`` call with
per-row injection (:func:`probes.intervene.generate_steered`). Rows are appended to a tidy
:class:`analyses.sweeps.SweepTable` after every batch; rerunning the same sweep skips finished rows, and a
table from a different configuration is refused before anything runs.

>>> lm = load_model("embedded:smollm2")                                             # doctest: +SKIP
>>> cfg = SweepConfig(layers=(8, 14, 20), lams=(0.3, 0.6, 0.9), budget=16)          # doctest: +SKIP
>>> prompts = direct_prompts(generate_problems(8, seed=1))                          # doctest: +SKIP
>>> run_sweep(lm, "runs/demo/directions/llm_mean_diff.safetensors", prompts, "runs/x/sweep.csv", cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.artifacts import DirectionSet
from cotscope.analyses.results import SweepResult
from cotscope.analyses.sweeps import SweepTable
from cotscope.probes.evaluate import DEFAULT_TEMPLATE, extract_answer, forced_answer, is_correct
from cotscope.probes.intervene import (
    CONTROLS,
    InjectionError,
    RowSteer,
    as_direction_set,
    build_controls,
    check_lam,
    generate_steered,
    normalize_positions,
)
from cotscope.probes.models.context import check_context
from cotscope.probes.models.loading import LoadedModel
from cotscope.probes.stimuli.pairs import DIRECT_CUE

SCHEMA = {
    "cell_id": "str",
    "control": "str",
    "layer": "int",
    "layers": "str",
    "lam": "float",
    "prompt_id": "str",
    "prompt_idx": "int",
    "gold": "str",
    "seed": "int",
    "row_seed": "int",
    "batch": "int",
    "target_model": "str",
    "source_model": "str",
    "src_layers": "str",
    "vec_norm": "float",
    "positions": "str",
    "renorm": "bool",
    "filter": "str",
    "cutoff": "str",
    "strength_reference": "str",
    "ref_norm": "float",
    "budget": "int",
    "max_new_tokens": "int",
    "temperature": "float",
    "top_p": "float",
    "response": "json",
    "pred": "str",
    "correct": "bool",
    "n_tokens": "int",
    "stopped": "bool",
    "logprob": "float",
    "gold_logprob": "float",
    "answer_logprob": "float",
    "gold_argmax": "bool",
}
KEY = ("cell_id", "prompt_id")


@dataclasses.dataclass(frozen=True)
class EvalPrompt:
    """A question with its gold answer (and an image for VLMs)."""

    id: str
    question: str
    gold: Any
    image: Any = None

    def render(self, lm: LoadedModel) -> str:
        """The chat-templated prompt for ``lm`` (with the family's image placeholder when there is an image)."""
        q = self.question
        if self.image is not None:
            if not lm.is_vlm:
                raise InjectionError(f"prompt {self.id} has an image but {lm.model_id} is a text-only model")
            from cotscope.probes.models.processors import image_prompt

            q = image_prompt(lm.processor, q)
        tok = lm.tokenizer
        tmpl = getattr(tok, "chat_template", None) or getattr(lm.processor, "chat_template", None)
        return tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True, chat_template=tmpl
        )

    def image_hash(self) -> str | None:
        if self.image is None:
            return None
        from cotscope.probes.collect import image_sha256

        return image_sha256(self.image)


def direct_prompts(problems: Sequence[Any], cue: str = DIRECT_CUE) -> list[EvalPrompt]:
    """Direct-answer text prompts from :class:`~probes.stimuli.arithmetic.Problem` objects."""
    empty = [p.id for p in problems if not str(p.question).strip()]
    if empty:
        raise InjectionError(
            f"problems {empty[:5]} have an empty question; only the cue would be asked. Fix: drop "
            "them or give them a question"
        )
    return [EvalPrompt(id=p.id, question=f"{p.question} {cue}", gold=p.answer) for p in problems]


def visual_prompts(items: Sequence[Any], cot: bool = False) -> list[EvalPrompt]:
    """Image prompts from :class:`~probes.stimuli.visual.VisualItem` objects (direct cue by default)."""
    return [
        EvalPrompt(id=it.id, question=it.cot_prompt if cot else it.direct_prompt, gold=it.answer, image=it.image)
        for it in items
    ]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A layer × λ grid with controls.

    ``layers`` entries are ints (one block) or tuples (inject at several blocks at once). ``controls`` are
    run beside the real vector at ``control_layers`` × ``control_lams`` (``None`` = the full grid);
    ``"none"`` is a single baseline cell. See :func:`probes.intervene.build_controls` for the vectors.
    ``cutoff`` is a bin count (int, e.g. the released 200) or a fraction of the target's rfft bins (float).
    ``strength_reference`` (``"source"``, ``"target_direction"``, ``"hidden_norm"``) says what λ is relative to;
    it and the reference norm of each cell's layer are written into every row.
    """

    layers: tuple = (8, 14, 20)
    lams: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    controls: tuple[str, ...] = ("none", "random", "highpass", "unfiltered")
    control_layers: tuple | None = None
    control_lams: tuple[float, ...] | None = None
    positions: tuple[str, ...] = ("first",)
    renorm: bool = True
    filter: str = "lowpass"
    cutoff: int | float | None = 0.1
    resample: bool = True
    layer_map: str = "auto"
    match_norm: bool = False
    unit_norm: bool = False
    strength_reference: str = "source"
    budget: int = 32
    score: bool = True
    answer_template: str = DEFAULT_TEMPLATE
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    rows_per_batch: int = 32
    share_prefix: bool | str = "auto"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [list(l) if isinstance(l, (tuple, list)) else int(l) for l in self.layers]
        return d


@dataclasses.dataclass(frozen=True)
class Cell:
    """One sweep condition."""

    cell_id: str
    control: str
    layers: tuple[int, ...]
    lam: float


def _layer_tuple(entry: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in entry) if isinstance(entry, (tuple, list)) else (int(entry),)


def _label(layers: tuple[int, ...]) -> str:
    return "+".join(str(l) for l in layers)


def plan_cells(cfg: SweepConfig, n_layers: int) -> list[Cell]:
    """Every cell of the grid (real vector first, then controls, then the baseline), validated."""
    if not cfg.layers:
        raise InjectionError("the sweep has no layers; pass layers=(…)")
    if not cfg.lams:
        raise InjectionError("the sweep has no strengths; pass lams=(…)")
    for lam in list(cfg.lams) + list(cfg.control_lams or ()):
        check_lam(lam)
    unknown = [c for c in cfg.controls if c not in CONTROLS or c == "real"]
    if unknown:
        raise InjectionError(f"unknown controls {unknown}; choose from {[c for c in CONTROLS if c != 'real']}")

    def norm(entry):
        out = []
        for l in _layer_tuple(entry):
            if not -n_layers <= l < n_layers:
                raise InjectionError(
                    f"layer {l} is out of range for a model with {n_layers} decoder blocks "
                    f"(valid 0..{n_layers - 1}, or -{n_layers}..-1)"
                )
            out.append(l % n_layers)
        return tuple(sorted(set(out)))

    grid = [norm(e) for e in cfg.layers]
    cgrid = [norm(e) for e in cfg.control_layers] if cfg.control_layers is not None else grid
    clams = tuple(cfg.control_lams) if cfg.control_lams is not None else tuple(cfg.lams)
    cells = [Cell(f"real|L{_label(ls)}|lam{float(lam):g}", "real", ls, float(lam)) for ls in grid for lam in cfg.lams]
    for c in cfg.controls:
        if c == "none":
            continue
        cells += [Cell(f"{c}|L{_label(ls)}|lam{float(lam):g}", c, ls, float(lam)) for ls in cgrid for lam in clams]
    if "none" in cfg.controls:
        cells.append(Cell("none", "none", (), 0.0))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise InjectionError("the grid repeats a (layers, λ) cell; remove duplicate layers or strengths")
    return cells


def plan_batches(n_prompts: int, n_cells: int, rows_per_batch: int) -> list[list[tuple[int, int]]]:
    """Rows ``(prompt_idx, cell_idx)`` grouped into batches, prompt-major, never splitting a prompt unless it
    has more cells than fit in a batch. Deterministic.

    >>> [len(b) for b in plan_batches(3, 4, 10)]
    [8, 4]
    """
    if rows_per_batch < 1:
        raise InjectionError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
    batches: list[list[tuple[int, int]]] = []
    if n_cells <= rows_per_batch:
        per = max(1, rows_per_batch // n_cells)
        for p0 in range(0, n_prompts, per):
            batches.append([(p, c) for p in range(p0, min(n_prompts, p0 + per)) for c in range(n_cells)])
    else:
        k = -(-n_cells // rows_per_batch)
        bounds = np.linspace(0, n_cells, k + 1).round().astype(int)
        for p in range(n_prompts):
            for a, b in zip(bounds[:-1], bounds[1:]):
                batches.append([(p, c) for c in range(a, b)])
    return batches


def _row_seed(seed: int, prompt_id: str, cell_id: str) -> int:
    return int(hashlib.sha256(f"{seed}|{prompt_id}|{cell_id}".encode()).hexdigest()[:8], 16)


def sweep_config_record(
    lm: LoadedModel, ds: DirectionSet, prompts: Sequence[EvalPrompt], cfg: SweepConfig, own: DirectionSet | None
) -> dict[str, Any]:
    """Everything that determines a sweep table's values (stored in its sidecar, compared on resume)."""

    def dir_hash(d: DirectionSet | None) -> str | None:
        if d is None:
            return None
        h = hashlib.sha256()
        for l, v in d.vectors.items():
            h.update(str(l).encode())
            h.update(np.ascontiguousarray(v, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    return {
        "sweep": cfg.to_dict(),
        "target": {k: v for k, v in lm.provenance().items() if k != "source"},
        "direction": {
            "model_id": ds.meta.model_id,
            "method": ds.meta.method,
            "layers": ds.layers,
            "hidden_size": ds.hidden_size,
            "hash": dir_hash(ds),
        },
        "own_direction": dir_hash(own),
        "prompts": [
            {"id": p.id, "gold": str(p.gold), "question": p.question, "image": p.image_hash()} for p in prompts
        ],
    }


def open_table(path: str | Path, config: dict[str, Any], overwrite: bool = False) -> SweepTable:
    return SweepTable(path, config, SCHEMA, KEY, overwrite=overwrite)


def run_sweep(
    lm: LoadedModel,
    direction: Any,
    prompts: Sequence[EvalPrompt],
    table: str | Path,
    cfg: SweepConfig = SweepConfig(),
    *,
    own: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    max_batches: int | None = None,
    part: tuple[int, int] | None = None,
    reference: Any = None,
) -> SweepResult:
    """Run (or resume) the sweep; returns a :class:`~analyses.results.SweepResult` (``.table``, ``.rows``,
    ``.complete``, ``.batches_run``, ``.seconds``, ``.cells`` …; ``.to_pandas()`` reads the table).

    ``max_batches`` stops after that many batches (to test resuming). ``part=(i, n)`` runs only batches
    ``i, i+n, …`` into its own table (worker ``i`` of ``n``; :func:`cotscope.workers.merge_sweep_tables` joins
    the parts into the one-process table). Everything is validated first:
    strengths, layers, the direction (NaN, zeros, width with ``resample=False``), the table's configuration.
    ``reference`` feeds ``cfg.strength_reference``: the target's own direction for ``"target_direction"``
    (default ``own``), ``{layer: mean ‖h‖}`` for ``"hidden_norm"`` (default: measured on ``prompts``).
    """
    from tqdm.auto import tqdm

    if not prompts:
        raise InjectionError("no prompts to evaluate; pass at least one EvalPrompt")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise InjectionError("prompt ids repeat; every EvalPrompt needs a unique id")
    empty = [p.id for p in prompts if not str(p.question).strip()]
    if empty:
        raise InjectionError(
            f"prompts {empty[:5]} have an empty question; the model would answer the chat template "
            "alone. Fix: drop them or give them a question"
        )
    normalize_positions(cfg.positions)
    cells = plan_cells(cfg, lm.n_layers)
    ds = as_direction_set(direction)
    own_ds = as_direction_set(own, "own direction") if own is not None else None
    all_layers = sorted({l for c in cells for l in c.layers})
    kinds = ["real"] + [c for c in cfg.controls if c != "none"]
    if cfg.unit_norm and cfg.strength_reference != "source":
        raise InjectionError(
            f"unit_norm=True and strength_reference={cfg.strength_reference!r} both set the vector "
            "norm; use one of them"
        )
    rendered = [p.render(lm) for p in prompts]
    forced = [forced_answer(lm.tokenizer, p.gold, cfg.answer_template) if cfg.score else None for p in prompts]
    # before anything runs (text tokens; image tokens are added and checked per batch in generate_steered)
    check_context(
        lm,
        [len(lm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered],
        new_tokens=cfg.budget + max((len(f.ids) for f in forced if f is not None), default=0),
        name=lambda i: f"prompt {ids[i]!r}",
        fix=f"shorten the question, or lower budget (now {cfg.budget})",
    )
    if cfg.strength_reference == "hidden_norm" and reference is None:
        from cotscope.probes.intervene import mean_hidden_norms

        reference = mean_hidden_norms(
            lm, rendered, all_layers, images=[p.image for p in prompts] if prompts[0].image is not None else None
        )
    iv = build_controls(
        ds,
        lm,
        all_layers,
        controls=kinds,
        filter=cfg.filter,
        cutoff=cfg.cutoff,
        resample=cfg.resample,
        own=own_ds,
        seed=cfg.seed,
        layer_map=cfg.layer_map,
        match_norm=cfg.match_norm,
        strength_reference=cfg.strength_reference,
        reference=reference,
    )
    if cfg.unit_norm:
        for per in iv.vectors.values():
            for l in per:
                per[l] = (per[l] / np.linalg.norm(per[l])).astype(np.float32)
    config = sweep_config_record(lm, ds, prompts, cfg, own_ds)
    if cfg.strength_reference != "source":  # the reference norms decide the rows' vectors (rounded: stable on resume)
        config["reference_norms"] = {str(l): round(v, 3) for l, v in iv.settings["reference_norms"].items()}
    tab = open_table(table, config, overwrite=overwrite)
    done = tab.done_keys()
    batches = plan_batches(len(prompts), len(cells), cfg.rows_per_batch)
    todo = [
        (bi, b)
        for bi, b in enumerate(batches)
        if (part is None or bi % part[1] == part[0]) and any((cells[c].cell_id, ids[p]) not in done for p, c in b)
    ]
    max_forced = max((len(f.ids) for f in forced if f is not None), default=0)
    timing_file = Path(str(tab.path) + ".timing.jsonl")
    bar = tqdm(
        total=len(batches),
        initial=len(batches) - len(todo),
        unit="batch",
        disable=not progress,
        desc=f"sweep {lm.model_id[:24]}",
    )
    t_all, ran = time.perf_counter(), 0
    for k, (bi, batch) in enumerate(todo):
        if max_batches is not None and k >= max_batches:
            break
        steers = []
        for p, c in batch:
            cell = cells[c]
            steers.append(
                RowSteer.none()
                if cell.control == "none"
                else RowSteer.at(iv.vectors[cell.control], cell.layers, cell.lam)
            )
        t0 = time.perf_counter()
        res = generate_steered(
            lm,
            [rendered[p] for p, _ in batch],
            steers,
            images=[prompts[p].image for p, _ in batch] if prompts[0].image is not None else None,
            positions=cfg.positions,
            renorm=cfg.renorm,
            budget=cfg.budget,
            forced=[forced[p] for p, _ in batch] if cfg.score else None,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seeds=[_row_seed(cfg.seed, ids[p], cells[c].cell_id) for p, c in batch],
            share_prefix=cfg.share_prefix,
        )
        dt = time.perf_counter() - t0
        rows = []
        for (p, c), r in zip(batch, res):
            cell = cells[c]
            if (cell.cell_id, ids[p]) in done:
                continue
            pred = extract_answer(r.text)
            norms = [iv.norms[cell.control][l] for l in cell.layers] if cell.control != "none" else []
            rows.append(
                {
                    "cell_id": cell.cell_id,
                    "control": cell.control,
                    "layer": cell.layers[0] if len(cell.layers) == 1 else None,
                    "layers": _label(cell.layers),
                    "lam": cell.lam if cell.control != "none" else None,
                    "prompt_id": ids[p],
                    "prompt_idx": p,
                    "gold": str(prompts[p].gold),
                    "seed": cfg.seed,
                    "row_seed": _row_seed(cfg.seed, ids[p], cell.cell_id),
                    "batch": bi,
                    "target_model": lm.model_id,
                    "source_model": ds.meta.model_id,
                    "src_layers": _label(tuple(iv.src_layer[l] for l in cell.layers)),
                    "vec_norm": float(np.sqrt(sum(n * n for n in norms))) if norms else 0.0,
                    "positions": "+".join(normalize_positions(cfg.positions)),
                    "renorm": cfg.renorm,
                    "filter": cfg.filter,
                    "cutoff": "" if cfg.cutoff is None else str(cfg.cutoff),
                    "strength_reference": cfg.strength_reference,
                    "ref_norm": (
                        float(np.sqrt(sum(iv.settings["reference_norms"][l] ** 2 for l in cell.layers)))
                        if cell.control != "none"
                        else None
                    ),
                    "budget": cfg.budget,
                    "max_new_tokens": cfg.budget + (max_forced if cfg.score else 0),
                    "temperature": cfg.temperature,
                    "top_p": cfg.top_p,
                    "response": r.text,
                    "pred": pred,
                    "correct": is_correct(pred, prompts[p].gold, extracted=True),
                    "n_tokens": r.n_tokens,
                    "stopped": r.stopped,
                    "logprob": r.logprob,
                    "gold_logprob": r.gold_logprob,
                    "answer_logprob": r.answer_logprob,
                    "gold_argmax": r.gold_argmax,
                }
            )
        tab.append(rows)
        with open(timing_file, "a") as fh:
            fh.write(
                json.dumps(
                    {"batch": bi, "rows": len(batch), "seconds": round(dt, 3), "prompts": len({p for p, _ in batch})}
                )
                + "\n"
            )
        done |= {(r["cell_id"], r["prompt_id"]) for r in rows}
        ran += 1
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t_all
    n_rows = len(tab.done_keys())
    return SweepResult(
        table=str(tab.path),
        rows=n_rows,
        rows_expected=len(prompts) * len(cells),
        complete=n_rows == len(prompts) * len(cells),
        batches=len(batches),
        batches_run=ran,
        seconds=seconds,
        cells=[c.cell_id for c in cells],
        vector_norms=iv.norms,
        src_layer=iv.src_layer,
        settings=iv.settings,
    )


def timing(table: str | Path) -> dict[str, float]:
    """Per-batch and per-row seconds of a table's runs (from its ``.timing.jsonl``)."""
    f = Path(str(table) + ".timing.jsonl")
    if not f.is_file():
        return {}
    recs = []
    for line in f.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by an interrupted run: timings only, skip it
            continue
    if not recs:
        return {}
    secs = np.array([r["seconds"] for r in recs])
    rows = np.array([r["rows"] for r in recs])
    return {
        "batches": len(recs),
        "rows": int(rows.sum()),
        "seconds": float(secs.sum()),
        "median_batch_s": float(np.median(secs)),
        "seconds_per_row": float(secs.sum() / rows.sum()),
    }


# Moved to the orchestration layer (cotscope.stages); the old names warn for one release.
from cotscope._compat import forward as _forward  # noqa: E402

__getattr__ = _forward(
    "probes.sweep",
    {
        "ensure_direction": "cotscope.stages.intervention",
        "gains_by_layer": "cotscope.stages.intervention",
        "run_demo_sweep": "cotscope.stages.intervention",
        "render_figures": "cotscope.stages.intervention",
        "demo_report": "cotscope.stages.intervention",
    },
)
