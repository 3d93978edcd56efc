"""CoT / direct prompt pairs built from problems, in the two pairings of METHODS.md §1.

* ``cue``    — same question with a CoT cue vs a direct-answer cue (L2V-CoT analysis).
* ``answer`` — same question; assistant turn is a long worked answer vs a short answer
  (the released L2V-CoT code).

Each member keeps its chat messages and an optional assistant answer; the model's own
chat template is applied by :func:`render` with the model's tokenizer.

>>> from cotscope.probes.stimuli.arithmetic import generate_problems
>>> pairs = make_pairs(generate_problems(2, seed=0), pairing="cue")
>>> pairs[0].cot.messages[-1]["content"].endswith(COT_CUE)
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cotscope.probes.stimuli.arithmetic import Problem

COT_CUE = "Let's think step by step."
DIRECT_CUE = "Answer the question directly with only the final number."
PAIRINGS = ("cue", "answer")


@dataclasses.dataclass
class Prompt:
    """One side of a pair: chat messages, an optional assistant answer, an optional image."""

    messages: list[dict[str, Any]]
    answer: str | None = None
    image: Any = None  # PIL image for VLM stimuli

    def render(self, tokenizer_or_processor) -> tuple[str, str]:
        """Return ``(prompt_text, full_text)`` after the model's chat template.

        ``prompt_text`` ends with the generation prompt; ``full_text`` adds the answer (if any).
        """
        apply = tokenizer_or_processor.apply_chat_template
        prompt = apply(self.messages, tokenize=False, add_generation_prompt=True)
        if self.answer is None:
            return prompt, prompt
        return prompt, prompt + self.answer


@dataclasses.dataclass
class PromptPair:
    pair_id: int
    problem: Problem
    pairing: str
    cot: Prompt
    direct: Prompt

    def members(self) -> list[tuple[int, Prompt]]:
        """``[(1, cot), (0, direct)]`` — label 1 means CoT."""
        return [(1, self.cot), (0, self.direct)]


def worked_answer(problem: Problem) -> str:
    return " ".join(problem.steps) + f" The answer is \\boxed{{{problem.answer}}}."


def short_answer(problem: Problem) -> str:
    return f"The answer is \\boxed{{{problem.answer}}}."


def _user(content: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def make_pairs(
    problems: Sequence[Problem],
    pairing: str = "cue",
    with_answers: bool = True,
    cot_cue: str = COT_CUE,
    direct_cue: str = DIRECT_CUE,
) -> list[PromptPair]:
    """Build CoT/direct pairs. ``with_answers`` adds assistant answers to cue pairs too
    (needed for the answer-token position); answer pairs always have them."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; choose one of {PAIRINGS}")
    if len(problems) == 0:
        raise ValueError("empty stimulus set: pass at least one problem (e.g. generate_problems(64)).")
    empty = [p.id for p in problems if p.question is None or not str(p.question).strip()]
    if empty:
        raise ValueError(
            f"problems {empty[:5]} have an empty question; their CoT and direct prompts would hold only "
            "the cues. Fix: drop them or give them a question."
        )
    out = []
    for i, p in enumerate(problems):
        if pairing == "cue":
            cot = Prompt(_user(f"{p.question} {cot_cue}"), worked_answer(p) if with_answers else None)
            direct = Prompt(_user(f"{p.question} {direct_cue}"), short_answer(p) if with_answers else None)
        else:
            cot = Prompt(_user(p.question), worked_answer(p))
            direct = Prompt(_user(p.question), short_answer(p))
        out.append(PromptPair(pair_id=i, problem=p, pairing=pairing, cot=cot, direct=direct))
    return out
