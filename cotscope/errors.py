"""One base class for every error cotscope raises on purpose.

Every project error type (``CollectionError``, ``StoreError``, ``ModelLoadError`` …) subclasses
:class:`CotscopeError`, so one ``except CotscopeError`` catches them all. ``CotscopeError`` is a
``ValueError``: bad input is the usual cause, and code written before the base existed keeps
working. Error types that used to be ``RuntimeError`` (model loading, shipped weights) or
``FileNotFoundError`` (missing figure inputs) keep that as a second base, so an old
``except RuntimeError`` still catches them.

This module imports nothing heavy; it is safe to import from any layer.

>>> from cotscope.errors import CotscopeError
>>> from cotscope.analyses.spectral import CutoffError
>>> issubclass(CutoffError, CotscopeError) and issubclass(CutoffError, ValueError)
True
>>> try:
...     raise CutoffError("cutoff must lie in [0, 1]")
... except CotscopeError as e:
...     print(type(e).__name__, "-", e)
CutoffError - cutoff must lie in [0, 1]
"""

from __future__ import annotations

__all__ = ["CotscopeError"]


class CotscopeError(ValueError):
    """Base class of every error cotscope raises on purpose; the message names the problem and the fix."""
