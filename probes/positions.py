"""One vocabulary for *where*: :class:`Positions` for steering (write), :class:`TokenRule` for reading.

**Steering positions.** A steered forward pass is either the *prompt pass* (the whole prompt) or a
*generation step* (one new token). :class:`Positions` is a union of these atoms:

=============  ==========================================================================================
``first``      the first real prompt token, and every generated token (position 0 of every forward call
               under the KV cache: the released L2V-CoT behaviour)
``last_prompt``  the last prompt token (prompt pass only)
``prompt``     every real prompt token (prompt pass only)
``generated``  every generated token
=============  ==========================================================================================

and two shorthands: ``all`` = ``prompt`` + ``generated``, ``last`` = ``last_prompt`` + ``generated``
(the last token of every forward call). Token indices (an int, a slice or a list of ints) name positions of
one forward pass. Combine names with a tuple, ``"+"`` or ``","``. :func:`probes.intervene.generate_steered`
takes names; :func:`probes.apply.apply` (one traced forward pass) takes ``all``, ``last``/``last_prompt``,
``prompt`` or indices. Every parser error is a :class:`PositionsError` naming the valid spellings.

>>> Positions.parse("last")
Positions('last_prompt+generated')
>>> Positions.parse(("generated", "last_prompt")) == Positions.parse("last_prompt+generated")
True
>>> Positions.parse("all").generation()
('prompt', 'generated')
>>> Positions.parse("all").forward(), Positions.parse([1, 2]).forward()
('all', [1, 2])

**Token rules.** What a collected activation is read from (:func:`probes.collect.collect_pairs`; recorded as
``DirectionMeta.token_rule``):

>>> parse_token_rules("last_prompt,answer_mean")
(<TokenRule.LAST_PROMPT: 'last_prompt'>, <TokenRule.ANSWER_MEAN: 'answer_mean'>)
>>> TokenRule.parse("last").value
'last'
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from cotscope.errors import CotscopeError

__all__ = [
    "Positions",
    "PositionsError",
    "PositionsLike",
    "STEER_ATOMS",
    "SHORTHANDS",
    "TokenRule",
    "TokenRuleError",
    "parse_token_rules",
]

STEER_ATOMS = ("first", "last_prompt", "prompt", "generated")
SHORTHANDS = {"all": ("prompt", "generated"), "last": ("last_prompt", "generated")}
_SPELLINGS = f"{', '.join(repr(n) for n in (*STEER_ATOMS, *SHORTHANDS))}, a tuple of them, or token indices"


class PositionsError(CotscopeError):
    """A steering-position spec that cannot be read, or that this steering path cannot honour."""


@dataclasses.dataclass(frozen=True)
class Positions:
    """Where steering adds its vector: position names (see the module docstring) or token indices."""

    names: tuple[str, ...] = ()
    index: int | slice | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if bool(self.names) == (self.index is not None):
            raise PositionsError("Positions holds either names or token indices (exactly one of them)")
        bad = [n for n in self.names if n not in STEER_ATOMS]
        if bad:
            raise PositionsError(f"unknown position(s) {bad}; use {_SPELLINGS}")

    @classmethod
    def parse(cls, spec: PositionsLike, what: str = "position") -> Positions:
        """Read any accepted spelling (old ``apply`` and ``intervene`` spellings included).

        ``what`` names the positions in error messages (e.g. ``"injection position"``).
        """
        import numpy as np

        if isinstance(spec, Positions):
            return spec
        if isinstance(spec, (bool, np.bool_)):
            raise PositionsError(f"positions={spec!r} is a bool; use {_SPELLINGS}")
        if isinstance(spec, (int, np.integer)):
            return cls(index=int(spec))
        if isinstance(spec, slice):
            return cls(index=spec)
        if isinstance(spec, str):
            parts = [p.strip() for p in spec.replace(",", "+").split("+")]
        elif isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
            items = list(spec)
            if not items:
                raise PositionsError(f"no {what}s given (positions={spec!r}); use {_SPELLINGS}")
            if all(isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)) for p in items):
                return cls(index=tuple(int(p) for p in items))
            if not all(isinstance(p, str) for p in items):
                raise PositionsError(f"positions={spec!r} mixes names and other values; use {_SPELLINGS}")
            parts = [p.strip() for p in items]
        else:
            raise PositionsError(f"positions={spec!r} ({type(spec).__name__}) cannot be read; use {_SPELLINGS}")
        atoms: list[str] = []
        for p in parts:
            if p in SHORTHANDS:
                atoms += SHORTHANDS[p]
            elif p in STEER_ATOMS:
                atoms.append(p)
            else:
                raise PositionsError(f"unknown {what} {p!r} in positions={spec!r}; use {_SPELLINGS}")
        return cls(names=tuple(a for a in STEER_ATOMS if a in atoms))

    def generation(self) -> tuple[str, ...]:
        """The position names, for steering during generation (:func:`probes.intervene.generate_steered`)."""
        if self.index is not None:
            raise PositionsError(
                f"positions={self} are token indices, which mean nothing across generation steps; "
                f"during generation use names: {', '.join(STEER_ATOMS)} (or 'all', 'last')"
            )
        return self.names

    def forward(self) -> str | int | slice | list[int]:
        """The mask of one forward pass (:func:`probes.apply.apply`): ``"all"``, ``"last"`` or token indices."""
        if self.index is not None:
            return list(self.index) if isinstance(self.index, tuple) else self.index
        if "first" in self.names:
            raise PositionsError(
                "positions='first' needs the attention mask of a generation call; use "
                "probes.intervene.generate_steered, or token index 0 (positions=0) here"
            )
        if "prompt" in self.names:
            return "all"
        if "last_prompt" in self.names:
            return "last"
        raise PositionsError(
            f"positions={str(self)!r} steers only generated tokens, and one forward pass generates "
            "none; use 'all', 'last' or token indices here, or generate_steered for generation"
        )

    def __str__(self) -> str:
        if self.index is None:
            return "+".join(self.names)
        if isinstance(self.index, slice):
            return f"{self.index.start or ''}:{'' if self.index.stop is None else self.index.stop}"
        return ",".join(str(i) for i in (self.index if isinstance(self.index, tuple) else (self.index,)))

    def __repr__(self) -> str:
        return f"Positions({str(self)!r})" if self.index is None else f"Positions(index={self.index!r})"


PositionsLike = Positions | str | int | slice | Sequence[str] | Sequence[int]


class TokenRuleError(CotscopeError):
    """An unknown token rule (what an activation is read from)."""


class TokenRule(str, enum.Enum):
    """Which token(s) a collected activation is read from."""

    LAST_PROMPT = "last_prompt"  # last token of the chat-templated prompt (after the generation prompt)
    LAST = "last"  # last token of the full text (prompt + answer; no end-of-turn suffix)
    ANSWER_MEAN = "answer_mean"  # mean over the assistant-answer tokens
    IMAGE_MEAN = "image_mean"  # mean over image-placeholder tokens (VLM inputs only)
    MEAN = "mean"  # mean over every token (probes.vision_latents)
    EOT = "eot"  # the end-of-turn token the chat template writes after the answer
    TURN_END = "turn_end"  # last token of apply_chat_template([user, assistant]): the released L2V-CoT rule

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, rule: TokenRule | str, allowed: Sequence[TokenRule | str] | None = None) -> TokenRule:
        """A :class:`TokenRule` from its name; ``allowed`` restricts the rules a reader supports."""
        ok = [cls(a) for a in allowed] if allowed is not None else list(cls)
        try:
            r = cls(rule.strip() if isinstance(rule, str) else rule)
        except ValueError:
            r = None
        if r is None or r not in ok:
            raise TokenRuleError(f"unknown token rule {rule!r}; choose from {[a.value for a in ok]}")
        return r


def parse_token_rules(
    rules: str | TokenRule | Sequence[str | TokenRule], allowed: Sequence[TokenRule | str] | None = None
) -> tuple[TokenRule, ...]:
    """De-duplicated token rules in the given order, from a list or a ``","``-separated string."""
    items = rules.split(",") if isinstance(rules, str) else ([rules] if isinstance(rules, TokenRule) else list(rules))
    if not items or not any(str(i).strip() for i in items):
        raise TokenRuleError("no token rules given; choose from " + str([a.value for a in TokenRule]))
    return tuple(dict.fromkeys(TokenRule.parse(r, allowed) for r in items))
