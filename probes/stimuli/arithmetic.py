"""Seeded multi-step arithmetic word problems with exact integer answers.

Every problem carries its worked solution (one line per step), so both pairings
(CoT cue vs direct cue, long worked answer vs short answer) can be built from it.

>>> probs = generate_problems(3, seed=0)
>>> probs[0].answer == eval(probs[0].expression)
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Sequence

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Tom", "Yuki", "Nora"]
ITEMS = ["apples", "eggs", "pencils", "marbles", "stickers", "books", "coins", "cards", "shells", "cookies"]
DIFFICULTIES = ("easy", "medium", "hard")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One arithmetic word problem with an exact answer and its worked steps."""

    id: str
    question: str
    answer: int
    steps: tuple[str, ...]
    expression: str
    template: str
    difficulty: str

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Problem:
        return cls(
            id=str(d["id"]),
            question=str(d["question"]),
            answer=int(d["answer"]),
            steps=tuple(d.get("steps") or ()),
            expression=str(d.get("expression", "")),
            template=str(d.get("template", "user")),
            difficulty=str(d.get("difficulty", "unknown")),
        )


def _ranges(difficulty: str) -> tuple[int, int]:
    return {"easy": (2, 9), "medium": (5, 30), "hard": (12, 99)}[difficulty]


def _gain_lose(rng: random.Random, lo: int, hi: int, hard: bool):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    c = rng.randint(1, a + b - 1)
    q = f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. How many {item} does {name} have now?"
    steps = [
        f"{name} starts with {a} {item}.",
        f"After getting {b} more: {a} + {b} = {a + b}.",
        f"After giving away {c}: {a + b} - {c} = {a + b - c}.",
    ]
    expr = f"{a} + {b} - {c}"
    if hard:
        d = rng.randint(2, 4)
        q = q.replace(" How many", f" Then the amount is multiplied by {d}. How many")
        steps.append(f"Multiplying by {d}: {a + b - c} * {d} = {(a + b - c) * d}.")
        expr = f"({expr}) * {d}"
    return q, steps, expr


def _groups(rng: random.Random, lo: int, hi: int, hard: bool):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    g, per = rng.randint(2, max(3, hi // 3)), rng.randint(lo, hi)
    extra = rng.randint(1, hi)
    q = f"{name} has {g} boxes with {per} {item} in each box and {extra} loose {item}. How many {item} are there in total?"
    steps = [
        f"The boxes hold {g} * {per} = {g * per} {item}.",
        f"Adding the loose ones: {g * per} + {extra} = {g * per + extra}.",
    ]
    expr = f"{g} * {per} + {extra}"
    if hard:
        s = rng.randint(1, g * per)
        q = q.replace(" How many", f" {s} {item} are then sold. How many")
        steps.append(f"After selling {s}: {g * per + extra} - {s} = {g * per + extra - s}.")
        expr = f"{expr} - {s}"
    return q, steps, expr


def _share(rng: random.Random, lo: int, hi: int, hard: bool):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    k, each = rng.randint(2, 6), rng.randint(lo, hi)
    total, keep = k * each, rng.randint(1, hi)
    q = (
        f"{name} has {total + keep} {item}, keeps {keep} and shares the rest equally among {k} friends. "
        f"How many {item} does each friend get?"
    )
    steps = [f"{name} shares {total + keep} - {keep} = {total} {item}.", f"Each friend gets {total} / {k} = {each}."]
    expr = f"({total + keep} - {keep}) // {k}"
    if hard:
        m = rng.randint(2, 9)
        q = q.replace(" How many", f" Each friend then finds {m} more. How many")
        steps.append(f"With {m} more each: {each} + {m} = {each + m}.")
        expr = f"{expr} + {m}"
    return q, steps, expr


def _price(rng: random.Random, lo: int, hi: int, hard: bool):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    n, p = rng.randint(2, 9), rng.randint(lo, hi)
    paid = n * p + rng.randint(1, hi)
    q = f"{name} buys {n} {item} at {p} dollars each and pays with {paid} dollars. How much change does {name} get?"
    steps = [f"The cost is {n} * {p} = {n * p} dollars.", f"The change is {paid} - {n * p} = {paid - n * p} dollars."]
    expr = f"{paid} - {n} * {p}"
    if hard:
        t = rng.randint(2, 5)
        q = q.replace(" How much change", f" {name} does this {t} times in total. How much change in all")
        steps.append(f"Over {t} times: {paid - n * p} * {t} = {(paid - n * p) * t} dollars.")
        expr = f"({expr}) * {t}"
    return q, steps, expr


def _chain(rng: random.Random, lo: int, hi: int, hard: bool):
    a, b, c = rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi)
    q = f"Start with {a}, add {b}, then subtract {c}. What number do you get?"
    steps = [f"{a} + {b} = {a + b}.", f"{a + b} - {c} = {a + b - c}."]
    expr = f"{a} + {b} - {c}"
    if hard:
        d = rng.randint(2, 5)
        q = q.replace(" What number", f" Multiply the result by {d}. What number")
        steps.append(f"{a + b - c} * {d} = {(a + b - c) * d}.")
        expr = f"({expr}) * {d}"
    return q, steps, expr


TEMPLATES: dict[str, Callable] = {
    "gain_lose": _gain_lose,
    "groups": _groups,
    "share": _share,
    "price": _price,
    "chain": _chain,
}


def generate_problems(
    n: int, seed: int = 0, templates: Sequence[str] | None = None, difficulties: Sequence[str] = DIFFICULTIES
) -> list[Problem]:
    """Return ``n`` distinct problems, deterministic for ``seed``.

    Templates and difficulties cycle so every mix is represented. Answers are
    checked against the expression, so a template bug cannot produce a wrong gold answer.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}: ask for at least one problem.")
    templates = list(templates or TEMPLATES)
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown:
        raise ValueError(f"unknown templates {unknown}; choose from {sorted(TEMPLATES)}")
    bad = [d for d in difficulties if d not in DIFFICULTIES]
    if bad:
        raise ValueError(f"unknown difficulties {bad}; choose from {list(DIFFICULTIES)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could only make {len(out)} distinct problems of {n} with these templates/difficulties")
        k = len(out)
        template = templates[k % len(templates)]
        difficulty = list(difficulties)[(k // len(templates)) % len(difficulties)]
        lo, hi = _ranges(difficulty)
        q, steps, expr = TEMPLATES[template](rng, lo, hi, difficulty == "hard")
        if q in seen:
            continue
        answer = int(eval(expr, {"__builtins__": {}}))  # expression is built by us from integers only
        if not steps[-1].rstrip(" .dolars").endswith(str(answer)) and str(answer) not in steps[-1]:  # noqa: B005
            raise AssertionError(f"template {template} produced inconsistent steps for {q}")
        seen.add(q)
        pid = hashlib.sha1(q.encode()).hexdigest()[:10]
        out.append(
            Problem(
                id=f"{template}-{difficulty}-{pid}",
                question=q,
                answer=answer,
                steps=tuple(steps),
                expression=expr,
                template=template,
                difficulty=difficulty,
            )
        )
    return out


def problems_hash(problems: Sequence[Problem]) -> str:
    """A stable hash of a problem list (used in store manifests and direction provenance)."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps(p.to_dict(), sort_keys=True).encode())
    return h.hexdigest()
