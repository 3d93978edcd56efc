"""CoT / direct pairs from visual items, for VLMs (image in the prompt) and for LLMs (the same
question as text), so both models see the same problems in two modalities.

Image prompts use the structured chat content every HF VLM processor understands:
``[{"type": "image"}, {"type": "text", "text": prompt}]``; the processor's chat template inserts its
own placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence

from cotscope.probes.stimuli.arithmetic import Problem
from cotscope.probes.stimuli.pairs import Prompt, PromptPair
from cotscope.probes.stimuli.visual import VisualItem, text_prompt


def _problem(item: VisualItem) -> Problem:
    return Problem(
        id=item.id,
        question=item.question or item.description,
        answer=int(item.answer),
        steps=(),
        expression="",
        template=item.kind,
        difficulty="visual",
    )


def image_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def make_visual_pairs(items: Sequence[VisualItem], with_image: bool = True) -> list[PromptPair]:
    """Cue pairs (CoT cue vs direct cue). ``with_image=False`` gives the text-only equivalent for an LLM."""
    if len(items) == 0:
        raise ValueError("empty stimulus set: pass at least one visual item (generate_visual_items(n))")
    out = []
    for i, it in enumerate(items):
        if with_image:
            cot = Prompt(image_messages(it.cot_prompt), image=it.image)
            direct = Prompt(image_messages(it.direct_prompt), image=it.image)
        else:
            cot = Prompt([{"role": "user", "content": text_prompt(it, cot=True)}])
            direct = Prompt([{"role": "user", "content": text_prompt(it, cot=False)}])
        out.append(PromptPair(pair_id=i, problem=_problem(it), pairing="cue", cot=cot, direct=direct))
    return out
