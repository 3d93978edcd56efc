"""Errors raised by :mod:`analyses.prior`; all derive from :class:`PriorError` (a ``ValueError``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotscope.errors import CotscopeError

if TYPE_CHECKING:
    from cotscope.analyses.prior.matching import MatchReport


class PriorError(CotscopeError):
    """Base class for reasoning-prior errors."""


class CheckpointError(PriorError):
    """A checkpoint directory is missing, empty, corrupt or uses an unsupported dtype."""


class PatternError(PriorError):
    """A module preset or regex matched no tensor."""


class ModuleMatchError(PriorError):
    """The two checkpoints do not pair up; ``.report`` holds the :class:`MatchReport`."""

    def __init__(self, message: str, report: MatchReport) -> None:
        super().__init__(f"{message}\n{report}")
        self.report = report


class PriorFitError(PriorError):
    """A prior artifact does not fit the model it is applied to."""
