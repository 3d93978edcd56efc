"""The compatibility table stays complete and current: every VLM adapter has a tiny model (so a row of checks),
the README block names every family and the installed transformers version, and the renderer marks failures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import transformers
from tiny_vlms import ALL_FAMILIES, BUILDERS, MODEL_CLASS

from cotscope.probes.models.vlm_adapters import VLM_ADAPTERS

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compat_table", ROOT / "scripts" / "compat_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_vlm_adapter_has_a_tiny_model_and_a_row():
    fams = {a.family for a in VLM_ADAPTERS}
    assert fams == set(ALL_FAMILIES) == set(BUILDERS) == set(MODEL_CLASS)
    for name in MODEL_CLASS.values():
        assert hasattr(transformers, name), name


def test_generated_table_covers_every_family_and_this_transformers():
    ct = _script()
    results = json.loads(ct.RESULTS.read_text())
    assert results["transformers"] == transformers.__version__, "re-run: " + ct.COMMAND
    assert list(results["cells"]) == list(ALL_FAMILIES), "re-run: " + ct.COMMAND
    assert results["checks"] == list(__import__("family_checks").CHECKS)
    text = ROOT.joinpath("README.md").read_text()
    block = text[text.index(ct.START) : text.index(ct.END)]
    census = json.loads(ct.CENSUS.read_text())
    assert block.strip() == (ct.START + "\n" + ct.render_block(results, census)).strip()
    for fam in ALL_FAMILIES:
        assert f"| {fam} |" in block
    assert f"transformers {transformers.__version__}" in block
    assert not any(v.startswith("FAIL") for row in results["cells"].values() for v in row.values())
    # the census saw the same transformers and agrees on what is supported
    assert census["transformers"] == transformers.__version__
    supported = {r["model_type"] for r in census["rows"] if r["verdict"] == "supported"}
    assert supported == {mt for a in VLM_ADAPTERS for mt in a.model_types} & {r["model_type"] for r in census["rows"]}


def test_render_marks_failures_and_splices_between_markers():
    ct = _script()
    res = {
        "transformers": "9.9",
        "torch": "1.0",
        "checks": ["a", "b"],
        "cells": {"fam": {"a": "1e-07", "b": "FAIL: AssertionError: x"}},
    }
    table = ct.render_table(res)
    assert "| fam | 1e-07 | **FAIL: AssertionError: x** |" in table
    doc = f"intro\n{ct.START}\nold\n{ct.END}\noutro\n"
    out = ct.splice_readme(doc, "NEW")
    assert out == f"intro\n{ct.START}\nNEW\n{ct.END}\noutro\n"
    try:
        ct.splice_readme("no markers", "x")
    except SystemExit as e:
        assert "compat:start" in str(e)
    else:
        raise AssertionError("missing markers were accepted")
