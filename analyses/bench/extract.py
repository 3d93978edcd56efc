"""Rule-based answer extraction from free-form responses (VLMEvalKit-style matching; no judge model).

* :func:`extract_choice` — the option a response picks: ``\\boxed{B}``, "answer is (B)", "Answer: B", a single
  option letter standing alone in the text, or the text of exactly one option (VLMEvalKit's ``can_infer``
  idea: accept only an unambiguous match, else ``None``);
* :func:`extract_number` — ``\\boxed{…}``, then "answer is …", then the last number in the text;
* :func:`extract_free` — ``\\boxed{…}`` / "answer is …" / the last line, for text answers;
* :func:`extract` — the extractor for an :class:`~analyses.answers.AnswerSpec`'s type.

Every extractor returns ``None`` when the response does not commit to an answer (then a judge may help).

>>> extract_choice("Let me see... the answer is (C).", ["cat", "dog", "cow"])
'C'
>>> extract_choice("I think it is the dog.", ["cat", "dog", "cow"])
'B'
>>> extract_choice("A or B, hard to say", ["x", "y", "z"]) is None
True
>>> extract_number("3 + 4 = 7, so the answer is \\\\boxed{7}.")
'7'
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from cotscope.analyses.answers import AnswerSpec, normalize_text, parse_number

LETTERS = string.ascii_uppercase
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer|correct\s+option|correct\s+choice|option|choice)\s*(?:is|:|=)?\s*"
    r"(?:option\s*)?[\(\[]?\s*([^\n]*)",
    re.I,
)
_NUMBER = re.compile(r"[-+]?\$?\s?\d[\d,]*(?:\.\d+)?%?|[-+]?\.\d+")


def boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{…}`` / ``\\fbox{…}`` (balanced braces), in order."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1].strip())
    return out


def _strip_latex(s: str) -> str:
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|mathbf|textbf)\s*\{([^{}]*)\}", r"\1", s)
    return s.replace("$", "").strip()


def _answer_clause(text: str) -> str | None:
    m = None
    for m in _ANSWER_IS.finditer(text):
        pass
    if m is None:
        return None
    clause = m.group(1).strip()
    return clause or None


def _letter_alone(s: str, n: int) -> str | None:
    m = re.fullmatch(r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?[\s\.:,]*", s.strip())
    if m and LETTERS.find(m.group(1).upper()) in range(n):
        return m.group(1).upper()
    return None


def extract_choice(response: str, choices: Sequence[str]) -> str | None:
    """The letter of the option ``response`` picks, or ``None`` when it is missing or ambiguous."""
    n = len(choices)
    if n < 2:
        raise ValueError("extract_choice needs at least two options")
    text = str(response)
    for b in reversed(boxed(text)):
        k = _letter_alone(_strip_latex(b), n) or _option_text(_strip_latex(b), choices)
        if k:
            return k
    clause = _answer_clause(text)
    if clause:
        head = re.match(r"[\(\[]?\s*([A-Za-z])\s*(?:[\)\]\.:,]|$|\s)", clause)
        if head and LETTERS.find(head.group(1).upper()) in range(n) and not re.match(r"[A-Za-z]{2}", clause):
            return head.group(1).upper()
        k = _option_text(clause, choices)
        if k:
            return k
    k = _letter_alone(text, n)
    if k:
        return k
    # a single option letter standing alone as a word (ignore the article "A" written as "A " + lower-case word)
    words = re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", re.sub(r"\bA (?=[a-z])(?!(?:or|and|nor)\b)", " ", text))
    cands = sorted({w for w in words if LETTERS.index(w) < n})
    if len(cands) == 1:
        return cands[0]
    return _option_text(text, choices)


def _option_text(text: str, choices: Sequence[str]) -> str | None:
    """The letter of the only option whose (normalised) text appears in ``text``; ``None`` if zero or several do."""
    t = f" {normalize_text(text)} "
    hits = [i for i, c in enumerate(choices) if normalize_text(c) and f" {normalize_text(c)} " in t]
    if len(hits) > 1:  # keep only options not contained in another hit ("3" inside "13" is already excluded)
        hits = [
            i
            for i in hits
            if not any(i != j and normalize_text(choices[i]) in normalize_text(choices[j]) for j in hits)
        ]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def extract_number(response: str) -> str | None:
    """The final numeric answer as text, or ``None``."""
    text = str(response)
    for b in reversed(boxed(text)):
        s = _strip_latex(b)
        if parse_number(s) is not None:
            return s
        nums = _NUMBER.findall(s)
        if nums:
            return nums[-1].strip()
    clause = _answer_clause(text)
    if clause:
        nums = _NUMBER.findall(clause)
        if nums:
            return nums[0].strip()
    nums = _NUMBER.findall(text)
    return nums[-1].strip() if nums else None


def extract_free(response: str) -> str | None:
    """A free-text answer: the last ``\\boxed{}``, else the "answer is …" clause, else the last non-empty line."""
    text = str(response)
    bs = boxed(text)
    if bs:
        return _strip_latex(bs[-1])
    clause = _answer_clause(text)
    if clause:
        return clause.rstrip(". ")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1].rstrip(".") if lines else None


def extract(response: str, spec: AnswerSpec) -> str | None:
    """The extractor matching ``spec.type``: choice → letter, integer/float → number, text → free text."""
    if spec.type == "choice":
        return extract_choice(response, spec.choices)
    if spec.type in ("integer", "float"):
        return extract_number(response)
    return extract_free(response)


def judge_prompt(question: str, response: str, spec: AnswerSpec) -> str:
    """The instruction a judge model gets when the rules fail: pull the final answer out of ``response``."""
    opts = ""
    if spec.type == "choice":
        opts = "\nOptions:\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(spec.choices))
    want = {
        "choice": "the option letter only",
        "integer": "the integer only",
        "float": "the number only",
        "text": "the short answer only",
    }[spec.type]
    return (
        f"Read a model's response to a question and write its final answer ({want}). If it gives no answer, "
        f"write NONE.\n\nQuestion: {question}{opts}\n\nResponse: {response}\n\nFinal answer:"
    )


def parse_judge_output(text: str, spec: AnswerSpec) -> str | None:
    """The judge's reply as an extracted answer (``None`` for NONE or an unusable reply)."""
    t = str(text).strip().splitlines()[0].strip() if str(text).strip() else ""
    if not t or t.upper().startswith("NONE"):
        return None
    return extract(t, spec) if spec.type != "text" else t.rstrip(".")


def as_pred(value: Any) -> str | None:
    return None if value is None else str(value)
