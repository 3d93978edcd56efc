"""Deprecated import paths, kept working for one release (0.2) with a ``DeprecationWarning``.

Before 0.2 the layers were installed as three top-level packages, ``probes``, ``analyses`` and
``figures``. They now live under one name (``cotscope.probes`` …). From a repository checkout (where
those folders sit on ``sys.path``) ``import probes.collect`` still works: the old name is an alias of
the new module, never a second copy, so classes and ``isinstance`` checks stay the same.
Modules that moved to the orchestration layer (``probes.pipeline`` → ``cotscope.stages`` …) keep a
forwarding module of their old name; see :func:`forward`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

OLD_TOP_LEVEL = ("probes", "analyses", "figures")
REMOVAL = "cotscope 0.3"


def _warn(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"`{old}` is deprecated and will be removed in {REMOVAL}; import `{new}` instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: Any = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system overwrote it with the alias's spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolve ``probes.x`` as ``cotscope.probes.x`` (same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        top = fullname.partition(".")[0]
        if top not in OLD_TOP_LEVEL or "." not in fullname:
            return None
        new = f"cotscope.{fullname}"
        if importlib.util.find_spec(new) is None:
            return None
        _warn(fullname, new, stacklevel=4)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new), is_package=False)


def alias_old_package(name: str) -> None:
    """Called by ``probes/__init__.py`` (etc.) when it is imported under its old top-level name."""
    _warn(name, f"cotscope.{name}")
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    sys.modules[name] = importlib.import_module(f"cotscope.{name}")


def forward(old: str, targets: dict[str, str]):
    """A module ``__getattr__`` for names that moved out of module ``old``.

    ``targets`` maps each moved name to its new module; reading it warns and returns the new object.
    """

    def __getattr__(attr: str) -> Any:
        if attr not in targets:
            raise AttributeError(f"module {old!r} has no attribute {attr!r}")
        _warn(f"{old}.{attr}", f"{targets[attr]}.{attr}")
        return getattr(importlib.import_module(targets[attr]), attr)

    return __getattr__
