"""Write cotscope's bundled long/short *thought* pairs (probes/stimuli/data/long_short_thoughts.jsonl).

The released L2V-CoT code reads its CoT direction from about 100 problems, each answered twice in the assistant
turn: a long-form thought (exploration, self-checks, an alternative route) and a short-form thought (the direct
working). Its data file is not public, so cotscope generates its own set, written here from scratch: twelve
families of small word problems with exact answers, each rendered as both forms. Deterministic for a seed; the
checked-in file is what ``python scripts/make_thought_pairs.py`` writes.

Fields (the released names): ``id``, ``problem``, ``long_form_thought``, ``short_form_thought``, ``answer``,
``answer_type``, ``family``.

    python scripts/make_thought_pairs.py [--n 104] [--seed 0] [--out probes/stimuli/data/long_short_thoughts.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Tom", "Yuki", "Nora", "Kofi", "Elif"]
THINGS = ["apples", "stickers", "marbles", "pencils", "cards", "shells", "stamps", "books", "coins", "beads"]
OPEN = [
    "Okay, let me work through this carefully.",
    "Alright, let me read the problem again and set it up.",
    "Let me think about what is being asked before computing anything.",
    "Hmm, let me take this step by step.",
]
CHECK = [
    "Wait, let me double-check that.",
    "Hold on, I should verify this.",
    "Let me make sure I did not slip.",
    "Before I commit, let me check the arithmetic another way.",
]
CLOSE = [
    "Both ways agree, so I'm confident.",
    "That matches, good.",
    "The check works out.",
    "Everything is consistent.",
]


def fmt(x: Fraction | int | float) -> str:
    if isinstance(x, Fraction):
        return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"
    return f"{x:g}" if isinstance(x, float) else str(x)


def _pack(rng: random.Random, q: str, restate: str, steps: list[str], check: str, alt: str, answer, short: list[str]):
    long = " ".join(
        [
            rng.choice(OPEN),
            restate,
            *steps,
            rng.choice(CHECK),
            check,
            alt,
            rng.choice(CLOSE),
            f"So the answer is \\boxed{{{fmt(answer)}}}.",
        ]
    )
    return q, long, " ".join(short + [f"The answer is \\boxed{{{fmt(answer)}}}."]), answer


def gain_lose(rng):
    n, t = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(5, 40), rng.randint(3, 30)
    c = rng.randint(1, a + b - 1)
    r = a + b - c
    return _pack(
        rng,
        f"{n} has {a} {t}, gets {b} more, then gives away {c}. How many {t} does {n} have now?",
        f"{n} starts with {a} {t}, gains {b}, and loses {c}; I need the final count.",
        [f"First the gain: {a} + {b} = {a + b}.", f"Then giving away {c}: {a + b} - {c} = {r}."],
        f"Going backwards, {r} + {c} = {a + b}, and {a + b} - {b} = {a}, which is the starting amount.",
        f"Another way: the net change is {b} - {c} = {b - c}, and {a} + ({b - c}) = {r}.",
        r,
        [f"{a} + {b} - {c} = {r}."],
    )


def groups(rng):
    n, t = rng.choice(NAMES), rng.choice(THINGS)
    g, per, extra = rng.randint(3, 9), rng.randint(4, 12), rng.randint(1, 9)
    r = g * per + extra
    return _pack(
        rng,
        f"{n} packs {t} into {g} bags with {per} in each bag and has {extra} left over. How many {t} "
        f"are there in total?",
        f"There are {g} equal bags plus {extra} loose {t}.",
        [f"The bags hold {g} × {per} = {g * per}.", f"Adding the loose ones: {g * per} + {extra} = {r}."],
        f"Dividing back, ({r} - {extra}) / {g} = {per}, which is the bag size.",
        f"I could also add {per} repeatedly {g} times: that is {g * per} again.",
        r,
        [f"{g} × {per} + {extra} = {r}."],
    )


def discount(rng):
    price = rng.choice([20, 40, 50, 60, 80, 120, 150, 200, 250])
    pct = rng.choice([10, 15, 20, 25, 30, 40, 50])
    off = Fraction(price * pct, 100)
    r = price - off
    return _pack(
        rng,
        f"A jacket costs ${price}. It is on sale for {pct}% off. What is the sale price in dollars?",
        f"The discount is {pct}% of {price}, and the sale price is what remains.",
        [
            f"{pct}% of {price} is {price} × {pct}/100 = {fmt(off)}.",
            f"So the price is {price} - {fmt(off)} = {fmt(r)}.",
        ],
        f"Paying {100 - pct}% directly: {price} × {100 - pct}/100 = {fmt(Fraction(price * (100 - pct), 100))}.",
        f"And {fmt(r)} + {fmt(off)} gives back {price}.",
        r,
        [f"{price} × (1 - {pct}/100) = {fmt(r)}."],
    )


def minutes(rng):
    h, m = rng.randint(1, 5), rng.choice([5, 10, 15, 20, 25, 30, 35, 40, 45, 50])
    r = 60 * h + m
    return _pack(
        rng,
        f"How many minutes are there in {h} hours and {m} minutes?",
        f"I have to convert {h} hours into minutes and add the extra {m}.",
        [
            f"One hour has 60 minutes, so {h} hours are {h} × 60 = {60 * h} minutes.",
            f"Adding {m}: {60 * h} + {m} = {r}.",
        ],
        f"Splitting {r} back: {r} // 60 = {h} hours with {r % 60} minutes left.",
        f"In hours that is {fmt(Fraction(r, 60))} hours, which is between {h} and {h + 1}, as it should be.",
        r,
        [f"{h} × 60 + {m} = {r}."],
    )


def rectangle(rng):
    w, l = rng.randint(3, 15), rng.randint(4, 20)
    kind = rng.choice(["area", "perimeter"])
    if kind == "area":
        r = w * l
        return _pack(
            rng,
            f"A rectangle is {w} cm wide and {l} cm long. What is its area in square centimetres?",
            "The area of a rectangle is width times length.",
            [f"{w} × {l} = {r}."],
            f"Swapping the order, {l} × {w} = {r} as well, and {r} / {w} = {l}.",
            f"Counting unit squares row by row gives {l} rows of {w}, the same {r}.",
            r,
            [f"{w} × {l} = {r}."],
        )
    r = 2 * (w + l)
    return _pack(
        rng,
        f"A rectangle is {w} cm wide and {l} cm long. What is its perimeter in centimetres?",
        "The perimeter adds all four sides: two widths and two lengths.",
        [f"Width plus length: {w} + {l} = {w + l}.", f"Twice that: 2 × {w + l} = {r}."],
        f"Adding the sides one by one: {w} + {l} + {w} + {l} = {r}.",
        f"Equivalently 2 × {w} + 2 × {l} = {2 * w} + {2 * l} = {r}.",
        r,
        [f"2 × ({w} + {l}) = {r}."],
    )


def average(rng):
    k = rng.randint(3, 5)
    xs = [rng.randint(2, 30) for _ in range(k)]
    r = Fraction(sum(xs), k)
    return _pack(
        rng,
        f"What is the average of {', '.join(map(str, xs[:-1]))} and {xs[-1]}?",
        f"The average is the sum divided by how many numbers there are, here {k}.",
        [f"The sum is {' + '.join(map(str, xs))} = {sum(xs)}.", f"Dividing by {k}: {sum(xs)} / {k} = {fmt(r)}."],
        f"Multiplying back, {fmt(r)} × {k} = {sum(xs)}.",
        f"The average {fmt(r)} lies between the smallest {min(xs)} and the largest {max(xs)}, which is sensible.",
        r,
        [f"({' + '.join(map(str, xs))}) / {k} = {fmt(r)}."],
    )


def linear(rng):
    a, x = rng.randint(2, 9), rng.randint(-6, 12)
    b = rng.randint(-20, 20)
    c = a * x + b
    sb = f"+ {b}" if b >= 0 else f"- {-b}"
    return _pack(
        rng,
        f"Solve for x: {a}x {sb} = {c}.",
        f"I need to isolate x in {a}x {sb} = {c}.",
        [
            f"Move the constant: {a}x = {c} {'-' if b >= 0 else '+'} {abs(b)} = {c - b}.",
            f"Divide by {a}: x = {c - b} / {a} = {x}.",
        ],
        f"Substituting x = {x}: {a} × {x} {sb} = {a * x} {sb} = {c}. Correct.",
        f"Thinking of it as undoing operations in reverse order gives the same x = {x}.",
        x,
        [f"{a}x = {c - b}, so x = {x}."],
    )


def clock(rng):
    h1, m1 = rng.randint(6, 11), rng.choice([0, 10, 15, 20, 30, 40, 45])
    dur = rng.choice([35, 50, 75, 90, 105, 130, 150])
    r = dur
    end = h1 * 60 + m1 + dur
    return _pack(
        rng,
        f"A train leaves at {h1}:{m1:02d} and arrives at {end // 60}:{end % 60:02d} the same day. How "
        f"many minutes does the trip take?",
        "I need the time between departure and arrival in minutes.",
        [
            f"Departure is {h1} × 60 + {m1} = {h1 * 60 + m1} minutes after midnight.",
            f"Arrival is {end // 60} × 60 + {end % 60} = {end} minutes after midnight.",
            f"The difference is {end} - {h1 * 60 + m1} = {r}.",
        ],
        f"Adding {r} minutes to {h1}:{m1:02d} lands on {end // 60}:{end % 60:02d}.",
        f"In hours and minutes that is {r // 60} h {r % 60} min.",
        r,
        [f"{end} - {h1 * 60 + m1} = {r} minutes."],
    )


def ratio(rng):
    a, b = rng.randint(1, 5), rng.randint(1, 5)
    unit = rng.randint(3, 12)
    total = (a + b) * unit
    n1, n2 = rng.sample(NAMES, 2)
    r = a * unit
    return _pack(
        rng,
        f"{n1} and {n2} share {total} coins in the ratio {a}:{b}. How many coins does {n1} get?",
        f"The coins split into {a} + {b} = {a + b} equal parts.",
        [f"One part is {total} / {a + b} = {unit}.", f"{n1} gets {a} parts: {a} × {unit} = {r}."],
        f"{n2} gets {b} × {unit} = {b * unit}, and {r} + {b * unit} = {total}.",
        f"As a fraction, {n1} gets {a}/{a + b} of {total}, which is {r} again.",
        r,
        [f"{total} / {a + b} × {a} = {r}."],
    )


def sequence(rng):
    a0, d, n = rng.randint(1, 20), rng.randint(2, 9), rng.randint(6, 15)
    r = a0 + (n - 1) * d
    first = ", ".join(str(a0 + i * d) for i in range(4))
    return _pack(
        rng,
        f"The sequence {first}, ... goes up by the same amount each time. What is term number {n}?",
        f"It starts at {a0} and increases by {d} each step.",
        [f"Term n is {a0} + (n - 1) × {d}.", f"For n = {n}: {a0} + {n - 1} × {d} = {a0} + {(n - 1) * d} = {r}."],
        f"Checking the formula on term 4: {a0} + 3 × {d} = {a0 + 3 * d}, which matches the list.",
        f"Counting on from term 4 by {n - 4} more steps of {d} also reaches {r}.",
        r,
        [f"{a0} + ({n} - 1) × {d} = {r}."],
    )


def speed(rng):
    v, t = (
        rng.choice([30, 40, 45, 48, 50, 60, 72, 80]),
        rng.choice([Fraction(1, 2), Fraction(3, 2), 2, Fraction(5, 2), 3, 4]),
    )
    t = Fraction(t)
    r = v * t
    return _pack(
        rng,
        f"A car drives at {v} km per hour for {fmt(t)} hours. How many kilometres does it travel?",
        "Distance equals speed times time.",
        [f"{v} × {fmt(t)} = {fmt(r)}."],
        f"Dividing back, {fmt(r)} / {fmt(t)} = {v} km per hour.",
        f"Hour by hour: {v} km each full hour, plus the fraction of an hour, totals {fmt(r)}.",
        r,
        [f"{v} × {fmt(t)} = {fmt(r)} km."],
    )


def shopping(rng):
    n = rng.choice(NAMES)
    p1, q1, p2, q2 = rng.randint(2, 9), rng.randint(2, 6), rng.randint(3, 15), rng.randint(1, 4)
    paid = rng.choice([50, 100])
    cost = p1 * q1 + p2 * q2
    if cost >= paid:
        paid = 100 if cost < 100 else 200
    r = paid - cost
    return _pack(
        rng,
        f"{n} buys {q1} notebooks at ${p1} each and {q2} pens at ${p2} each, and pays with a ${paid} "
        f"bill. How much change does {n} get in dollars?",
        "I need the total cost first, then the change from the bill.",
        [
            f"Notebooks: {q1} × {p1} = {q1 * p1}.",
            f"Pens: {q2} × {p2} = {q2 * p2}.",
            f"Total: {q1 * p1} + {q2 * p2} = {cost}.",
            f"Change: {paid} - {cost} = {r}.",
        ],
        f"Cost plus change should be the bill: {cost} + {r} = {paid}.",
        f"Subtracting item by item from {paid} gives {paid} - {q1 * p1} - {q2 * p2} = {r}.",
        r,
        [f"{paid} - ({q1} × {p1} + {q2} × {p2}) = {r}."],
    )


FAMILIES: dict[str, Callable] = {
    "gain_lose": gain_lose,
    "groups": groups,
    "discount": discount,
    "minutes": minutes,
    "rectangle": rectangle,
    "average": average,
    "linear": linear,
    "clock": clock,
    "ratio": ratio,
    "sequence": sequence,
    "speed": speed,
    "shopping": shopping,
}


def make(n: int = 104, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    fams = list(FAMILIES)
    i = 0
    while len(rows) < n:
        fam = fams[i % len(fams)]
        i += 1
        q, long, short, ans = FAMILIES[fam](rng)
        if q in seen:
            continue
        seen.add(q)
        a = Fraction(ans)
        rows.append(
            {
                "id": f"thought-{len(rows):03d}",
                "family": fam,
                "problem": q,
                "long_form_thought": long,
                "short_form_thought": short,
                "answer": fmt(a),
                "answer_type": "integer" if a.denominator == 1 else "float",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=104)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "probes" / "stimuli" / "data" / "long_short_thoughts.jsonl"),
    )
    args = ap.parse_args(argv)
    rows = make(args.n, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} pairs -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
