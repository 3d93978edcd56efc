"""Evaluate a model on a benchmark: as is, with a CoT direction injected, or with merged weights; resumable rows.

One table per (benchmark, setting): ``<out>/<bench>-<setting>.csv`` (a :class:`~analyses.sweeps.SweepTable`:
appended per batch, a rerun skips finished items, a different configuration is refused). Each row holds the
item, its category and question type, the gold, the response, the extracted prediction (rule-based, or from the
judge when the rules found nothing and a judge was given), correctness and the response length in tokens.
:func:`analyses.bench.score.summarize` turns the rows into accuracy with a Wilson 95% CI and breakdowns.

>>> lm = load_model("/models/Qwen2-VL-7B-Instruct", device_map="auto", dtype="bfloat16")      # doctest: +SKIP
>>> res = run_benchmark(lm, "mathvista", "data/MathVista", "runs/eval", max_new_tokens=512)   # doctest: +SKIP
>>> res["summary"]["accuracy"], res["summary"]["ci_low"]                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.answers import AnswerSpec
from cotscope.analyses.bench.extract import extract, judge_prompt, parse_judge_output
from cotscope.analyses.bench.score import summarize
from cotscope.analyses.sweeps import SweepTable, read_table
from cotscope.probes.bench.specs import BENCHMARKS, BenchmarkError, BenchSpec, load_benchmark
from cotscope.probes.models.loading import LoadedModel
from cotscope.probes.stimuli.load import Stimulus

SCHEMA = {
    "setting": "str",
    "item_id": "str",
    "bench": "str",
    "category": "str",
    "question_type": "str",
    "answer_type": "str",
    "gold": "str",
    "choices": "json",
    "response": "json",
    "pred": "str",
    "pred_source": "str",
    "correct": "bool",
    "n_tokens": "int",
    "stopped": "bool",
    "target_model": "str",
    "batch": "int",
}
KEY = ("setting", "item_id")

Judge = Callable[[str, str, AnswerSpec], "str | None"]


@dataclasses.dataclass
class InjectSpec:
    """A CoT direction to inject during every generation (see :func:`probes.intervene.build_controls`)."""

    direction: Any
    layers: Sequence[int]
    lam: float
    filter: str = "lowpass"
    cutoff: int | float | None = 0.1
    positions: Sequence[str] = ("first",)
    renorm: bool = True
    strength_reference: str = "source"
    reference: Any = None
    layer_map: str = "auto"

    def record(self) -> dict[str, Any]:
        from cotscope.probes.intervene import as_direction_set

        ds = as_direction_set(self.direction)
        h = hashlib.sha256()
        for l in sorted(ds.vectors):
            h.update(str(l).encode())
            h.update(ds.vectors[l].astype("float32").tobytes())
        return {
            "direction": {"model_id": ds.meta.model_id, "hash": h.hexdigest()[:16]},
            "layers": list(self.layers),
            "lam": float(self.lam),
            "filter": self.filter,
            "cutoff": self.cutoff,
            "positions": list(self.positions),
            "renorm": self.renorm,
            "strength_reference": self.strength_reference,
            "layer_map": self.layer_map,
        }


class ModelJudge:
    """A judge hook backed by any loaded model: it reads the question and the response and writes the final answer.

    Used only where the rule-based extractor finds nothing (or on every row with ``mode="always"``).
    """

    def __init__(self, model: LoadedModel, max_new_tokens: int = 12) -> None:
        self.model, self.max_new_tokens = model, max_new_tokens

    def __call__(self, question: str, response: str, spec: AnswerSpec) -> str | None:
        from cotscope.probes.intervene import generate_steered

        tok = self.model.tokenizer
        text = tok.apply_chat_template(
            [{"role": "user", "content": judge_prompt(question, response, spec)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        out = generate_steered(self.model, [text], [None], budget=self.max_new_tokens)
        return parse_judge_output(out[0].text, spec)

    @property
    def name(self) -> str:
        return self.model.model_id


def _render(lm: LoadedModel, s: Stimulus) -> str:
    from cotscope.probes.sweep import EvalPrompt

    return EvalPrompt(id=s.id, question=s.question, gold=None, image=s.image).render(lm)


def _data_hash(items: Sequence[Stimulus]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(json.dumps([s.id, s.question, s.answer.to_dict() if s.answer else None], sort_keys=True).encode())
    return h.hexdigest()[:16]


def run_benchmark(
    lm: LoadedModel,
    bench: str | BenchSpec,
    data: str | Path | Sequence[Stimulus],
    out_dir: str | Path,
    *,
    setting: str = "base",
    inject: InjectSpec | None = None,
    merged: Any = None,
    max_new_tokens: int = 512,
    batch_size: int = 4,
    limit: int | None = None,
    split: str | None = None,
    image_root: str | Path | None = None,
    text_only: bool = False,
    judge: Judge | LoadedModel | None = None,
    judge_mode: str = "fallback",
    prompt_suffix: str = "",
    overwrite: bool = False,
    progress: bool = True,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Generate an answer for every item, extract and score it, and append the rows to the setting's table.

    Args:
        bench: ``mathvista``, ``mathverse``, ``mmstar``, ``mcq`` or a :class:`BenchSpec`.
        data: the local copy (file or ``save_to_disk`` folder), or already loaded stimuli.
        setting: the table's label (``base``, ``inject``, ``merge-ties`` …); ``inject`` adds a direction during
            generation; ``merged`` records which merged weights the model already carries (a name or record).
        judge: a callable ``(question, response, AnswerSpec) -> answer | None`` or a loaded model (:class:`ModelJudge`);
            ``judge_mode="fallback"`` asks it only when the rules find no answer, ``"always"`` on every row.
        prompt_suffix: text appended to every question (e.g. a CoT cue).
    Returns ``{"table", "rows", "summary", "seconds", "batches_run", …}`` (summary: :func:`summarize`).
    """
    from tqdm.auto import tqdm

    from cotscope.probes.intervene import RowSteer, build_controls, generate_steered, mean_hidden_norms

    spec = BENCHMARKS.get(bench) if isinstance(bench, str) else bench
    if spec is None:
        raise BenchmarkError(f"unknown benchmark {bench!r}; choose from {sorted(BENCHMARKS)}")
    if judge_mode not in ("fallback", "always"):
        raise BenchmarkError(f"judge_mode must be 'fallback' or 'always', got {judge_mode!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise BenchmarkError("batch_size and max_new_tokens must be at least 1")
    items = (
        list(data)
        if not isinstance(data, (str, Path))
        else load_benchmark(spec, data, split=split, limit=limit, image_root=image_root, text_only=text_only)
    )
    if limit is not None:
        items = items[:limit]
    if not items:
        raise BenchmarkError("no items to evaluate")
    has_img = [s.image is not None for s in items]
    if any(has_img) and not lm.is_vlm:
        raise BenchmarkError(
            f"{lm.model_id} is a text-only model but {sum(has_img)} of {len(items)} items have images; "
            "pass text_only=True (--text-only) to drop them, or evaluate a VLM"
        )
    if prompt_suffix:
        items = [dataclasses.replace(s, question=f"{s.question}{prompt_suffix}") for s in items]
    judge_fn = ModelJudge(judge) if isinstance(judge, LoadedModel) else judge
    rendered = [_render(lm, s) for s in items]
    steer = None
    inject_rec = None
    if inject is not None:
        ref = inject.reference
        if inject.strength_reference == "hidden_norm" and ref is None:
            ref = mean_hidden_norms(
                lm,
                rendered[: min(16, len(rendered))],
                inject.layers,
                images=[s.image for s in items[:16]] if any(has_img) else None,
            )
        iv = build_controls(
            inject.direction,
            lm,
            inject.layers,
            controls=("real",),
            filter=inject.filter,
            cutoff=inject.cutoff,
            strength_reference=inject.strength_reference,
            reference=ref,
            layer_map=inject.layer_map,
        )
        steer = RowSteer.at(iv.vectors["real"], lm.check_layers(inject.layers), inject.lam)
        inject_rec = {
            **inject.record(),
            "reference_norms": {str(k): round(v, 3) for k, v in iv.settings["reference_norms"].items()},
        }
    config = {
        "bench": spec.name,
        "source": spec.source,
        "n_items": len(items),
        "data_hash": _data_hash(items),
        "model": {k: v for k, v in lm.provenance().items() if k != "source"},
        "setting": setting,
        "inject": inject_rec,
        "merged": merged,
        "max_new_tokens": max_new_tokens,
        "prompt_suffix": prompt_suffix,
        "judge": getattr(judge_fn, "name", None) if judge_fn is not None else None,
        "judge_mode": judge_mode,
        "text_only": text_only,
    }
    out_dir = Path(out_dir)
    table = SweepTable(out_dir / f"{spec.name}-{setting}.csv", config, SCHEMA, KEY, overwrite=overwrite)
    done = {k[1] for k in table.done_keys()}
    todo = [i for i, s in enumerate(items) if s.id not in done]
    batches = []  # image and text-only items never share a batch (ScienceQA mixes them)
    for group in ([i for i in todo if has_img[i]], [i for i in todo if not has_img[i]]):
        batches += [group[a : a + batch_size] for a in range(0, len(group), batch_size)]
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        unit="item",
        disable=not progress,
        desc=f"{spec.name} {setting}",
    )
    t0, ran = time.perf_counter(), 0
    for bi, idx in enumerate(batches):
        if max_batches is not None and bi >= max_batches:
            break
        imgs = [items[i].image for i in idx] if has_img[idx[0]] else None
        res = generate_steered(
            lm,
            [rendered[i] for i in idx],
            [steer] * len(idx),
            images=imgs,
            positions=inject.positions if inject else "first",
            renorm=inject.renorm if inject else True,
            budget=max_new_tokens,
            share_prefix=False,
        )
        rows = []
        for i, r in zip(idx, res):
            s = items[i]
            pred = extract(r.text, s.answer)
            source = "rule" if pred is not None else "none"
            if judge_fn is not None and (judge_mode == "always" or pred is None):
                jp = judge_fn(s.question, r.text, s.answer)
                if jp is not None:
                    pred, source = jp, "judge"
            rows.append(
                {
                    "setting": setting,
                    "item_id": s.id,
                    "bench": spec.name,
                    "category": s.category,
                    "question_type": s.question_type,
                    "answer_type": s.answer.type,
                    "gold": s.answer.display,
                    "choices": list(s.choices),
                    "response": r.text,
                    "pred": pred,
                    "pred_source": source,
                    "correct": s.answer.match(pred),
                    "n_tokens": r.n_tokens,
                    "stopped": r.stopped,
                    "target_model": lm.model_id,
                    "batch": bi,
                }
            )
        table.append(rows)
        ran += 1
        bar.update(len(idx))
    bar.close()
    rows = read_table(table.path)
    ids = {s.id for s in items}
    rows = [r for r in rows if r["item_id"] in ids]
    meta_by_id = {s.id: s.meta for s in items}
    for r in rows:
        for b in spec.breakdowns:
            if b not in r and b in meta_by_id.get(r["item_id"], {}):
                r[b] = meta_by_id[r["item_id"]][b]
    return {
        "table": str(table.path),
        "bench": spec.name,
        "setting": setting,
        "rows": len(rows),
        "rows_expected": len(items),
        "complete": len(rows) == len(items),
        "batches_run": ran,
        "seconds": time.perf_counter() - t0,
        "summary": summarize(rows, spec.breakdowns),
    }


def bench_rows(table: str | Path) -> list[dict[str, Any]]:
    """The rows of a benchmark table (for :func:`analyses.bench.score.summarize_settings`)."""
    return read_table(table)
