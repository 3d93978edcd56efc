"""Every error type cotscope defines derives from CotscopeError and stays ValueError-compatible."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cotscope
from cotscope.errors import CotscopeError

# Error types that were RuntimeError / FileNotFoundError before the common base; they keep that base.
KEEPS_SECOND_BASE = {
    "ModelLoadError": RuntimeError,
    "EmbeddedModelMissing": RuntimeError,
    "EmbeddedModelVersionError": RuntimeError,
    "ReferenceVLMWeightsError": RuntimeError,
    "MissingInputs": FileNotFoundError,
}


def _project_modules():
    for pkg_name in ("cotscope.probes", "cotscope.analyses", "cotscope.figures"):
        pkg = importlib.import_module(pkg_name)
        yield pkg
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            if info.name.endswith("__main__"):
                continue
            yield importlib.import_module(info.name)


def _project_exceptions() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in _project_modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_project_error_is_a_cotscope_error():
    found = _project_exceptions()
    assert len(found) >= 25, sorted(found)  # the walk really reached the modules that define them
    not_based = [name for name, cls in found.items() if not issubclass(cls, CotscopeError)]
    assert not_based == [], f"subclass cotscope.errors.CotscopeError: {not_based}"
    assert all(issubclass(cls, ValueError) for cls in found.values())


def test_old_second_bases_are_kept():
    found = {name.rsplit(".", 1)[1]: cls for name, cls in _project_exceptions().items()}
    for name, base in KEEPS_SECOND_BASE.items():
        assert issubclass(found[name], base), name
        with pytest.raises(base):
            raise found[name]("old except clauses still catch this")


def test_cotscope_error_is_caught_as_value_error():
    from cotscope.analyses.spectral import CutoffError, lowpass

    with pytest.raises(ValueError, match="cutoff"):
        lowpass([[1.0, 2.0], [3.0, 4.0]], cutoff=2.0)
    with pytest.raises(CotscopeError):
        raise CutoffError("x")


def test_importing_errors_stays_light():
    assert cotscope.errors.__name__ == "cotscope.errors"
    import subprocess
    import sys

    code = "import cotscope.errors, sys; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
