"""One loader for stimuli in any shape: JSONL, JSON, CSV/TSV, Parquet, or a local Hugging Face ``datasets`` folder.

Each row becomes a :class:`Stimulus` (question, typed gold answer, optional CoT / direct texts, images, choices,
metadata). A **column mapping** says where each role lives; unmapped roles are looked up under common names:

==============  ===================================================================================
role            default column names tried, in order
==============  ===================================================================================
``id``          id, pid, index, question_id, sample_index, problem_id (else ``<file stem>-<row>``)
``question``    question, problem, query, prompt
``cot``         cot, long_form_thought, long_form, rationale, solution
``direct``      direct, short_form_thought, short_form, short_answer
``image``       image, images, decoded_image, image_path, image_paths
``choices``     choices, options (a list, a JSON/Python list string, or ``"A. …\\nB. …"`` text); or map it to
                several columns, e.g. ``{"choices": ["A", "B", "C", "D"]}`` (VLMEvalKit TSVs)
``answer``      answer, gold, label, gt_answer, final_answer
``answer_type`` answer_type (per-row override of the ``answer_type=`` argument)
``precision``   precision (decimals for float answers, MathVista); ``tolerance``: tolerance
``category``    category, subject, subfield, task; ``question_type``: question_type, question_form
==============  ===================================================================================

Images may be file paths (relative to the data file, or ``image_root``), raw bytes, base64 strings, HF image
dicts (``{"bytes": …, "path": …}``) or PIL images, alone or in a list. Errors name the file, the row and the column.

Paired stimuli (the released L2V-CoT reading: the same problem with a long and a short *thought*) become
:class:`~probes.stimuli.pairs.PromptPair` objects with :func:`stimulus_pairs`.

>>> rows = load_stimuli("long_short.jsonl", answer_type="integer")                       # doctest: +SKIP
>>> pairs = stimulus_pairs(rows, pairing="answer")                                         # doctest: +SKIP
>>> mv = load_stimuli("testmini.parquet", {"question": "query", "image": "decoded_image"})  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import base64
import binascii
import dataclasses
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cotscope.analyses.answers import ANSWER_TYPES, AnswerError, AnswerSpec
from cotscope.probes.stimuli.textio import StimulusFormatError, read_lines

ROLES = (
    "id",
    "question",
    "cot",
    "direct",
    "image",
    "choices",
    "answer",
    "answer_type",
    "precision",
    "tolerance",
    "category",
    "question_type",
)
DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "id": ("id", "pid", "index", "question_id", "sample_index", "problem_id"),
    "question": ("question", "problem", "query", "prompt"),
    "cot": ("cot", "long_form_thought", "long_form", "rationale", "solution"),
    "direct": ("direct", "short_form_thought", "short_form", "short_answer"),
    "image": ("image", "images", "decoded_image", "image_path", "image_paths"),
    "choices": ("choices", "options"),
    "answer": ("answer", "gold", "label", "gt_answer", "final_answer"),
    "answer_type": ("answer_type",),
    "precision": ("precision",),
    "tolerance": ("tolerance",),
    "category": ("category", "subject", "subfield", "task"),
    "question_type": ("question_type", "question_form"),
}
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
_ANSWER_TYPE_ALIASES = {
    "int": "integer",
    "integer": "integer",
    "float": "float",
    "number": "float",
    "multi_choice": "choice",
    "multiple_choice": "choice",
    "choice": "choice",
    "mc": "choice",
    "text": "text",
    "free_form": "text",
    "string": "text",
    "str": "text",
}


class StimulusLoadError(StimulusFormatError):
    """A stimulus source that cannot be read; the message names the file, row and column, and the fix."""


class StimulusNotFoundError(StimulusLoadError, FileNotFoundError):
    """The stimulus source does not exist."""


LINE_FORMATS = ("jsonl", "csv", "tsv")  # their row numbers are line numbers: errors say file:line


@dataclasses.dataclass
class Stimulus:
    """One item: a question with a typed gold answer and whatever else its row holds."""

    id: str
    question: str
    answer: AnswerSpec | None = None
    cot: str | None = None
    direct: str | None = None
    images: tuple[Any, ...] = ()
    choices: tuple[str, ...] = ()
    category: str | None = None
    question_type: str | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    @property
    def image(self) -> Any:
        """The single image (``None`` without one); more than one is an error here."""
        if len(self.images) > 1:
            raise StimulusLoadError(f"{self.source}: {len(self.images)} images; this use takes one image per item")
        return self.images[0] if self.images else None

    def with_choices_text(self, question: str | None = None) -> str:
        """The question followed by lettered options (``A. …``), as most multiple-choice prompts show them."""
        q = self.question if question is None else question
        if not self.choices:
            return q
        return q + "\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(self.choices))


# ------------------------------------------------------------------------------------------------ reading rows
def detect_format(path: str | Path) -> str:
    """``jsonl``, ``json``, ``csv``, ``tsv``, ``parquet`` or ``hf`` (a folder written by ``save_to_disk``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "hf"
        raise StimulusLoadError(
            f"{p} is a folder but not a Hugging Face datasets folder (no dataset_info.json, "
            "state.json or dataset_dict.json); point at a data file, or save the dataset with "
            "Dataset.save_to_disk"
        )
    suf = p.suffix.lower()
    fmt = {
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "json",
        ".csv": "csv",
        ".tsv": "tsv",
        ".parquet": "parquet",
        ".pq": "parquet",
    }.get(suf)
    if fmt is None:
        raise StimulusLoadError(
            f"{p}: unknown file type {suf!r}; use .jsonl, .json, .csv, .tsv, .parquet or a "
            "datasets folder (or pass format=)"
        )
    return fmt


def _text(path: Path) -> str:
    """The whole file as text through :func:`~probes.stimuli.textio.read_lines` (UTF-8 checks with file:line)."""
    return "\n".join(line for _, line in read_lines(path))


def iter_rows(path: str | Path, *, format: str | None = None, split: str | None = None) -> Iterator[tuple[int, dict]]:
    """``(row number, row dict)`` for every row of ``path`` (1-based line numbers for JSONL/CSV, else 0-based)."""
    p = Path(path)
    if not p.exists():
        raise StimulusNotFoundError(f"stimulus file {p} does not exist")
    fmt = format or detect_format(p)
    if fmt not in FORMATS:
        raise StimulusLoadError(f"unknown format {fmt!r}; choose from {FORMATS}")
    if fmt == "jsonl":
        for lineno, line in read_lines(p):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise StimulusLoadError(
                    f"{p}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object "
                    'like {"question": "...", "answer": 12}'
                ) from None
            if not isinstance(obj, dict):
                raise StimulusLoadError(f"{p}:{lineno}: a JSON {type(obj).__name__}, expected an object per line")
            yield lineno, obj
    elif fmt == "json":
        try:
            data = json.loads(_text(p))
        except json.JSONDecodeError as e:
            raise StimulusLoadError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
            # MathVista's annot_testmini.json style: {pid: {...}}
            for i, (k, v) in enumerate(data.items()):
                yield i, {"id": k, **v} if "id" not in v and "pid" not in v else v
        elif isinstance(data, dict) and isinstance(data.get("data"), list):
            yield from enumerate(data["data"])
        elif isinstance(data, list):
            for i, v in enumerate(data):
                if not isinstance(v, dict):
                    raise StimulusLoadError(f"{p}: item {i} is a {type(v).__name__}, expected an object")
                yield i, v
        else:
            raise StimulusLoadError(f"{p}: expected a list of objects, {{'data': [...]}} or {{id: object}}")
    elif fmt in ("csv", "tsv"):
        import csv

        text = _text(p)
        csv.field_size_limit(1 << 30)  # base64 images in VLMEvalKit TSVs are long
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise StimulusLoadError(
                    f"{p}:{i}: more fields than header columns; quote fields that contain the "
                    f"{'tab' if fmt == 'tsv' else 'comma'}"
                )
            yield i, dict(row)
    elif fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise StimulusLoadError("reading Parquet needs pyarrow: pip install pyarrow") from None
        k = 0
        for batch in pq.ParquetFile(p).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield k, row
                k += 1
    else:
        try:
            import datasets
        except ImportError:
            raise StimulusLoadError(
                "reading a datasets folder needs the datasets package: pip install datasets"
            ) from None
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            if split is None:
                if len(names) != 1:
                    raise StimulusLoadError(f"{p} holds splits {names}; pass split= (e.g. split='{names[0]}')")
                split = names[0]
            if split not in ds:
                raise StimulusLoadError(f"{p} has no split {split!r}; it has {names}")
            ds = ds[split]
        for i, row in enumerate(ds):
            yield i, row


# ------------------------------------------------------------------------------------------------ values
def _where(path: Path, row: int, col: str | None, fmt: str = "") -> str:
    """``file:line`` for line-based formats, else ``file: row N``; then the column."""
    loc = f"{path}:{row}" if fmt in LINE_FORMATS else f"{path}: row {row}"
    return loc + (f", column {col!r}" if col else "")


def _as_list(value: Any, where: str, what: str) -> list[Any]:
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return []
        if s.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    out = parse(s)
                    if isinstance(out, list):
                        return out
                except (ValueError, SyntaxError):
                    pass
            raise StimulusLoadError(f"{where}: {what} looks like a list but cannot be parsed: {s[:60]!r}")
        if what == "choices" and re.search(r"(^|\n)\s*\(?[A-Z][\).:]", s):
            parts = re.split(r"(?:^|\n)\s*\(?[A-Z][\).:]\s*", s)
            return [x.strip() for x in parts if x.strip()]
        return [value]
    return [value]


def _open_image(value: Any, base: Path, image_root: Path | None, where: str) -> Any:
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return _open_image(value["bytes"], base, image_root, where)
        if value.get("path"):
            return _open_image(value["path"], base, image_root, where)
        raise StimulusLoadError(f"{where}: image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            im = Image.open(io.BytesIO(bytes(value)))
            im.load()
            return im
        except Exception as e:
            raise StimulusLoadError(
                f"{where}: image bytes are not a readable image ({type(e).__name__}: {e})"
            ) from None
    if isinstance(value, str):
        s = value.strip()
        roots = [r for r in (image_root, base) if r is not None]
        for r in roots:
            cand = (r / s) if not Path(s).is_absolute() else Path(s)
            if len(s) < 4096 and cand.is_file():
                try:
                    im = Image.open(cand)
                    im.load()
                    return im
                except Exception as e:
                    raise StimulusLoadError(f"{where}: {cand} is not a readable image ({e})") from None
        if len(s) > 64 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", s[:2048]):
            try:
                return _open_image(base64.b64decode(s, validate=False), base, image_root, where)
            except binascii.Error:
                pass
        tried = ", ".join(str(r / s) for r in roots)
        raise StimulusLoadError(
            f"{where}: image {s[:80]!r} is not a file (tried {tried}) nor base64 data; pass "
            "image_root= (the folder the paths are relative to)"
        )
    raise StimulusLoadError(
        f"{where}: cannot use a {type(value).__name__} as an image (path, bytes, base64, {{'bytes': ...}} or PIL image)"
    )


def _resolve(columns: Mapping[str, Any] | None, row: Mapping[str, Any]) -> dict[str, Any]:
    """Role → column name(s) for ``row``: explicit mapping, else the first default name present."""
    out: dict[str, Any] = {}
    columns = dict(columns or {})
    bad = [r for r in columns if r not in ROLES]
    if bad:
        raise StimulusLoadError(f"unknown roles {bad} in the column mapping; roles are {ROLES}")
    for role in ROLES:
        if role in columns:
            out[role] = columns[role]
        else:
            out[role] = next((c for c in DEFAULT_NAMES[role] if c in row), None)
    return out


def load_stimuli(
    path: str | Path,
    columns: Mapping[str, Any] | None = None,
    *,
    answer_type: str | None = None,
    tolerance: float | None = None,
    precision: int | None = None,
    split: str | None = None,
    format: str | None = None,
    limit: int | None = None,
    image_root: str | Path | None = None,
    require: Sequence[str] = ("question",),
    load_images: bool = True,
) -> list[Stimulus]:
    """Read every row of ``path`` into a :class:`Stimulus`.

    Args:
        columns: role → column name (or a list of names for ``choices``); see the module table for defaults.
        answer_type: ``integer``, ``float``, ``choice`` or ``text`` for every row (``None``: per-row
            ``answer_type`` column, else ``choice`` when the row has choices, else inferred from the value).
        tolerance, precision: for float answers (a row's ``precision``/``tolerance`` column wins).
        split: the split of a ``DatasetDict`` folder.
        require: roles every row must have (e.g. ``("question", "answer")``, or ``("cot", "direct")`` for pairs).
        load_images: ``False`` keeps image values as they are (no decoding).
    """
    p = Path(path)
    base = p if p.is_dir() else p.parent
    root = Path(image_root) if image_root is not None else None
    if answer_type is not None:
        answer_type = _ANSWER_TYPE_ALIASES.get(str(answer_type).lower(), answer_type)
        if answer_type not in ANSWER_TYPES:
            raise StimulusLoadError(f"unknown answer_type {answer_type!r}; choose from {ANSWER_TYPES}")
    bad_roles = [r for r in (columns or {}) if r not in ROLES]
    if bad_roles:
        raise StimulusLoadError(f"unknown roles {bad_roles} in the column mapping; roles are {ROLES}")
    bad_req = [r for r in require if r not in ROLES]
    if bad_req:
        raise StimulusLoadError(f"unknown required roles {bad_req}; roles are {ROLES}")
    out: list[Stimulus] = []
    seen: dict[str, str] = {}
    fmt = format or detect_format(p)
    for rownum, row in iter_rows(p, format=fmt, split=split):
        if limit is not None and len(out) >= limit:
            break
        cols = _resolve(columns, row)
        loc = _where(p, rownum, None, fmt)

        def get(role: str) -> Any:
            c = cols[role]
            if c is None:
                return None
            if isinstance(c, (list, tuple)):
                missing = [x for x in c if x not in row]
                if missing and role != "choices":
                    raise StimulusLoadError(f"{loc}: column {missing[0]!r} is missing (the row has {sorted(row)[:12]})")
                return [row.get(x) for x in c]
            if c not in row and "." in c and c.split(".")[0] in row:  # a field of a struct column
                v = row
                for part in c.split("."):
                    v = v.get(part) if isinstance(v, Mapping) else None
                return None if (isinstance(v, float) and v != v) else v
            if c not in row:
                raise StimulusLoadError(
                    f"{loc}: no column {c!r} for role {role!r} (the row has {sorted(row)[:12]}); fix the column mapping"
                )
            v = row[c]
            return None if (isinstance(v, float) and v != v) else v  # NaN from CSV/Parquet = missing

        absent = [r for r in require if cols[r] is None]
        if absent:
            names = " and ".join(repr(r if r in ("question", "answer") else DEFAULT_NAMES[r][0]) for r in require)
            raise StimulusLoadError(
                f"{loc}: needs keys {names} (no column for {absent}; looked for "
                f"{[DEFAULT_NAMES[r] for r in absent]}, or map them with columns=)"
            )
        for role in require:
            v = get(role)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise StimulusLoadError(
                    f"{loc}: the {role} is empty ({v!r}) (column {cols[role]!r}); every row needs "
                    "one. Fix: write it, or delete the row"
                )
        q = get("question")
        sid = get("id")
        sid = f"{p.stem}-{rownum}" if sid is None or str(sid) == "" else str(sid)
        if sid in seen:
            raise StimulusLoadError(
                f"{loc}: id {sid!r} repeats ({seen[sid]}, column {cols['id']!r}); ids must be "
                "unique (drop the id mapping to number rows instead)"
            )
        seen[sid] = loc
        choices_raw = get("choices")
        if isinstance(cols["choices"], (list, tuple)):
            choices = [str(c).strip() for c in choices_raw if c is not None and str(c).strip() and str(c) != "nan"]
        else:
            choices = [str(c) for c in _as_list(choices_raw, _where(p, rownum, cols["choices"], fmt), "choices")]
        ans = get("answer")
        spec = None
        if ans is not None and str(ans).strip() != "":
            t = answer_type or (
                _ANSWER_TYPE_ALIASES.get(str(get("answer_type")).lower()) if get("answer_type") is not None else None
            )
            prec = get("precision")
            tol = get("tolerance")
            try:
                prec_v = int(float(prec)) if prec not in (None, "") else precision
                tol_v = float(tol) if tol not in (None, "") else tolerance
                if t == "float" or (t is None and prec_v is not None and not choices):
                    t = "float"
                spec = AnswerSpec.build(ans, t, choices=choices or None, tolerance=tol_v, precision=prec_v)
            except (AnswerError, ValueError) as e:
                raise StimulusLoadError(f"{loc}: {e} (column {cols['answer']!r})") from None
        images: list[Any] = []
        if cols["image"] is not None:
            where = _where(p, rownum, cols["image"], fmt)
            vals = _as_list(get("image"), where, "image")
            images = [
                (_open_image(v, base, root, where) if load_images else v)
                for v in vals
                if v is not None and not (isinstance(v, str) and not v.strip())
            ]
        used = {c for c in cols.values() if isinstance(c, str) and c in row} | {
            x for c in cols.values() if isinstance(c, (list, tuple)) for x in c
        }
        meta = {
            k: v
            for k, v in row.items()
            if k not in used
            and not isinstance(v, (bytes, bytearray))
            and not (isinstance(v, dict) and "bytes" in v)
            and type(v).__module__.split(".")[0] != "PIL"
        }
        cat, qt = get("category"), get("question_type")
        out.append(
            Stimulus(
                id=sid,
                question=str(q) if q is not None else "",
                answer=spec,
                cot=None if get("cot") is None else str(get("cot")),
                direct=None if get("direct") is None else str(get("direct")),
                images=tuple(images),
                choices=tuple(choices),
                category=None if cat is None else str(cat),
                question_type=None if qt is None else str(qt),
                meta=meta,
                source=loc,
            )
        )
    if not out:
        raise StimulusLoadError(f"{p}: no rows (empty stimulus set); add at least one row")
    return out


# ------------------------------------------------------------------------------------------------ pairs
def stimulus_pairs(
    stimuli: Sequence[Stimulus], pairing: str = "answer", *, cot_cue: str | None = None, direct_cue: str | None = None
) -> list[Any]:
    """CoT / direct :class:`~probes.stimuli.pairs.PromptPair` objects from loaded stimuli.

    * ``answer`` — the same question; the assistant turn is the row's ``cot`` text vs its ``direct`` text (the
      released L2V-CoT data: long-form vs short-form thought);
    * ``cue``    — the question with a CoT cue vs a direct cue, each answered by ``cot``/``direct`` when present.

    Rows with an image become image prompts (``[{"type": "image"}, {"type": "text", …}]``; one image per row).
    """
    from cotscope.probes.stimuli.arithmetic import Problem
    from cotscope.probes.stimuli.pairs import COT_CUE, DIRECT_CUE, PAIRINGS, Prompt, PromptPair

    if pairing not in PAIRINGS:
        raise StimulusLoadError(f"unknown pairing {pairing!r}; choose one of {PAIRINGS}")
    if not stimuli:
        raise StimulusLoadError("empty stimulus set: pass at least one stimulus")
    cot_cue = COT_CUE if cot_cue is None else cot_cue
    direct_cue = DIRECT_CUE if direct_cue is None else direct_cue
    out = []
    for i, s in enumerate(stimuli):
        if pairing == "answer" and (not s.cot or not s.direct):
            raise StimulusLoadError(
                f"{s.source}: pairing 'answer' needs both a CoT text and a direct text (map the "
                "'cot' and 'direct' roles, e.g. long_form_thought / short_form_thought)"
            )
        q = s.with_choices_text()
        image = s.image

        def msg(text: str) -> list[dict[str, Any]]:
            if image is not None:
                return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            return [{"role": "user", "content": text}]

        if pairing == "answer":
            cot, direct = Prompt(msg(q), s.cot, image), Prompt(msg(q), s.direct, image)
        else:
            cot = Prompt(msg(f"{q} {cot_cue}"), s.cot, image)
            direct = Prompt(msg(f"{q} {direct_cue}"), s.direct, image)
        gold = s.answer.display if s.answer is not None else ""
        prob = Problem(
            id=s.id,
            question=s.question,
            answer=gold,
            steps=(),
            expression="",
            template="loaded",
            difficulty=str(s.category or "unknown"),
        )
        out.append(PromptPair(pair_id=i, problem=prob, pairing=pairing, cot=cot, direct=direct))
    return out


def bundled_thoughts_path() -> Path:
    """The long/short *thought* pairs shipped with cotscope for the released L2V-CoT reading (answer pairing +
    ``eot``): ``problem``, ``long_form_thought``, ``short_form_thought``, ``answer`` (the released field names)."""
    return Path(__file__).with_name("data") / "long_short_thoughts.jsonl"


def load_thought_pairs(path: str | Path | None = None, limit: int | None = None) -> list[Stimulus]:
    """The bundled (or a given) long/short thought set as stimuli with ``cot``/``direct`` texts."""
    return load_stimuli(path or bundled_thoughts_path(), require=("question", "cot", "direct"), limit=limit)
