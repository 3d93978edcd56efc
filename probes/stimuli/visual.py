"""Seeded, deterministic visual math stimuli rendered with PIL (no downloads, no fonts to fetch).

Kinds (all answers exact integers):

* ``problem``    — an arithmetic word problem from :func:`generate_problems`, rendered as text, so an LLM and a
                   VLM can be given the same question in two modalities.
* ``expression`` — the problem's short expression (``14 + 5 - 3``), the reading kind the reference VLM is trained on.
* ``counting``   — coloured shapes to count (``"3 red circles, 2 blue squares"``).
* ``bars``       — a labelled bar chart whose values must be read and combined (``"A 5, B 3, C 7"``).

Every :class:`VisualItem` carries the image, the text it depicts (``description``) and a CoT and a direct prompt;
the VLM sees ``<image>\\n{prompt}``, the text-only LLM sees :func:`text_prompt` = ``{description}\\n{prompt}``.

>>> items = generate_visual_items(4, seed=0)
>>> items[0].image.mode, items[0].answer == generate_visual_items(4, seed=0)[0].answer
('RGB', True)
"""

from __future__ import annotations

import dataclasses
import json
import random
import textwrap
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from cotscope.errors import CotscopeError
from cotscope.probes.stimuli.arithmetic import Problem, generate_problems
from cotscope.probes.stimuli.pairs import COT_CUE, DIRECT_CUE

ALL_KINDS = ("problem", "expression", "counting", "bars")
DEFAULT_KINDS = ("expression", "counting", "bars")
READ_SIZE = (96, 96)  # size of the short kinds (what the reference VLM reads)
PROBLEM_SIZE = (320, 96)  # word problems need more room
MAX_SIDE = 4096
MIN_SIDE = 8

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (20, 150, 40)}
SHAPES = ("circle", "square", "triangle")
BAR_LABELS = ("A", "B", "C", "D")

QUESTIONS = {
    "problem": "",
    "expression": "What is the value of this expression?",
}


class ImageInputError(CotscopeError):
    """An image that cannot be used as model input (unreadable, empty, too small or too large)."""


@dataclasses.dataclass
class VisualItem:
    """One visual stimulus: the image, the question asked about it and its exact answer."""

    id: str
    kind: str
    image: Image.Image
    question: str
    answer: int
    description: str
    cot_prompt: str
    direct_prompt: str

    def to_record(self) -> dict:
        """JSON-able record without the image (see :func:`save_visual_jsonl`)."""
        d = dataclasses.asdict(self)
        d.pop("image")
        return d


def _prompts(question: str) -> tuple[str, str]:
    q = question.strip()
    cot = f"{q}\n{COT_CUE}" if q else COT_CUE
    direct = f"{q}\n{DIRECT_CUE}" if q else DIRECT_CUE
    return cot, direct


def text_prompt(item: VisualItem, cot: bool) -> str:
    """The text-only equivalent of the VLM prompt: the depicted text in place of the image."""
    return f"{item.description}\n{item.cot_prompt if cot else item.direct_prompt}"


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_text(
    text: str,
    size: tuple[int, int] = READ_SIZE,
    font_size: int = 14,
    offset: tuple[int, int] = (4, 4),
    width_chars: int | None = None,
    max_width_px: float | None = None,
) -> Image.Image:
    """Black text on white, wrapped to the image width; deterministic for the same arguments.

    ``max_width_px`` wraps at spaces by rendered width (a line stays whole while it fits);
    otherwise ``width_chars`` (default: from the mean glyph width) wraps by character count.
    """
    W, H = size
    font = _font(font_size)
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    if max_width_px is not None:
        lines = _wrap_pixels(text, font, max_width_px)
    else:
        if width_chars is None:
            char_w = max(1.0, font.getlength("0123456789abcdefghij") / 20)
            width_chars = max(8, int((W - 2 * offset[0]) / char_w))
        lines = textwrap.wrap(text, width=width_chars) or [""]
    line_h = font_size + 3
    if offset[1] + line_h * len(lines) > H + 2:
        raise ValueError(
            f"text does not fit into {W}x{H} at font size {font_size} ({len(lines)} lines): "
            "pass a larger size or a smaller font_size."
        )
    for k, line in enumerate(lines):
        draw.text((offset[0], offset[1] + k * line_h), line, fill="black", font=font)
    return img


def _wrap_pixels(text: str, font: ImageFont.FreeTypeFont, max_px: float) -> list[str]:
    """Greedy word wrap by rendered width; a single word wider than ``max_px`` keeps its own line."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= max_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def render_problem(
    problem: Problem, size: tuple[int, int] = PROBLEM_SIZE, font_size: int = 12, offset: tuple[int, int] = (4, 4)
) -> Image.Image:
    """The word problem ``problem.question`` rendered as an image."""
    return render_text(problem.question, size=size, font_size=font_size, offset=offset)


def expression_text(problem: Problem) -> str:
    """The problem's expression as a person would write it (integer division shown as ``/``; exact by construction)."""
    return problem.expression.replace("//", "/")


EXPRESSION_FONT = 11  # the bar charts' label size: all 128 expressions of the first 384 held-out items fit one line


def render_expression(
    problem: Problem,
    size: tuple[int, int] = READ_SIZE,
    offset: tuple[int, int] = (4, 4),
    font_size: int = EXPRESSION_FONT,
) -> Image.Image:
    """The expression on one line, wrapped at spaces only where it would leave the image."""
    return render_text(
        expression_text(problem),
        size=size,
        font_size=font_size,
        offset=offset,
        max_width_px=_expr_room(size, offset),
    )


def _expr_room(size: tuple[int, int], offset: tuple[int, int]) -> float:
    return size[0] - offset[0] - 2


def _plural(n: int, shape: str) -> str:
    return f"{n} {shape}" if n == 1 else f"{n} {shape}es" if shape.endswith("x") else f"{n} {shape}s"


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def counting_item(seed: int, size: tuple[int, int] = READ_SIZE, item_id: str | None = None) -> VisualItem:
    """Coloured shapes on a grid; the question asks for a total or for one group's count."""
    rng = random.Random(seed)
    W, H = size
    cell = 16
    cols, rows = W // cell, H // cell
    n_groups = rng.randint(1, 3)
    colors = sorted(rng.sample(list(COLORS), n_groups), key=list(COLORS).index)
    groups = [(c, rng.choice(SHAPES), rng.randint(1, 5)) for c in colors]
    total = sum(n for _, _, n in groups)
    cells = rng.sample(range(cols * rows), total)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    k = 0
    for color, shape, n in groups:
        for _ in range(n):
            r, c = divmod(cells[k], cols)
            k += 1
            s = rng.randint(10, 13)
            x0 = c * cell + rng.randint(0, cell - s)
            y0 = r * cell + rng.randint(0, cell - s)
            _draw_shape(draw, shape, (x0, y0, x0 + s - 1, y0 + s - 1), COLORS[color])
    description = ", ".join(_plural(n, f"{c} {s}") for c, s, n in groups)
    if n_groups > 1 and rng.random() < 0.5:
        color, shape, n = groups[rng.randrange(n_groups)]
        question, answer = f"How many {color} {shape}s are there?", n
    else:
        question, answer = "How many shapes are there in total?", total
    cot, direct = _prompts(question)
    return VisualItem(
        id=item_id or f"counting-{seed}",
        kind="counting",
        image=img,
        question=question,
        answer=answer,
        description=description,
        cot_prompt=cot,
        direct_prompt=direct,
    )


def bar_chart_item(seed: int, size: tuple[int, int] = READ_SIZE, item_id: str | None = None) -> VisualItem:
    """A 3–4 bar chart with the value printed above each bar; the question combines two or more values."""
    rng = random.Random(seed)
    W, H = size
    n = rng.randint(3, 4)
    labels = BAR_LABELS[:n]
    values = [rng.randint(1, 9) for _ in labels]
    font = _font(11)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    top, bottom = 13, H - 12
    unit = (bottom - top) / 9
    slot = W // n
    bar_w = rng.randint(12, 18)
    for i, (lab, v) in enumerate(zip(labels, values)):
        cx = i * slot + slot // 2 + rng.randint(-3, 3)
        y = bottom - round(v * unit)
        draw.rectangle((cx - bar_w // 2, y, cx + bar_w // 2, bottom), fill=(70, 110, 180))
        draw.text((cx - 3, y - 12), str(v), fill="black", font=font)
        draw.text((cx - 3, bottom), lab, fill="black", font=font)
    draw.line((0, bottom, W - 1, bottom), fill="black")
    description = ", ".join(f"{lab} {v}" for lab, v in zip(labels, values))
    q = rng.randrange(3)
    if q == 0:
        i, j = rng.sample(range(n), 2)
        question, answer = f"What is {labels[i]} plus {labels[j]}?", values[i] + values[j]
    elif q == 1:
        question, answer = "What is the total of all bars?", sum(values)
    else:
        question, answer = "What is the tallest bar minus the shortest bar?", max(values) - min(values)
    cot, direct = _prompts(question)
    return VisualItem(
        id=item_id or f"bars-{seed}",
        kind="bars",
        image=img,
        question=question,
        answer=answer,
        description=description,
        cot_prompt=cot,
        direct_prompt=direct,
    )


def problem_item(problem: Problem, seed: int = 0, item_id: str | None = None) -> VisualItem:
    """A rendered word problem (small random offset)."""
    rng = random.Random(seed)
    img = render_problem(problem, offset=(rng.randint(2, 6), rng.randint(2, 6)))
    cot, direct = _prompts(QUESTIONS["problem"])
    return VisualItem(
        id=item_id or f"problem-{problem.id}",
        kind="problem",
        image=img,
        question=QUESTIONS["problem"],
        answer=problem.answer,
        description=problem.question,
        cot_prompt=cot,
        direct_prompt=direct,
    )


def expression_item(
    problem: Problem, seed: int = 0, item_id: str | None = None, size: tuple[int, int] = READ_SIZE
) -> VisualItem:
    """A rendered expression such as ``(14 + 5 - 3) * 2`` near the top-left corner (0-4 px jitter).

    One line in the bar labels' font size, so the glyphs run left to right in reading order.
    """
    rng = random.Random(seed)
    W, H = size
    text, fs = expression_text(problem), EXPRESSION_FONT
    lines = _wrap_pixels(text, _font(fs), _expr_room(size, (2, 0)))
    slack_x = max(0, min(4, int(W - 4 - max(_font(fs).getlength(ln) for ln in lines))))
    img = render_expression(problem, size=size, offset=(rng.randint(2, 2 + slack_x), rng.randint(2, 6)), font_size=fs)
    question = QUESTIONS["expression"]
    cot, direct = _prompts(question)
    return VisualItem(
        id=item_id or f"expression-{problem.id}",
        kind="expression",
        image=img,
        question=question,
        answer=problem.answer,
        description=text,
        cot_prompt=cot,
        direct_prompt=direct,
    )


def generate_visual_items(n: int, seed: int = 0, kinds: Sequence[str] = DEFAULT_KINDS) -> list[VisualItem]:
    """``n`` items cycling through ``kinds``, deterministic for ``seed`` (identical pixels)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}: ask for at least one item.")
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ALL_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown kinds {bad or kinds}; choose from {ALL_KINDS}")
    rng = random.Random(f"visual-{seed}")
    n_prob = sum(1 for i in range(n) if kinds[i % len(kinds)] in ("problem", "expression"))
    problems = iter(generate_problems(n_prob, seed=seed)) if n_prob else iter(())
    out: list[VisualItem] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        sub = rng.randrange(2**31)
        iid = f"{kind}-s{seed}-{i}"
        if kind == "problem":
            out.append(problem_item(next(problems), sub, iid))
        elif kind == "expression":
            out.append(expression_item(next(problems), sub, iid))
        elif kind == "counting":
            out.append(counting_item(sub, item_id=iid))
        else:
            out.append(bar_chart_item(sub, item_id=iid))
    return out


def check_image(img: Image.Image, name: str = "image") -> Image.Image:
    """Validate a PIL image and return it as RGB; raise :class:`ImageInputError` if unusable."""
    if not isinstance(img, Image.Image):
        raise ImageInputError(
            f"{name}: expected a PIL.Image, got {type(img).__name__}. Fix: open it with load_image()."
        )
    w, h = img.size
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageInputError(
            f"{name}: image is {w}x{h} px, smaller than {MIN_SIDE}x{MIN_SIDE}; "
            "it carries no readable content. Fix: pass the real image."
        )
    if w > MAX_SIDE or h > MAX_SIDE:
        raise ImageInputError(
            f"{name}: image is {w}x{h} px, larger than {MAX_SIDE} px per side. "
            "Fix: downscale it (e.g. img.thumbnail((1024, 1024))) before use."
        )
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGB", img.size, "white")
            bg.paste(rgba, mask=rgba.split()[-1])
            img = bg
        else:
            img = img.convert("RGB")
    return img


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, raising :class:`ImageInputError` with the problem and the fix."""
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(
            f"image file not found: {p}. Fix: check the path (relative paths resolve against image_dir)."
        )
    if p.stat().st_size == 0:
        raise ImageInputError(f"image file is empty (0 bytes): {p}. Fix: re-export the image.")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w > MAX_SIDE or h > MAX_SIDE:
                raise ImageInputError(
                    f"{p}: image is {w}x{h} px, larger than {MAX_SIDE} px per side. Fix: downscale it before use."
                )
            im.load()
            img = im.copy()
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageInputError(f"cannot read image {p}: {e}. Fix: pass a valid PNG/JPEG file.") from e
    return check_image(img, name=str(p))


def load_visual_jsonl(path: str | Path, image_dir: str | Path | None = None) -> list[VisualItem]:
    """Load a user set: one JSON object per line with ``image`` (path), ``question`` and integer ``answer``.

    Optional keys: ``id``, ``description`` (text the image depicts; needed for LLM-vs-VLM agreement), ``kind``.
    Relative image paths resolve against ``image_dir`` (default: the JSONL's folder).
    """
    from cotscope.probes.stimuli.textio import StimulusFormatError, read_lines

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"visual stimulus file not found: {path}")
    base = Path(image_dir) if image_dir is not None else path.parent
    out: list[VisualItem] = []
    for ln, line in read_lines(path, "visual stimulus file"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise StimulusFormatError(f"{path}:{ln}: not valid JSON ({e}). Fix: one JSON object per line.") from e
        if not isinstance(rec, dict):
            raise StimulusFormatError(
                f"{path}:{ln}: a JSON {type(rec).__name__}, not an object; each line needs image, question and answer."
            )
        missing = [k for k in ("image", "question", "answer") if k not in rec]
        if missing:
            raise StimulusFormatError(
                f"{path}:{ln}: missing keys {missing}; each line needs image, question and answer."
            )
        if rec["question"] is None or not str(rec["question"]).strip():
            raise StimulusFormatError(
                f"{path}:{ln}: the question is empty ({rec['question']!r}). Fix: write the "
                "question about the image, or delete the line."
            )
        try:
            answer = int(rec["answer"])
        except (TypeError, ValueError) as e:
            raise StimulusFormatError(f"{path}:{ln}: answer {rec['answer']!r} is not an integer.") from e
        ip = Path(rec["image"])
        img = load_image(ip if ip.is_absolute() else base / ip)
        cot, direct = _prompts(str(rec["question"]))
        out.append(
            VisualItem(
                id=str(rec.get("id", f"{path.stem}-{ln}")),
                kind=str(rec.get("kind", "user")),
                image=img,
                question=str(rec["question"]),
                answer=answer,
                description=str(rec.get("description", "")),
                cot_prompt=cot,
                direct_prompt=direct,
            )
        )
    if not out:
        raise StimulusFormatError(
            f"{path} holds no items (empty stimulus set): add JSON lines with image, question and answer."
        )
    return out


def save_visual_jsonl(items: Sequence[VisualItem], path: str | Path, image_dir: str | Path | None = None) -> Path:
    """Write items as PNGs plus a JSONL that :func:`load_visual_jsonl` reads back."""
    from cotscope.analyses.atomic import atomic_path, write_text_atomic

    path = Path(path)
    img_dir = Path(image_dir) if image_dir is not None else path.parent / f"{path.stem}_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in items:
        f = img_dir / f"{it.id}.png"
        with atomic_path(f) as tmp:
            it.image.save(tmp, format="PNG")
        rec = it.to_record()
        rec["image"] = str(f.relative_to(path.parent)) if f.is_relative_to(path.parent) else str(f)
        lines.append(json.dumps(rec))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
