"""Load a user's own problems from JSONL: one object per line with ``question`` and ``answer``.

Optional keys: ``id``, ``steps`` (list of strings), ``template``, ``difficulty``, ``image``.
"""
from __future__ import annotations

import json
from pathlib import Path

from cotscope.errors import CotscopeError
from cotscope.probes.stimuli.arithmetic import Problem


class StimulusFormatError(CotscopeError):
    """A stimulus file has a line that cannot be read."""


def load_problems_jsonl(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"stimulus file {path} does not exist")
    problems = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
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
