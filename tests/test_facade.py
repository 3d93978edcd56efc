"""``import cotscope as cs``: lazy (no torch on import), every advertised name resolves, old paths warn."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

import cotscope as cs


def test_import_loads_no_torch():
    code = "import sys, cotscope as cs; cs.pairs(2); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("name", sorted(cs._EXPORTS))
def test_every_public_name_resolves(name):
    assert getattr(cs, name) is not None
    assert name in dir(cs)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'colect'"):
        cs.colect


def test_errors_share_one_base_that_stays_a_value_error():
    assert issubclass(cs.CotscopeError, ValueError)
    with pytest.raises(cs.CotscopeError, match="number of problems"):
        cs.pairs(True)


def test_moved_names_forward_with_a_deprecation_warning():
    from cotscope.probes import sweep

    with pytest.warns(DeprecationWarning, match="cotscope.stages.intervention.run_demo_sweep"):
        fn = sweep.run_demo_sweep
    from cotscope.stages.intervention import run_demo_sweep

    assert fn is run_demo_sweep


def test_old_top_level_names_alias_the_new_modules(tmp_path):
    """From a checkout, ``import probes.collect`` is the same module object as ``cotscope.probes.collect``."""
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import probes.collect\nexcept DeprecationWarning as e:\n    print('warned', e)\n"
        "warnings.simplefilter('ignore')\nimport probes.collect as old, cotscope.probes.collect as new\n"
        "print(old is new)"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert "warned `probes` is deprecated" in out and out.strip().endswith("True")


def test_pairs_from_a_count_a_file_and_a_list(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"question": "Tom has 3 apples and buys 4 more. How many?", "answer": 7}\n')
    assert len(cs.pairs(3)) == 3
    assert cs.pairs(f)[0].problem.answer == 7
    probs = cs.problems(2, seed=1)
    assert [p.problem for p in cs.pairs(probs, pairing="answer")] == probs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cs.pairs(1)
