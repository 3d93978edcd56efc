"""The layers point one way: probes/ and analyses/ never import figures/ or the orchestration above them;
figures/ never imports probes/ (it draws stored results, it does not run models)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATION = (
    "cotscope.stages",
    "cotscope.demo",
    "cotscope.cli",
    "cotscope.report",
    "cotscope.api",
    "cotscope.runlog",
    "cotscope.commands",
    "cotscope.recipes",
    "cotscope.workers",
)
FORBIDDEN = {
    "probes": ("cotscope.figures", "figures") + ORCHESTRATION,
    "analyses": ("cotscope.figures", "figures", "cotscope.probes", "probes") + ORCHESTRATION,
    "figures": ("cotscope.probes", "probes") + ORCHESTRATION,
}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports (``import x``, ``from x import y``, and importlib.import_module("x…"))."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
        ):
            arg = node.args[0]
            text = (
                arg.value
                if isinstance(arg, ast.Constant)
                else "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
            )
            out.append((node.lineno, str(text)))
    return out


def _deprecated_shim(path: Path) -> bool:
    """The one-release forwarding modules of moved names (see cotscope._compat) may name their new homes."""
    return path.read_text().lstrip().startswith('"""Deprecated: moved to')


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_never_imports_upwards(layer):
    bad = []
    for f in sorted((ROOT / layer).rglob("*.py")):
        if _deprecated_shim(f):
            continue
        for line, mod in imports(f):
            if any(mod == b or mod.startswith(b + ".") for b in FORBIDDEN[layer]):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "layering violated:\n" + "\n".join(bad)


def test_the_checker_sees_violations(tmp_path):
    """The check can fail: a planted upward import is found in all three spellings."""
    f = tmp_path / "m.py"
    f.write_text(
        "import cotscope.figures.common\nfrom cotscope.stages import Stage\n"
        "import importlib\nimportlib.import_module(f'cotscope.figures.{1}')\n"
    )
    mods = [m for _, m in imports(f)]
    assert "cotscope.figures.common" in mods and "cotscope.stages" in mods and "cotscope.figures." in mods
