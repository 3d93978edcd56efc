"""Grading generated answers: extraction, normalisation, accuracy, token lengths, forced-answer tokens.

* :func:`extract_answer` — the last ``\\boxed{...}`` (nested braces allowed), else the final number in
  the text; then :func:`normalize_answer` (commas, spaces, ``$``, ``+``, trailing ``.0``/``.``, ``\\text{}``).
* :func:`is_correct` / :func:`accuracy` — compare to the bundled gold answers after normalisation.
* :func:`response_length` — length of a response in tokens of the model's tokenizer.
* :func:`forced_answer` — the token ids of a teacher-forced answer string such as
  ``" The answer is \\boxed{42}."`` and which of them spell the gold value (used by
  :mod:`probes.intervene` to score ``log p(gold | prompt, k reasoning tokens)``).

No torch here: only strings, token ids and the tokenizer.

>>> extract_answer("so 3 + 4 = 7. The answer is \\\\boxed{1,204.0}")
'1204'
>>> extract_answer("First 12, then 7 apples.")
'7'
>>> is_correct("It is $19$.", 19)
True
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from cotscope.errors import CotscopeError

DEFAULT_TEMPLATE = " The answer is \\boxed{{{answer}}}."
_NUM = re.compile(r"[-+]?\$?\s?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


class AnswerTemplateError(CotscopeError):
    """A forced-answer template that cannot be used for scoring."""


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, in order."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def normalize_answer(ans: Any) -> str | None:
    """Canonical string form of an answer: integers without separators, floats without trailing zeros.

    >>> [normalize_answer(x) for x in ["$1,204.00", " 7 ", "+3", "\\\\text{12} apples", "3.50", 5, "abc"]]
    ['1204', '7', '3', '12', '3.5', '5', 'abc']
    """
    if ans is None:
        return None
    if isinstance(ans, bool):
        return str(ans)
    if isinstance(ans, int):
        return str(ans)
    if isinstance(ans, float):
        if not math.isfinite(ans):
            return None
        return str(int(ans)) if ans.is_integer() else repr(ans).rstrip("0").rstrip(".")
    s = str(ans).strip()
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[!,;: ]", "", s).replace("\\%", "%")
    s = s.replace("$", "").replace(",", "").replace(" ", "").strip().rstrip(".")
    m = re.fullmatch(r"([-+]?)(\d*\.?\d+)([a-zA-Z%]*)", s) or re.match(r"^([-+]?)(\d*\.?\d+)", s)
    if m:
        sign, num = m.group(1), m.group(2)
        if "." in num:
            num = num.rstrip("0").rstrip(".") or "0"
        num = num.lstrip("0") or "0" if "." not in num else num
        if num.startswith("."):
            num = "0" + num
        sign = "-" if sign == "-" and num.strip("0.") else ""
        return sign + num
    return s or None


def extract_answer(text: str) -> str | None:
    """The model's final answer: the last non-empty ``\\boxed{}``, else the last number; normalised.

    Returns ``None`` when the text holds neither.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_answer needs a str, got {type(text).__name__}")
    for content in reversed(_boxed_contents(text)):
        norm = normalize_answer(content)
        if norm:
            return norm
    nums = _NUM.findall(text)
    if not nums:
        return None
    return normalize_answer(nums[-1])


def is_correct(response_or_pred: str | None, gold: Any, *, extracted: bool = False) -> bool:
    """Whether a response (or an already extracted prediction, ``extracted=True``) matches ``gold``."""
    pred = response_or_pred if extracted else (extract_answer(response_or_pred) if response_or_pred else None)
    if pred is None:
        return False
    g = normalize_answer(gold)
    if pred == g:
        return True
    try:
        return math.isclose(float(pred), float(g), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def accuracy(responses: Sequence[str], golds: Sequence[Any]) -> float:
    """Share of ``responses`` whose extracted answer equals the gold answer.

    >>> accuracy(["\\\\boxed{4}", "5", "no idea"], [4, 6, 1])
    0.3333333333333333
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} gold answers; pass one gold answer per response")
    if not responses:
        raise ValueError("accuracy of an empty set is undefined; pass at least one response")
    return sum(is_correct(r, g) for r, g in zip(responses, golds)) / len(responses)


def response_length(tokenizer: Any, text: str) -> int:
    """Number of tokens of ``text`` (no special tokens added)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclasses.dataclass(frozen=True)
class ForcedAnswer:
    """Token ids of a teacher-forced answer and the mask of tokens that spell the gold value."""

    text: str
    ids: tuple[int, ...]
    gold_mask: tuple[bool, ...]

    @property
    def n_gold(self) -> int:
        return sum(self.gold_mask)


def forced_answer(tokenizer: Any, gold: Any, template: str = DEFAULT_TEMPLATE) -> ForcedAnswer:
    """Tokenise ``template.format(answer=gold)`` and mark the tokens overlapping the gold value.

    >>> fa = forced_answer(tok, 42)                         # doctest: +SKIP
    >>> tok.decode([t for t, g in zip(fa.ids, fa.gold_mask) if g])   # doctest: +SKIP
    '42'
    """
    if "{answer}" not in template:
        raise AnswerTemplateError(
            f"answer template {template!r} has no '{{answer}}' field; "
            "use e.g. ' The answer is \\\\boxed{{{answer}}}.'"
        )
    g = normalize_answer(gold)
    if not g:
        raise AnswerTemplateError(f"gold answer {gold!r} is empty; every prompt needs a gold answer to score")
    text = template.format(answer=g)
    start = len(template.split("{answer}", 1)[0].format())
    end = start + len(g)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc.get("offset_mapping") if hasattr(enc, "get") else None
    if offsets is not None and len(offsets) == len(ids):
        mask = [int(a) < end and int(b) > start for a, b in offsets]
    else:  # slow tokenizer: the tokens after the prefix's tokens, up to those of prefix+answer
        n_pre = len(tokenizer(text[:start], add_special_tokens=False)["input_ids"])
        n_ans = len(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
        mask = [n_pre <= i < n_ans for i in range(len(ids))]
    if not ids or not any(mask):
        raise AnswerTemplateError(f"could not locate the gold value {g!r} in the tokens of {text!r}")
    return ForcedAnswer(text=text, ids=tuple(int(i) for i in ids), gold_mask=tuple(bool(m) for m in mask))


def summarize(correct: Iterable[bool]) -> dict[str, float]:
    """Count and share of ``True`` values."""
    c = [bool(x) for x in correct]
    return {"n": len(c), "correct": sum(c), "accuracy": (sum(c) / len(c)) if c else float("nan")}
