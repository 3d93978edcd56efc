"""Load a user's own problems from JSONL: one object per line with ``question`` and ``answer``.

Optional keys: ``id``, ``steps`` (list of strings), ``template``, ``difficulty``, ``image``.
"""

from __future__ import annotations

from pathlib import Path

from cotscope.probes.stimuli.arithmetic import Problem
from cotscope.probes.stimuli.textio import StimulusEncodingError, StimulusFormatError

__all__ = ["StimulusEncodingError", "StimulusFormatError", "load_problems_jsonl"]


def load_problems_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a UTF-8 JSONL file; every bad line raises :class:`StimulusFormatError` naming ``file:line``.

    A thin call to :func:`probes.stimuli.load.load_stimuli` (integer answers, ``question`` and ``answer`` required);
    ``steps``, ``expression``, ``template`` and ``difficulty`` come from the line when present. For other answer
    types, CoT/direct texts, images or other file formats use :func:`~probes.stimuli.load.load_stimuli` directly.

    >>> load_problems_jsonl("my_problems.jsonl")[0].answer      # doctest: +SKIP
    12
    """
    from cotscope.probes.stimuli.load import load_stimuli

    rows = load_stimuli(path, require=("question", "answer"), answer_type="integer", format="jsonl", load_images=False)
    out = []
    for s in rows:
        answer = int(s.answer.gold)
        m = s.meta
        steps = m.get("steps") or [f"The answer is {answer}."]
        out.append(
            Problem(
                id=s.id,
                question=s.question,
                answer=answer,
                steps=tuple(map(str, steps)),
                expression=str(m.get("expression", "")),
                template=str(m.get("template", "user")),
                difficulty=str(m.get("difficulty", "unknown")),
            )
        )
    return out
