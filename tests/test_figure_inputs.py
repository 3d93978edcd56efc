"""Figures find their stored inputs wherever a run put them, and say which figures they skipped and why.

Inputs are small files in the documented formats (a per-layer analysis JSON as ``cotscope analyse`` writes it,
a sweep-table sidecar); the figures themselves are drawn by the real figure scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotscope.figures.__main__ import render_all
from cotscope.figures.inputs import folder_key, layer_analyses, sweep_tables


def _analysis(path: Path, layers=(0, 3, 6), position="last_prompt") -> Path:
    """A per-layer analysis in the format of analyses.layer_sweep (the keys the figures read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = {
        str(l): {
            "probe": {"test_accuracy": 0.5 + 0.05 * i, "train_accuracy": 1.0},
            "lat_vs_mean_diff_cosine": 0.9 - 0.1 * i,
            "cutoff_bins": 3,
        }
        for i, l in enumerate(layers)
    }
    path.write_text(json.dumps({"position": position, "best_layer": layers[-1], "n_pairs": 8, "layers": rows}))
    return path


def test_layer_analyses_in_every_layout(tmp_path):
    _analysis(tmp_path / "analysis" / "llm.json")  # stages / demo
    _analysis(tmp_path / "analysis" / "llm_answer.json")  # the demo's second analysis
    _analysis(tmp_path / "mine" / "analysis.json")  # cotscope analyse --out mine
    _analysis(tmp_path / "sub" / "analysis" / "vlm.json")  # cs.analyse(store, out="RUN/sub")
    (tmp_path / "analysis" / "vlm.json").write_text(json.dumps({"vlm_model": {}, "timings_s": {}}))  # not one
    (tmp_path / "analysis" / "broken.json").write_text("{not json")
    found = {a.name: a.path.relative_to(tmp_path).as_posix() for a in layer_analyses(tmp_path)}
    assert found == {
        "llm": "analysis/llm.json",
        "llm_answer": "analysis/llm_answer.json",
        "mine": "mine/analysis.json",
        "sub_vlm": "sub/analysis/vlm.json",
    }
    assert folder_key(tmp_path, tmp_path / "x.csv") == "run" and folder_key(tmp_path, tmp_path / "a b" / "x") == "a_b"


def test_render_all_draws_any_layout_and_lists_skips(tmp_path):
    _analysis(tmp_path / "analysis" / "llm.json")
    _analysis(tmp_path / "mine" / "analysis.json", layers=(1, 2, 4, 8))
    res = render_all(tmp_path, verbose=False)
    names = sorted(Path(p).name for p in res)
    assert names == sorted(f"probe_accuracy{s}.{e}" for s in ("", "_mine") for e in ("png", "pdf", "html"))
    skipped = {s.figure: s.reason for s in res.skipped}
    # no direction file or store beside the analyses: those figures say so, per analysis
    assert skipped["spectrum"].startswith("no per-layer analysis has its mean-difference direction file")
    assert "spectrum_mine" in skipped and "pca_scatter_mine" in skipped
    assert skipped["injection_layers"].startswith("no stored file matches")
    meta = json.loads((tmp_path / "figures" / "probe_accuracy_mine.meta.json").read_text())
    assert meta["sources"] == ["mine/analysis.json"] and meta["section"] == "llm" and meta["figure"] == "probe_accuracy"
    plot = json.loads((tmp_path / "figures" / "probe_accuracy_mine.plotly.json").read_text())
    assert list(plot["data"][0]["x"]) == [1, 2, 4, 8]


def test_a_broken_input_is_reported_not_raised(tmp_path):
    p = _analysis(tmp_path / "analysis" / "llm.json")
    d = json.loads(p.read_text())
    del d["layers"]["0"]["lat_vs_mean_diff_cosine"]  # recognised as an analysis, but incomplete
    p.write_text(json.dumps(d))
    res = render_all(tmp_path, verbose=False)
    assert dict((s.figure, s.reason) for s in res.skipped)["probe_accuracy"].startswith("failed: KeyError")
    with pytest.raises(KeyError):
        render_all(tmp_path, verbose=False, strict=True)


def test_sweep_tables_recognised_by_their_sidecar(tmp_path):
    from cotscope.analyses.sweeps import SweepTable
    from cotscope.probes.sweep import KEY, SCHEMA

    for rel in ("intervention/sweep_llm.csv", "sweeps/a.csv", "b.csv"):
        SweepTable(tmp_path / rel, {"direction": {"model_id": "m"}, "target": {"model_id": "t"}}, SCHEMA, KEY)
    SweepTable(tmp_path / "other" / "eval.csv", {}, {"item": "str", "score": "float"}, ("item",))  # not a sweep
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    got = {k: [p.relative_to(tmp_path).as_posix() for p in v] for k, v in sweep_tables(tmp_path).items()}
    assert got == {"intervention": ["intervention/sweep_llm.csv"], "run": ["b.csv"], "sweeps": ["sweeps/a.csv"]}
