"""The model's context window (``max_position_embeddings``) and the check every forward makes against it.

A prompt longer than the window still runs through a RoPE model — on positions it was never trained on —
and returns numbers that look like any others. Collection, injection/generation and attention capture
therefore measure their prompts in tokens and refuse one that does not fit *before* the first forward.

>>> class Cfg: max_position_embeddings = 16
>>> class LM:
...     model_id, config, text_config = "tiny", Cfg(), Cfg()
>>> context_window(LM())
16
>>> check_context(LM(), [10, 12], new_tokens=4, what="prompt")
>>> check_context(LM(), [10, 13], new_tokens=4, what="prompt")   # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
ContextLengthError: prompt 1 is 13 tokens + up to 4 new tokens = 17 > tiny's context window of 16 tokens ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cotscope.errors import CotscopeError


class ContextLengthError(CotscopeError):
    """A prompt (plus the tokens to generate) does not fit the model's context window."""


def context_window(loaded: Any) -> int | None:
    """``max_position_embeddings`` of the language model (``None`` when the config does not say)."""
    for cfg in (getattr(loaded, "text_config", None), getattr(loaded, "config", None)):
        n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
        if isinstance(n, int) and n > 0:
            return n
    return None


def check_context(
    loaded: Any,
    lengths: Sequence[int],
    new_tokens: int = 0,
    *,
    what: str = "prompt",
    name: Callable[[int], str] | None = None,
    fix: str | None = None,
) -> None:
    """Raise :class:`ContextLengthError` if any ``lengths[i] + new_tokens`` exceeds the context window.

    ``lengths`` are token counts (image tokens included when known); ``name(i)`` names row ``i`` in the
    message (default ``"<what> i"``); ``fix`` replaces the default advice.
    """
    window = context_window(loaded)
    if window is None:
        return
    for i, n in enumerate(lengths):
        total = int(n) + int(new_tokens)
        if total <= window:
            continue
        label = name(i) if name is not None else f"{what} {i}"
        size = f"{int(n)} tokens" + (f" + up to {int(new_tokens)} new tokens = {total}" if new_tokens else "")
        advice = fix or (
            f"shorten it to at most {window - int(new_tokens)} tokens"
            + (" or generate fewer tokens" if new_tokens else "")
            + ", or use a model with a longer context"
        )
        raise ContextLengthError(
            f"{label} is {size} > {getattr(loaded, 'model_id', 'the model')}'s context window of {window} tokens "
            f"(max_position_embeddings); positions past it were never trained, so its activations would be "
            f"meaningless. Fix: {advice}."
        )
