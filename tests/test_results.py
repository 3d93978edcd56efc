"""Typed results: attribute access, to_dict/to_pandas/_repr_html_, and the deprecated dict access."""

import json
import sys
import warnings

import numpy as np
import pytest

from cotscope.analyses.artifacts import DirectionSet
from cotscope.analyses.results import AnalysisResult, ResultError, SweepResult


@pytest.fixture(scope="module")
def analysis(smollm2, tmp_path_factory):
    from cotscope.analyses.layer_sweep import analyse_store
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    store = collect_pairs(
        smollm2,
        make_pairs(generate_problems(8, seed=5), "cue"),
        tmp_path_factory.mktemp("res") / "store",
        layers=[3, 10, 20],
        positions=("last_prompt",),
        batch_size=16,
        progress=False,
    )
    return analyse_store(store, "last_prompt", n_perm=10, progress=False)


def test_analysis_result_attributes_and_directions(analysis, smollm2):
    res = analysis
    assert isinstance(res, AnalysisResult)
    assert res.layer_order == [3, 10, 20] and res.best_layer in res.layer_order and res.n_pairs == 8
    md = res.directions["mean_diff"]
    assert isinstance(md, DirectionSet) and md.layers == [3, 10, 20]
    assert md.meta.model_id == smollm2.model_id and md.meta.token_rule == "last_prompt" and md.meta.n_pairs == 8
    assert np.array_equal(md[10], res.raw_directions["mean_diff"][10].astype(np.float32))
    assert res.directions["lat"].meta.normalisation == "unit"
    text = repr(res)
    assert "\n" not in text and text.startswith("AnalysisResult(position='last_prompt'") and "<dict of 3>" in text


def test_analysis_result_dict_forms(analysis, tmp_path):
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.analyses.layer_sweep import public

    res = analysis
    d = res.to_dict()
    assert set(d) == {"position", "layers", "layer_cosine", "layer_order", "best_layer", "n_pairs"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library's own helpers do not warn
        assert public(res) == d
    json.dumps(d)  # JSON-ready
    write_json_atomic(tmp_path / "a.json", res)  # typed results are written as their dict
    back = json.loads((tmp_path / "a.json").read_text())
    assert back["best_layer"] == res.best_layer and back["layers"]["10"] == json.loads(json.dumps(d))["layers"]["10"]


def test_deprecated_dict_access_still_works(analysis):
    res = analysis
    with pytest.warns(DeprecationWarning, match=r"res\.directions\[method\]"):
        old = res["_directions"]
    assert old is res.raw_directions
    with pytest.warns(DeprecationWarning, match=r"use res\.best_layer"):
        assert res["best_layer"] == res.best_layer
    with pytest.warns(DeprecationWarning):
        assert "layers" in res and "nope" not in res
    with pytest.warns(DeprecationWarning):
        assert set(res.keys()) == {*res.to_dict(), "_directions"}
    with pytest.warns(DeprecationWarning):
        assert res.get("nope", 5) == 5
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        res["nope"]


def test_to_pandas_and_html(analysis, monkeypatch):
    res = analysis
    df = res.to_pandas()
    assert list(df["layer"]) == [3, 10, 20]
    assert df.set_index("layer").loc[10, "probe.test_accuracy"] == res.layers[10]["probe"]["test_accuracy"]
    assert "lowpass_energy_null.p_value" in df.columns
    html = res._repr_html_()
    assert html.count("<table>") == 2 and "AnalysisResult" in html and "probe.test_accuracy" in html
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ResultError, match="needs pandas.*pip install pandas"):
        res.to_pandas()
    assert res._repr_html_() == html  # the HTML table does not need pandas


def test_sweep_result_reads_its_table(tmp_path):
    from cotscope.analyses.sweeps import SweepTable

    tab = SweepTable(
        tmp_path / "s.csv",
        {"x": 1},
        {"cell_id": "str", "prompt_id": "str", "correct": "bool"},
        ("cell_id", "prompt_id"),
    )
    tab.append(
        [
            {"cell_id": "none", "prompt_id": "p0", "correct": True},
            {"cell_id": "real|L6|lam0.9", "prompt_id": "p0", "correct": False},
        ]
    )
    r = SweepResult(
        table=str(tab.path),
        rows=2,
        rows_expected=2,
        complete=True,
        batches=1,
        batches_run=1,
        seconds=0.1,
        cells=["none", "real|L6|lam0.9"],
    )
    df = r.to_pandas()
    assert list(df["cell_id"]) == ["none", "real|L6|lam0.9"] and list(df["correct"]) == [True, False]
    assert "<td>&#x27;real|L6|lam0.9&#x27;</td>" in r._repr_html_()
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        r["note"] = "x"  # SweepResult has no free-form keys
    with pytest.warns(DeprecationWarning):
        r["rows"] = 3  # old code that set a known key still works
    assert r.rows == 3


def test_attention_result_keeps_keys_added_later():
    from cotscope.analyses.results import AttentionResult

    band = {"mean": [1.0, 2.0], "lo": [0.5, 1.5], "hi": [1.5, 2.5], "n": [3, 3]}
    r = AttentionResult(
        conditions=["cot"],
        layers=[0, 1],
        choice={},
        k=None,
        band="mean ± s.e.m.",
        max_steps=None,
        aggregate={"cot": {"step": {"R": band}}},
    )
    with pytest.warns(DeprecationWarning):
        r["summary"] = {"n": 1}  # the demo adds keys to the analysis before writing it
    assert r.to_dict()["summary"] == {"n": 1} and r.extra == {"summary": {"n": 1}}
    df = r.to_pandas()
    assert df[["step", "mean", "n"]].values.tolist() == [[0, 1.0, 3], [1, 2.0, 3]]


def test_loaded_model_repr_is_one_line(smollm2):
    text = repr(smollm2)
    assert text == f"LoadedModel(llama: {smollm2.model_id!r}, 30 layers, hidden 576, cpu, float32)"
