"""Tiny benchmark files in the exact published column layouts, rendered by cotscope (for tests and ``make demo``).

Images are cotscope's own rendered visual problems (expressions, counting, bar charts); questions and answers are
written here. Only the *layout* (column names, types, nesting, Image-feature structs) follows the published
datasets, so the harness's loaders are exercised on the shape users will hand them. Deterministic.

>>> paths = write_fixtures("runs/x/bench_fixtures")        # doctest: +SKIP
>>> sorted(paths)                                           # doctest: +SKIP
['m3cot', 'mathverse', 'mathvista', 'mmstar', 'scienceqa']
"""

from __future__ import annotations

import io
from pathlib import Path

from cotscope.probes.stimuli.visual import generate_visual_items


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("writing the benchmark fixtures needs pyarrow: pip install pyarrow") from None
    return pa, pq, pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _items(n: int, seed: int):
    return generate_visual_items(n, seed=seed)


def mathvista(root: Path) -> Path:
    pa, pq, IMAGE = _pa()
    rows = []
    for k, it in enumerate(_items(6, 101)):
        pid = str(k + 1)
        if k in (0, 3):  # multi-choice over numbers (the gold is the option text, as published)
            choices = [str(it.answer - 1), str(it.answer), str(it.answer + 2), str(it.answer + 5)]
            qtype, atype, prec, ans = "multi_choice", "text", None, str(it.answer)
            hint = (
                "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
            )
            query = f"{hint}\nQuestion: {it.question}\nChoices:\n" + "\n".join(
                f"({chr(65 + i)}) {c}" for i, c in enumerate(choices)
            )
        elif k == 4:  # a float answer with precision 1
            choices, qtype, atype, prec, ans = None, "free_form", "float", 1.0, f"{it.answer / 2:.1f}"
            q = f"{it.question} Divide your result by 2."
            query = (
                "Hint: Please answer the question requiring a floating-point number with one decimal place and "
                f"provide the final value, e.g., 1.2, 1.3, 1.4, at the end.\nQuestion: {q}"
            )
        else:
            choices, qtype, atype, prec, ans = None, "free_form", "integer", None, str(it.answer)
            query = (
                "Hint: Please answer the question requiring an integer answer and provide the final value, "
                f"e.g., 1, 2, 3, at the end.\nQuestion: {it.question}"
            )
        question = it.question if k != 4 else f"{it.question} Divide your result by 2."
        rows.append(
            {
                "pid": pid,
                "question": question,
                "image": f"images/{pid}.png",
                "decoded_image": {"bytes": _png(it.image), "path": f"{pid}.png"},
                "choices": choices,
                "unit": None,
                "precision": prec,
                "answer": ans,
                "question_type": qtype,
                "answer_type": atype,
                "metadata": {
                    "category": "math-targeted-vqa",
                    "context": {"expression": "synthetic scene", "counting": "synthetic scene", "bars": "bar chart"}[
                        it.kind
                    ],
                    "grade": "elementary school",
                    "img_height": it.image.size[1],
                    "img_width": it.image.size[0],
                    "language": "english",
                    "skills": ["arithmetic reasoning"],
                    "source": "cotscope-render",
                    "split": "testmini",
                    "task": {
                        "expression": "math word problem",
                        "counting": "textbook question answering",
                        "bars": "figure question answering",
                    }[it.kind],
                },
                "query": query,
            }
        )
    schema = pa.schema(
        [
            ("pid", pa.string()),
            ("question", pa.string()),
            ("image", pa.string()),
            ("decoded_image", IMAGE),
            ("choices", pa.list_(pa.string())),
            ("unit", pa.string()),
            ("precision", pa.float64()),
            ("answer", pa.string()),
            ("question_type", pa.string()),
            ("answer_type", pa.string()),
            (
                "metadata",
                pa.struct(
                    [
                        ("category", pa.string()),
                        ("context", pa.string()),
                        ("grade", pa.string()),
                        ("img_height", pa.int64()),
                        ("img_width", pa.int64()),
                        ("language", pa.string()),
                        ("skills", pa.list_(pa.string())),
                        ("source", pa.string()),
                        ("split", pa.string()),
                        ("task", pa.string()),
                    ]
                ),
            ),
            ("query", pa.string()),
        ]
    )
    out = root / "mathvista" / "testmini.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out


def mathverse(root: Path) -> Path:
    pa, pq, IMAGE = _pa()
    versions = ["Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only"]
    rows = []
    for k, it in enumerate(_items(5, 202)):
        multi = k % 2 == 0
        if multi:
            opts = [str(it.answer + 1), str(it.answer), str(it.answer + 3), str(it.answer - 2)]
            q = f"{it.question}\nChoices:\n" + "\n".join(f"{chr(65 + i)}:{o}" for i, o in enumerate(opts))
            ans = "B"
            cot = (
                "Please first conduct reasoning, and then answer the question and provide the correct option "
                "letter, e.g., A, B, C, D, at the end.\nQuestion: " + q
            )
        else:
            q, ans = it.question, str(it.answer)
            cot = (
                "Please first conduct reasoning, and then answer the question and provide the final value, e.g., 1, 2.5, 300, at the end.\nQuestion: "
                + q
            )
        rows.append(
            {
                "sample_index": str(k + 1),
                "problem_index": str(k // 5 + 1),
                "problem_version": versions[k],
                "question": q,
                "image": {"bytes": _png(it.image), "path": f"images_version_{k}/{k + 1}.png"},
                "answer": ans,
                "question_type": "multi-choice" if multi else "free-form",
                "metadata": {
                    "split": "testmini",
                    "source": "cotscope-render",
                    "subject": "Arithmetic",
                    "subfield": it.kind,
                },
                "query_wo": q,
                "query_cot": cot,
                "question_for_eval": q,
            }
        )
    schema = pa.schema(
        [
            ("sample_index", pa.string()),
            ("problem_index", pa.string()),
            ("problem_version", pa.string()),
            ("question", pa.string()),
            ("image", IMAGE),
            ("answer", pa.string()),
            ("question_type", pa.string()),
            (
                "metadata",
                pa.struct(
                    [
                        ("split", pa.string()),
                        ("source", pa.string()),
                        ("subject", pa.string()),
                        ("subfield", pa.string()),
                    ]
                ),
            ),
            ("query_wo", pa.string()),
            ("query_cot", pa.string()),
            ("question_for_eval", pa.string()),
        ]
    )
    out = root / "mathverse" / "testmini.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out


def mmstar(root: Path) -> Path:
    pa, pq, IMAGE = _pa()
    cats = ["math", "instance reasoning", "coarse perception", "fine-grained perception", "logical reasoning"]
    rows = []
    for k, it in enumerate(_items(5, 303)):
        opts = [str(it.answer + 2), str(it.answer - 1), str(it.answer), str(it.answer + 1)]
        q = f"{it.question}\nOptions: " + ", ".join(f"{chr(65 + i)}: {o}" for i, o in enumerate(opts))
        rows.append(
            {
                "index": k,
                "question": q,
                "image": {"bytes": _png(it.image), "path": None},
                "answer": "C",
                "category": cats[k],
                "l2_category": "numeric commonsense" if k % 2 else "calculation",
                "meta_info": {"source": "cotscope-render", "split": "val", "image_path": f"{k}.png"},
            }
        )
    schema = pa.schema(
        [
            ("index", pa.int64()),
            ("question", pa.string()),
            ("image", IMAGE),
            ("answer", pa.string()),
            ("category", pa.string()),
            ("l2_category", pa.string()),
            ("meta_info", pa.struct([("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())])),
        ]
    )
    out = root / "mmstar" / "val.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out


def scienceqa(root: Path) -> Path:
    pa, pq, IMAGE = _pa()
    its = _items(4, 404)
    rows = []
    for k, it in enumerate(its):
        with_image = k != 3  # ScienceQA has text-only questions too (image is null)
        opts = (
            [str(it.answer), str(it.answer + 1), str(it.answer + 4)] if k % 2 else [str(it.answer + 3), str(it.answer)]
        )
        rows.append(
            {
                "image": {"bytes": _png(it.image), "path": None} if with_image else None,
                "question": it.question if with_image else "What is 3 + 4?",
                "choices": opts if with_image else ["6", "7", "8"],
                "answer": opts.index(str(it.answer)) if with_image else 1,
                "hint": "Look at the picture." if with_image else "",
                "task": "closed choice",
                "grade": "grade2",
                "subject": "natural science" if k % 2 else "language science",
                "topic": "math",
                "category": "Arithmetic",
                "skill": "Add numbers",
                "lecture": "",
                "solution": "",
            }
        )
    schema = pa.schema(
        [
            ("image", IMAGE),
            ("question", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("answer", pa.int8()),
            ("hint", pa.string()),
            ("task", pa.string()),
            ("grade", pa.string()),
            ("subject", pa.string()),
            ("topic", pa.string()),
            ("category", pa.string()),
            ("skill", pa.string()),
            ("lecture", pa.string()),
            ("solution", pa.string()),
        ]
    )
    out = root / "scienceqa" / "test.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out


def m3cot(root: Path) -> Path:
    pa, pq, IMAGE = _pa()
    rows = []
    for k, it in enumerate(_items(3, 505)):
        opts = [str(it.answer - 1), str(it.answer + 1), str(it.answer)]
        rows.append(
            {
                "id": f"m3cot-{k}",
                "category": "math",
                "image_id": f"img-{k}",
                "question": it.question,
                "choices": opts,
                "context": "",
                "answer": "C",
                "rationale": f"The picture shows {it.answer}.",
                "split": "test",
                "image": {"bytes": _png(it.image), "path": None},
                "domain": "mathematics",
                "topic": it.kind,
            }
        )
    out = root / "m3cot" / "test.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("category", pa.string()),
            ("image_id", pa.string()),
            ("question", pa.string()),
            ("choices", pa.list_(pa.string())),
            ("context", pa.string()),
            ("answer", pa.string()),
            ("rationale", pa.string()),
            ("split", pa.string()),
            ("image", IMAGE),
            ("domain", pa.string()),
            ("topic", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return out


FILES = {
    "mathvista": "mathvista/testmini.parquet",
    "mathverse": "mathverse/testmini.parquet",
    "mmstar": "mmstar/val.parquet",
    "scienceqa": "scienceqa/test.parquet",
    "m3cot": "m3cot/test.parquet",
}
BENCH_OF = {"mathvista": "mathvista", "mathverse": "mathverse", "mmstar": "mmstar", "scienceqa": "mcq", "m3cot": "mcq"}


def write_fixtures(root: str | Path) -> dict[str, Path]:
    """Write every fixture under ``root`` (``root/<name>/<split>.parquet``); returns ``{name: path}``."""
    root = Path(root)
    return {f.__name__: f(root) for f in (mathvista, mathverse, mmstar, scienceqa, m3cot)}
