"""Typed gold answers and how a prediction is matched against them (pure text; no model).

Answer types:

* ``integer`` — exact integer equality after normalisation (``"1,204"`` = ``1204``);
* ``float``   — numeric, equal within ``tolerance`` (absolute, default 1e-6 of the gold's scale) or, with
  ``precision=k``, after rounding both to ``k`` decimals (MathVista's ``precision`` column);
* ``choice``  — multiple choice: the gold is an option index; a prediction matches by letter (``"B"``, ``"(B)"``,
  ``"B."``, ``"answer: B"``) or by the option's text;
* ``text``    — free text, normalised exact match (lower case, punctuation, articles and extra spaces removed).

:class:`AnswerSpec` holds the gold in canonical form; :meth:`AnswerSpec.match` takes an *extracted* prediction
(see :mod:`analyses.bench.extract` for the per-benchmark extractors).

>>> AnswerSpec.build("1,204", "integer").match("1204")
True
>>> AnswerSpec.build("3.14159", "float", precision=2).match("3.14")
True
>>> spec = AnswerSpec.build("Paris", "choice", choices=["London", "Paris", "Rome"])
>>> spec.gold, spec.match("B"), spec.match("paris"), spec.match("A")
(1, True, True, False)
>>> AnswerSpec.build("The Eiffel Tower", "text").match("eiffel tower.")
True
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from cotscope.errors import CotscopeError

ANSWER_TYPES = ("integer", "float", "choice", "text")
LETTERS = string.ascii_uppercase


class AnswerError(CotscopeError):
    """A gold answer that does not fit its declared type (the message says which and how to fix it)."""


_NUM = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _num_text(x: Any) -> str:
    s = str(x).strip()
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("$", "").replace(",", "").replace("\\!", "").replace(" ", "").rstrip(".")
    s = s.replace("\\%", "").rstrip("%")
    return s


def parse_number(x: Any) -> float | None:
    """A number from a gold or a prediction (``"1,204"``, ``"$3.50"``, ``"12%"``, ``"-0.5"``), else ``None``.

    >>> parse_number("$1,204.50"), parse_number("12%"), parse_number("abc")
    (1204.5, 12.0, None)
    """
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(float(x)) else None
    s = _num_text(x)
    if _NUM.match(s):
        v = float(s)
        return v if math.isfinite(v) else None
    m = re.fullmatch(r"([-+]?\d+)/(\d+)", s)  # a plain fraction
    if m and int(m.group(2)) != 0:
        return int(m.group(1)) / int(m.group(2))
    return None


def normalize_text(x: Any) -> str:
    """Lower case, no punctuation, no articles (a/an/the), single spaces.

    >>> normalize_text("  The Eiffel-Tower! ")
    'eiffel tower'
    """
    s = str(x).lower().strip()
    s = "".join(" " if ch in string.punctuation else ch for ch in s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def letter_of(text: Any, n_choices: int) -> int | None:
    """The option index a bare letter answer names (``"B"``, ``"(b)"``, ``"B."``, ``"B)"``), else ``None``.

    >>> letter_of("(c)", 4), letter_of("C. red", 4), letter_of("E", 4)
    (2, 2, None)
    """
    s = str(text).strip()
    m = re.fullmatch(r"\(?\s*([A-Za-z])\s*(?:[\).:](?:\s+.*)?)?", s, flags=re.S)
    if not m:
        return None
    k = LETTERS.find(m.group(1).upper())
    return k if 0 <= k < n_choices else None


@dataclasses.dataclass(frozen=True)
class AnswerSpec:
    """A gold answer with its type. ``gold`` is an ``int`` (integer), ``float`` (float), option index (choice)
    or normalised ``str`` (text)."""

    type: str
    gold: Any
    raw: str
    choices: tuple[str, ...] = ()
    tolerance: float | None = None
    precision: int | None = None

    @classmethod
    def build(
        cls,
        answer: Any,
        answer_type: str | None = None,
        *,
        choices: Sequence[Any] | None = None,
        tolerance: float | None = None,
        precision: int | None = None,
    ) -> AnswerSpec:
        """Canonical gold of ``answer`` as ``answer_type`` (``None``: ``choice`` when choices are given, else
        ``integer``/``float`` when it parses as a number, else ``text``)."""
        ch = tuple(str(c) for c in (choices or ()))
        raw = "" if answer is None else str(answer).strip()
        if answer is None or raw == "":
            raise AnswerError("the gold answer is empty; every item needs an answer to score")
        t = answer_type or _infer(raw, ch)
        if t not in ANSWER_TYPES:
            raise AnswerError(f"unknown answer type {t!r}; choose from {ANSWER_TYPES}")
        if t == "integer":
            v = parse_number(raw)
            if v is None or not float(v).is_integer():
                raise AnswerError(f"answer {raw!r} is not an integer; declare answer_type 'float' or 'text'")
            return cls("integer", int(v), raw, ch)
        if t == "float":
            v = parse_number(raw)
            if v is None:
                raise AnswerError(f"answer {raw!r} is not a number; declare answer_type 'text'")
            if tolerance is not None and not (math.isfinite(float(tolerance)) and tolerance >= 0):
                raise AnswerError(f"tolerance {tolerance!r} must be a finite number >= 0")
            if precision is not None and int(precision) < 0:
                raise AnswerError(f"precision {precision!r} must be a number of decimals >= 0")
            return cls("float", float(v), raw, ch, tolerance, None if precision is None else int(precision))
        if t == "choice":
            if len(ch) < 2:
                raise AnswerError(
                    f"answer type 'choice' needs at least two options, got {list(ch)}; map the "
                    "choices column (a list, or 'A. …\\nB. …' text)"
                )
            k = letter_of(raw, len(ch)) if len(raw) <= 3 or re.match(r"^\(?[A-Za-z][\).:]", raw) else None
            if k is None:
                norm = [normalize_text(c) for c in ch]
                if normalize_text(raw) in norm:
                    k = norm.index(normalize_text(raw))
                elif (
                    re.fullmatch(r"\d+", raw) and int(raw) < len(ch) and not any(normalize_text(raw) == n for n in norm)
                ):
                    k = int(raw)  # ScienceQA stores the 0-based index
            if k is None:
                raise AnswerError(
                    f"answer {raw!r} is neither an option letter (A–{LETTERS[len(ch) - 1]}), an index "
                    f"nor the text of one of the options {list(ch)}"
                )
            return cls("choice", int(k), raw, ch)
        return cls("text", normalize_text(raw), raw, ch)

    @property
    def letter(self) -> str | None:
        return LETTERS[self.gold] if self.type == "choice" else None

    @property
    def display(self) -> str:
        """The gold as a model should write it (option letter, number, or text)."""
        if self.type == "choice":
            return self.letter
        if self.type == "integer":
            return str(self.gold)
        if self.type == "float":
            return f"{self.gold:.{self.precision}f}" if self.precision is not None else f"{self.gold:g}"
        return self.raw

    def match(self, pred: Any) -> bool:
        """Whether an extracted prediction equals the gold under this type's rule (``None`` never matches)."""
        if pred is None or str(pred).strip() == "":
            return False
        if self.type == "integer":
            v = parse_number(pred)
            return v is not None and float(v).is_integer() and int(v) == self.gold
        if self.type == "float":
            v = parse_number(pred)
            if v is None:
                return False
            if self.precision is not None:
                return round(v, self.precision) == round(self.gold, self.precision)
            tol = self.tolerance if self.tolerance is not None else 1e-6 * max(1.0, abs(self.gold))
            return abs(v - self.gold) <= tol
        if self.type == "choice":
            k = letter_of(pred, len(self.choices))
            if k is None:
                norm = [normalize_text(c) for c in self.choices]
                p = normalize_text(pred)
                k = norm.index(p) if p in norm else None
            return k == self.gold
        return normalize_text(pred) == self.gold

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "gold": self.gold,
            "raw": self.raw,
            "choices": list(self.choices),
            "tolerance": self.tolerance,
            "precision": self.precision,
        }


def _infer(raw: str, choices: tuple[str, ...]) -> str:
    if len(choices) >= 2:
        return "choice"
    v = parse_number(raw)
    if v is None:
        return "text"
    return "integer" if float(v).is_integer() and "." not in _num_text(raw) else "float"
