"""Load a user's own problems from JSONL: one object per line with ``question`` and ``answer``.

Optional keys: ``id``, ``steps`` (list of strings), ``template``, ``difficulty``, ``image``.
"""
from __future__ import annotations

import json
from pathlib import Path

from cotscope.probes.stimuli.arithmetic import Problem
from cotscope.probes.stimuli.textio import StimulusEncodingError, StimulusFormatError, read_lines

__all__ = ["StimulusEncodingError", "StimulusFormatError", "load_problems_jsonl"]


def load_problems_jsonl(path: str | Path) -> list[Problem]:
    """Problems from a UTF-8 JSONL file; every bad line raises :class:`StimulusFormatError` naming ``file:line``.

    >>> load_problems_jsonl("my_problems.jsonl")[0].answer      # doctest: +SKIP
    12
    """
    path = Path(path)
    problems = []
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise StimulusFormatError(f"{path}:{lineno}: not valid JSON ({e.msg}); "
                                      "each line must be one JSON object like "
                                      '{"question": "...", "answer": 12}') from None
        if not isinstance(obj, dict) or "question" not in obj or "answer" not in obj:
            raise StimulusFormatError(f"{path}:{lineno}: needs keys 'question' and 'answer'")
        if obj["question"] is None or not str(obj["question"]).strip():
            raise StimulusFormatError(f"{path}:{lineno}: the question is empty ({obj['question']!r}); the CoT and "
                                      "direct prompts would hold only the cues. Fix: write the question, or "
                                      "delete the line")
        try:
            answer = int(str(obj["answer"]).strip())
        except ValueError:
            raise StimulusFormatError(f"{path}:{lineno}: answer {obj['answer']!r} is not an integer") from None
        steps = obj.get("steps") or [f"The answer is {answer}."]
        problems.append(Problem(id=str(obj.get("id", f"{path.stem}-{lineno}")), question=str(obj["question"]),
                                answer=answer, steps=tuple(map(str, steps)), expression=str(obj.get("expression", "")),
                                template=str(obj.get("template", "user")), difficulty=str(obj.get("difficulty", "unknown"))))
    if not problems:
        raise StimulusFormatError(f"{path}: empty stimulus set (no problems); add at least one JSON line")
    return problems
