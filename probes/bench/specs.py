"""Benchmarks in their published schemas: where each field lives, how the gold is typed, what the model is asked.

No benchmark is downloaded by cotscope. Put a local copy anywhere and pass its path; any layout the loader reads
works (a ``save_to_disk`` folder, the Parquet files of the Hugging Face dataset, or JSON/JSONL/TSV exports):

==============  ===================================  ==========================================================
``--bench``     published source (split)              fields cotscope reads
==============  ===================================  ==========================================================
``mathvista``   ``AI4Math/MathVista`` (``testmini``)  pid, query (else question + choices), decoded_image (else
                                                      image path), choices, answer, question_type, answer_type,
                                                      precision, metadata.{task, category, skills, grade}
``mathverse``   ``AI4Math/MathVerse`` (``testmini``)  sample_index, query_cot (else question), image, answer
                                                      (letter for multi-choice; options parsed from the question),
                                                      question_type, problem_version, metadata.{subject, subfield}
``mmstar``      ``Lin-Chen/MMStar`` (``val``)         index, question ("Options: A: …, B: …"), image, answer
                                                      (letter), category, l2_category
``mcq``         ScienceQA (``derek-thomas/ScienceQA``) id (else row number), question, choices (list), answer
                or M3CoT (``LightChen2333/M3CoT``)    (0-based index or letter), hint / context, image (may be
                                                      empty), subject / domain, category / topic
==============  ===================================  ==========================================================

>>> spec = BENCHMARKS["mmstar"]
>>> parse_inline_options("Which? Options: A: red, B: blue, C: green")
('Which?', ['red', 'blue', 'green'])
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.answers import AnswerError, AnswerSpec
from cotscope.probes.stimuli.load import Stimulus, StimulusLoadError, iter_rows, load_stimuli


class BenchmarkError(StimulusLoadError):
    """A benchmark file that does not have the published layout (the message names the file, row and field)."""


def parse_inline_options(question: str) -> tuple[str, list[str]]:
    """Split ``"… Options: A: x, B: y"`` (MMStar) or ``"…\\nChoices:\\nA:x\\nB:y"`` (MathVerse) into (stem, options)."""
    m = re.search(r"(?:Options|Choices)\s*:\s*", question)
    if not m:
        return question.strip(), []
    stem, rest = question[: m.start()].strip(), question[m.end() :]
    parts = re.split(r"(?:^|[\n,;]\s*|\s+)\(?([A-H])\s*[:\.\)]\s*", rest)
    letters, opts = parts[1::2], [p.strip().rstrip(",;").strip() for p in parts[2::2]]
    if not letters or letters != [chr(65 + i) for i in range(len(letters))]:
        return question.strip(), []
    return stem, opts


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """How one benchmark's rows become scored prompts."""

    name: str
    source: str
    candidates: Mapping[str, Sequence[str]]  # role -> columns to try in order (first present wins)
    build: Callable[[Stimulus, Mapping[str, Any]], Stimulus]
    breakdowns: tuple[str, ...] = ("category", "question_type")
    default_split: str | None = None
    instruction: str = ""

    def columns_for(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for role, cands in self.candidates.items():
            for c in cands:
                head = c.split(".")[0]
                if c in row or (head in row and "." in c):
                    out[role] = c
                    break
        return out


def _meta(s: Stimulus, path: str) -> Any:
    v: Any = s.meta
    for part in path.split("."):
        v = v.get(part) if isinstance(v, Mapping) else None
    return v


def _with_answer(s: Stimulus, answer: Any, answer_type: str, **kw: Any) -> Stimulus:
    try:
        spec = AnswerSpec.build(answer, answer_type, **kw)
    except AnswerError as e:
        raise BenchmarkError(f"{s.source}, field 'answer': {e}") from None
    return dataclasses.replace(s, answer=spec, choices=tuple(kw.get("choices") or s.choices))


# ---------------------------------------------------------------------------------------------------- MathVista
def _mathvista(s: Stimulus, row: Mapping[str, Any]) -> Stimulus:
    qtype = str(row.get("question_type") or ("multi_choice" if s.choices else "free_form"))
    raw = row.get("answer")
    if qtype == "multi_choice":
        if not s.choices:
            raise BenchmarkError(f"{s.source}: multi_choice item without choices")
        s = _with_answer(s, raw, "choice", choices=list(s.choices))
    else:
        at = str(row.get("answer_type") or "text")
        prec = row.get("precision")
        if at == "integer":
            s = _with_answer(s, raw, "integer")
        elif at == "float":
            s = _with_answer(
                s,
                raw,
                "float",
                precision=int(float(prec)) if prec not in (None, "") and prec == prec else None,
                tolerance=None,
            )
        else:  # text and list answers: normalised exact match
            s = _with_answer(s, raw, "text")
    query = row.get("query")
    prompt = str(query) if query else s.with_choices_text()
    md = row.get("metadata") or {}
    return dataclasses.replace(
        s,
        question=prompt,
        question_type=qtype,
        category=str(md.get("task")) if isinstance(md, Mapping) and md.get("task") else s.category,
        meta={**s.meta, "answer_type": row.get("answer_type"), "unit": row.get("unit")},
    )


# ---------------------------------------------------------------------------------------------------- MathVerse
def _mathverse(s: Stimulus, row: Mapping[str, Any]) -> Stimulus:
    qtype = str(row.get("question_type") or "free-form")
    raw = str(row.get("answer") or "")
    q_for_options = str(row.get("question") or s.question)
    if qtype.startswith("multi"):
        _, opts = parse_inline_options(q_for_options)
        if len(opts) < 2:  # Vision-Only items keep the options in the image: letters only
            n = max(4, "ABCDEFGH".index(raw.strip()[:1].upper()) + 1) if raw.strip()[:1].upper() in "ABCDEFGH" else 4
            opts = [chr(65 + i) for i in range(n)]
        s = _with_answer(s, raw, "choice", choices=opts)
    else:
        from cotscope.analyses.answers import parse_number

        s = _with_answer(s, raw, "float" if parse_number(raw) is not None else "text")
    md = row.get("metadata") or {}
    return dataclasses.replace(
        s,
        question_type=qtype,
        category=str(row.get("problem_version") or s.category or ""),
        meta={**s.meta, "subject": md.get("subject") if isinstance(md, Mapping) else None},
    )


# ---------------------------------------------------------------------------------------------------- MMStar
def _mmstar(s: Stimulus, row: Mapping[str, Any]) -> Stimulus:
    stem, opts = parse_inline_options(str(row.get("question") or s.question))
    if len(opts) < 2:
        raise BenchmarkError(f"{s.source}, field 'question': no 'Options: A: …, B: …' list in the question")
    s = _with_answer(s, row.get("answer"), "choice", choices=opts)
    prompt = str(row.get("question")) + "\nAnswer with the option's letter from the given choices."
    return dataclasses.replace(s, question=prompt, question_type=str(row.get("l2_category") or "") or None)


# ---------------------------------------------------------------------------------------------------- ScienceQA / M3CoT
def _mcq(s: Stimulus, row: Mapping[str, Any]) -> Stimulus:
    if len(s.choices) < 2:
        raise BenchmarkError(f"{s.source}, field 'choices': a multiple-choice item needs a list of options")
    s = _with_answer(s, row.get("answer"), "choice", choices=list(s.choices))
    ctx = row.get("hint") if row.get("hint") not in (None, "") else row.get("context")
    q = (
        (f"Context: {ctx}\n" if ctx else "")
        + f"Question: {s.question}\nOptions:\n"
        + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(s.choices))
        + "\nAnswer with the option's letter."
    )
    return dataclasses.replace(s, question=q)


BENCHMARKS: dict[str, BenchSpec] = {
    "mathvista": BenchSpec(
        "mathvista",
        "AI4Math/MathVista testmini",
        {
            "id": ("pid",),
            "question": ("question",),
            "image": ("decoded_image", "image"),
            "choices": ("choices",),
            "answer": ("answer",),
            "category": ("metadata.task",),
            "question_type": ("question_type",),
        },
        _mathvista,
        breakdowns=("category", "question_type", "answer_type"),
        default_split="testmini",
    ),
    "mathverse": BenchSpec(
        "mathverse",
        "AI4Math/MathVerse testmini",
        {
            "id": ("sample_index",),
            "question": ("query_cot", "question"),
            "image": ("image",),
            "answer": ("answer",),
            "question_type": ("question_type",),
            "category": ("problem_version",),
        },
        _mathverse,
        breakdowns=("category", "question_type", "subject"),
        default_split="testmini",
    ),
    "mmstar": BenchSpec(
        "mmstar",
        "Lin-Chen/MMStar val",
        {
            "id": ("index",),
            "question": ("question",),
            "image": ("image",),
            "answer": ("answer",),
            "category": ("category",),
        },
        _mmstar,
        breakdowns=("category", "question_type"),
        default_split="val",
    ),
    "mcq": BenchSpec(
        "mcq",
        "ScienceQA / M3CoT multiple choice",
        {
            "id": ("id",),
            "question": ("question",),
            "image": ("image",),
            "choices": ("choices",),
            "answer": ("answer",),
            "category": ("subject", "domain"),
            "question_type": ("category", "topic"),
        },
        _mcq,
        breakdowns=("category", "question_type"),
    ),
}


def load_benchmark(
    bench: str | BenchSpec,
    data: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    image_root: str | Path | None = None,
    text_only: bool = False,
) -> list[Stimulus]:
    """The items of ``bench`` from the local copy at ``data`` (a file or a ``save_to_disk`` folder).

    ``text_only=True`` drops images (for text-only models; MathVerse's Text Dominant/Lite versions carry the
    problem in the text).
    """
    spec = BENCHMARKS.get(bench) if isinstance(bench, str) else bench
    if spec is None:
        raise BenchmarkError(f"unknown benchmark {bench!r}; choose from {sorted(BENCHMARKS)}")
    path = Path(data)
    split_used = split
    try:
        first = next(iter_rows(path, split=split))[1]
    except StimulusLoadError as e:
        if "holds splits" in str(e) and spec.default_split and split is None:
            split_used = spec.default_split
            first = next(iter_rows(path, split=split_used))[1]
        else:
            raise
    except StopIteration:
        raise BenchmarkError(f"{path}: no rows") from None
    cols = spec.columns_for(first)
    missing = [r for r in ("question", "answer") if r not in cols]
    if missing:
        raise BenchmarkError(
            f"{path}: not the published {spec.name} layout ({spec.source}): no column for "
            f"{missing} (looked for {[spec.candidates[r] for r in missing]}; the file has "
            f"{sorted(first)[:14]})"
        )
    if text_only:
        cols["image"] = None  # and no default image column either
    rows = {}
    for rownum, row in iter_rows(path, split=split_used):
        rows[rownum] = row
        if limit is not None and len(rows) >= limit:
            break
    # the answer is typed by the benchmark's own rule below, from the raw row
    items = load_stimuli(
        path,
        {**cols, "answer": None, "answer_type": None, "precision": None, "tolerance": None},
        split=split_used,
        limit=limit,
        image_root=image_root,
        require=("question",),
    )
    out = []
    for s, row in zip(items, rows.values()):
        try:
            out.append(spec.build(s, row))
        except BenchmarkError:
            raise
        except (AnswerError, ValueError, KeyError, TypeError) as e:
            raise BenchmarkError(f"{s.source}: not the published {spec.name} layout ({e})") from None
    return out
