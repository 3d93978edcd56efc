"""Docstring examples without ``+SKIP`` run as doctests, one test per module.

Modules are found on disk (nothing is imported to list them); a module is imported only when its source holds
an example without ``doctest: +SKIP``, so modules whose examples all need a model are never loaded here.
Examples run in a temporary working directory with the module's globals, ``ELLIPSIS`` and
``NORMALIZE_WHITESPACE``.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

PACKAGES = ("cotscope", "cotscope.probes", "cotscope.analyses", "cotscope.figures")


def _has_runnable_example(source: str) -> bool:
    """Does the file hold an example without ``+SKIP``? (doctest's own parser; comment-only lines are no examples)"""
    try:
        examples = doctest.DocTestParser().get_examples(source)
    except ValueError:  # a malformed directive: import it so the test reports it
        return True
    return any(not e.options.get(doctest.SKIP, False) for e in examples)


def _modules() -> list[tuple[str, Path]]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        root = Path(importlib.util.find_spec(pkg).submodule_search_locations[0])
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "__main__" in parts or not all(p.isidentifier() for p in parts):
                continue
            if pkg == "cotscope" and parts and f"cotscope.{parts[0]}" in PACKAGES:
                continue  # (only if a subpackage folder sits inside cotscope/)
            out[".".join([pkg, *parts])] = f
    return sorted(out.items())


MODULES = _modules()
WITH_EXAMPLES = [(name, path) for name, path in MODULES if _has_runnable_example(path.read_text(encoding="utf-8"))]


def test_discovery_sees_the_layers():
    names = dict(MODULES)
    for expected in (
        "cotscope.errors",
        "cotscope.probes.positions",
        "cotscope.analyses.artifacts",
        "cotscope.analyses.prior.spectrum",
        "cotscope.figures.common",
    ):
        assert expected in names
    assert len(WITH_EXAMPLES) >= 20  # the walk found the modules with runnable examples


@pytest.mark.parametrize("name", [n for n, _ in WITH_EXAMPLES])
def test_module_doctests(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    ran = 0
    for t in tests:
        result = runner.run(t, out=report.append)
        ran += result.attempted  # skipped examples are not attempted
    assert runner.failures == 0, "".join(report)
    assert ran > 0, f"{name} has an example without +SKIP outside any docstring doctest finds"
