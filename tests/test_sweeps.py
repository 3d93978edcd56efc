"""Sweep tables (append, torn tail, resume, refusal of a different configuration), statistics, the grid
runner on the real SmolLM2 (interrupted sweep resumes to the same table) and on a tiny VLM with images."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
from cotscope.analyses.sweeps import (
    SweepTable,
    SweepTableError,
    cell_means,
    mean_ci,
    meta_path,
    paired_gains,
    read_table,
    table_config,
)
from cotscope.probes.intervene import InjectionError
from cotscope.probes.stimuli import generate_problems
from cotscope.probes.sweep import (
    EvalPrompt,
    SweepConfig,
    direct_prompts,
    plan_batches,
    plan_cells,
    run_sweep,
)

SCHEMA = {"cell_id": "str", "prompt_id": "str", "x": "float", "ok": "bool", "n": "int", "text": "json"}
KEY = ("cell_id", "prompt_id")


def test_table_append_read_types(tmp_path):
    t = SweepTable(tmp_path / "s.csv", {"a": 1}, SCHEMA, KEY)
    t.append(
        [
            {"cell_id": "none", "prompt_id": "p0", "x": 1.5, "ok": True, "n": 3, "text": 'line1\nline2, "q"'},
            {"cell_id": "L1", "prompt_id": "p0", "x": None, "ok": False, "n": 0, "text": ""},
        ]
    )
    rows = read_table(tmp_path / "s.csv")
    assert rows[0] == {"cell_id": "none", "prompt_id": "p0", "x": 1.5, "ok": True, "n": 3, "text": 'line1\nline2, "q"'}
    assert math.isnan(rows[1]["x"]) and rows[1]["ok"] is False
    assert t.done_keys() == {("none", "p0"), ("L1", "p0")}
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 3  # one line per row, newlines escaped
    with pytest.raises(SweepTableError, match="not in the schema"):
        t.append([{"cell_id": "a", "prompt_id": "b", "zzz": 1}])


def test_torn_tail_is_cut_on_reopen(tmp_path):
    p = tmp_path / "s.csv"
    t = SweepTable(p, {"a": 1}, SCHEMA, KEY)
    t.append([{"cell_id": "c", "prompt_id": "p0", "x": 1.0, "ok": True, "n": 1, "text": "t"}])
    with open(p, "a") as fh:
        fh.write("c,p1,2.0,1,")  # an interrupted append
    assert len(read_table(p)) == 1  # readers ignore the torn line
    t2 = SweepTable(p, {"a": 1}, SCHEMA, KEY)
    assert p.read_text().endswith("\n") and t2.done_keys() == {("c", "p0")}
    t2.append([{"cell_id": "c", "prompt_id": "p1", "x": 2.0, "ok": True, "n": 1, "text": "t"}])
    assert [r["prompt_id"] for r in read_table(p)] == ["p0", "p1"]


def test_different_configuration_is_refused_with_a_new_name(tmp_path):
    p = tmp_path / "s.csv"
    SweepTable(p, {"lams": [0.1, 0.5], "model": "m"}, SCHEMA, KEY)
    with pytest.raises(SweepTableError, match=r"differs in: lams.*s-2\.csv"):
        SweepTable(p, {"lams": [0.1, 0.9], "model": "m"}, SCHEMA, KEY)
    t = SweepTable(p, {"lams": [0.1, 0.9], "model": "m"}, SCHEMA, KEY, overwrite=True)
    assert table_config(p)["lams"] == [0.1, 0.9] and t.done_keys() == set()
    (tmp_path / "foreign.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SweepTableError, match="meta.json"):
        SweepTable(tmp_path / "foreign.csv", {}, SCHEMA, KEY)
    assert meta_path(p).name == "s.csv.meta.json"


def test_mean_ci_and_paired_gains():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0], method="t")
    assert m == 2.5 and lo == pytest.approx(2.5 - 3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    b1, b2 = mean_ci([0, 1, 1, 0, 1], seed=1), mean_ci([0, 1, 1, 0, 1], seed=1)
    assert b1 == b2 and b1[1] <= 0.6 <= b1[2]  # bootstrap: seeded, brackets the mean
    assert math.isnan(mean_ci([5.0])[1])
    rows = []
    for i, p in enumerate("abcdef"):
        rows.append(
            {"cell_id": "none", "prompt_id": p, "seed": 0, "control": "none", "layer": None, "lam": None, "v": float(i)}
        )
        rows.append(
            {"cell_id": "L3", "prompt_id": p, "seed": 0, "control": "real", "layer": 3, "lam": 0.5, "v": i + 2.0}
        )
        rows.append(
            {
                "cell_id": "L5",
                "prompt_id": p,
                "seed": 0,
                "control": "real",
                "layer": 5,
                "lam": 0.5,
                "v": float(i) + (1 if i % 2 else -1),
            }
        )
    g = {r["cell_id"]: r for r in paired_gains(rows, "v", method="t")}
    assert g["L3"]["gain"] == 2.0 and g["L3"]["n"] == 6 and g["L3"]["baseline_mean"] == 2.5
    assert g["L5"]["gain"] == 0.0 and g["L5"]["ci_low"] < 0 < g["L5"]["ci_high"]
    means = {r["cell_id"]: r for r in cell_means(rows, "v")}
    assert means["none"]["mean"] == 2.5 and means["L3"]["layer"] == 3
    with pytest.raises(SweepTableError, match="baseline"):
        paired_gains([r for r in rows if r["cell_id"] != "none"], "v")


def test_plan_cells_and_batches_validate_before_running():
    cells = plan_cells(
        SweepConfig(layers=(2, (3, 5)), lams=(0.1, 0.5), controls=("none", "random"), control_lams=(0.5,)), n_layers=30
    )
    ids = [c.cell_id for c in cells]
    assert ids == [
        "real|L2|lam0.1",
        "real|L2|lam0.5",
        "real|L3+5|lam0.1",
        "real|L3+5|lam0.5",
        "random|L2|lam0.5",
        "random|L3+5|lam0.5",
        "none",
    ]
    with pytest.raises(InjectionError, match="finite"):
        plan_cells(SweepConfig(lams=(0.5, float("nan"))), 30)
    with pytest.raises(InjectionError, match="out of range"):
        plan_cells(SweepConfig(layers=(31,)), 30)
    with pytest.raises(InjectionError, match="repeats"):
        plan_cells(SweepConfig(layers=(3, -27)), 30)
    with pytest.raises(InjectionError, match="unknown controls"):
        plan_cells(SweepConfig(controls=("shuffled",)), 30)
    b = plan_batches(5, 7, 16)  # 2 prompts per batch, prompt-major
    assert [len(x) for x in b] == [14, 14, 7] and b[0][:2] == [(0, 0), (0, 1)]
    b = plan_batches(2, 40, 16)  # a prompt's cells split into near-equal chunks
    assert [len(x) for x in b] == [13, 14, 13, 13, 14, 13]
    assert sorted(x for bb in b for x in bb) == [(p, c) for p in range(2) for c in range(40)]


# ----------------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def direction():
    rng = np.random.default_rng(0)
    vecs = {l: (rng.standard_normal(576) * 20).astype(np.float32) for l in (6, 20)}
    return DirectionSet(vecs, DirectionMeta(model_id="test-direction", n_layers=30, method="random"))


CFG = SweepConfig(
    layers=(6, 20),
    lams=(0.9,),
    controls=("none", "random"),
    control_layers=(20,),
    budget=3,
    score=True,
    answer_template=" {answer}",
    rows_per_batch=4,
    cutoff=0.25,
)


def test_interrupted_sweep_resumes_to_the_same_table(smollm2, direction, tmp_path):
    prompts = direct_prompts(generate_problems(2, seed=3, difficulties=("easy",)))
    full = run_sweep(smollm2, direction, prompts, tmp_path / "full.csv", CFG, progress=False)
    assert full.complete and full.rows == 8 and full.batches == 2
    assert len(full.to_pandas()) == 8 and set(full.to_pandas()["prompt_id"]) == {p.id for p in prompts}
    part = run_sweep(smollm2, direction, prompts, tmp_path / "part.csv", CFG, progress=False, max_batches=1)
    assert not part.complete and part.rows == 4
    rest = run_sweep(smollm2, direction, prompts, tmp_path / "part.csv", CFG, progress=False)
    assert rest.complete and rest.batches_run == 1  # only the unfinished batch ran
    again = run_sweep(smollm2, direction, prompts, tmp_path / "part.csv", CFG, progress=False)
    assert again.batches_run == 0  # nothing is recomputed
    assert (tmp_path / "part.csv").read_text() == (tmp_path / "full.csv").read_text()
    rows = read_table(tmp_path / "full.csv")
    assert {r["cell_id"] for r in rows} == {"real|L6|lam0.9", "real|L20|lam0.9", "random|L20|lam0.9", "none"}
    for r in rows:
        assert r["seed"] == 0 and r["budget"] == 3 and r["prompt_id"] in {p.id for p in prompts}
        assert r["n_tokens"] <= 3 and r["gold_logprob"] <= 0 and r["positions"] == "first"
    random_row = next(r for r in rows if r["control"] == "random")
    real_row = next(r for r in rows if r["cell_id"] == "real|L20|lam0.9")
    assert random_row["vec_norm"] == pytest.approx(real_row["vec_norm"], rel=1e-4)  # equal-norm control


def test_sweep_refuses_other_configuration_before_generating(smollm2, direction, tmp_path, monkeypatch):
    prompts = direct_prompts(generate_problems(1, seed=3, difficulties=("easy",)))
    p = tmp_path / "s.csv"
    SweepTable(p, {"something": "else"}, {"cell_id": "str", "prompt_id": "str"}, KEY)

    def tripwire(*a, **k):
        raise AssertionError("generation started")

    monkeypatch.setattr(smollm2.hf, "generate", tripwire)
    monkeypatch.setattr(smollm2.hf, "forward", tripwire)
    with pytest.raises(SweepTableError, match="different configuration"):
        run_sweep(smollm2, direction, prompts, p, CFG, progress=False)
    with pytest.raises(InjectionError, match="finite"):
        run_sweep(smollm2, direction, prompts, tmp_path / "n.csv", SweepConfig(lams=(float("inf"),)), progress=False)
    bad = DirectionSet({6: np.ones(576, np.float32)}, DirectionMeta(n_layers=30))
    with pytest.raises(InjectionError, match="all zeros"):  # the high-pass part of a constant vector is zero
        run_sweep(
            smollm2, bad, prompts, tmp_path / "z.csv", SweepConfig(layers=(6,), controls=("highpass",)), progress=False
        )
    narrow = DirectionSet({6: np.ones(64, np.float32)}, DirectionMeta(n_layers=30))
    from cotscope.analyses.artifacts import DirectionFileError

    with pytest.raises(DirectionFileError, match="hidden-size mismatch"):
        run_sweep(
            smollm2, narrow, prompts, tmp_path / "w.csv", SweepConfig(layers=(6,), resample=False), progress=False
        )
    assert not (tmp_path / "n.csv").exists() and not (tmp_path / "w.csv").exists()


def test_vlm_sweep_with_images():
    from tiny_vlms import sample_image, tiny_vlm

    from cotscope.probes.models.loading import wrap_model

    vlm = tiny_vlm("llava")
    lm = wrap_model(vlm.model, processor=vlm.processor, model_id="tiny-llava")
    ds = DirectionSet(
        {20: np.random.default_rng(1).standard_normal(576).astype(np.float32)},
        DirectionMeta(model_id="wide-source", n_layers=30),
    )  # resampled 576 → 64, one layer for all
    prompts = [EvalPrompt(f"img{i}", "What number is shown?", i, sample_image(seed=i)) for i in range(2)]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        # the target's own direction (its width, its layers) gives the paper's own_lowpass ablation
        own = DirectionSet(
            {l: np.random.default_rng(l).standard_normal(64).astype(np.float32) for l in (1, 3)},
            DirectionMeta(model_id="tiny-llava", n_layers=4),
        )
        cfg = SweepConfig(
            layers=(1, 3), lams=(0.5,), controls=("none", "highpass", "own_lowpass"), budget=2, rows_per_batch=5
        )
        res = run_sweep(lm, ds, prompts, Path(d) / "v.csv", cfg, own=own, progress=False)
        rows = read_table(Path(d) / "v.csv")
    assert res.complete and len(rows) == 2 * 7
    assert {r["layer"] for r in rows if r["control"] == "own_lowpass"} == {1, 3}
    assert {r["src_layers"] for r in rows if r["control"] != "none"} == {"20"}
    assert res.settings["source_hidden_size"] == 576 and res.settings["target_hidden_size"] == 64


def test_four_figures_draw_from_a_stored_table(tmp_path):
    from cotscope.probes.sweep import KEY as SKEY
    from cotscope.probes.sweep import SCHEMA as SSCHEMA
    from cotscope.stages.intervention import render_figures

    cfg = {"direction": {"model_id": "src/SmolLM2 (x)"}, "target": {"model_id": "tgt-model"}}
    t = SweepTable(tmp_path / "sweep_llm.csv", cfg, SSCHEMA, SKEY)
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        rows.append(
            {
                "cell_id": "none",
                "control": "none",
                "prompt_id": f"p{p}",
                "seed": 0,
                "gold_logprob": -3.0,
                "correct": p == 0,
                "n_tokens": 8,
            }
        )
        for c in ("real", "random", "highpass"):
            for l in (4, 8):
                for lam in (0.3, 0.9) if c == "real" else (0.9,):
                    rows.append(
                        {
                            "cell_id": f"{c}|L{l}|lam{lam}",
                            "control": c,
                            "layer": l,
                            "lam": lam,
                            "prompt_id": f"p{p}",
                            "seed": 0,
                            "gold_logprob": -3 + rng.normal() * 0.2,
                            "correct": bool(rng.random() < 0.3),
                            "n_tokens": int(rng.integers(4, 12)),
                        }
                    )
    t.append(rows)
    paths = render_figures(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"{n}.{e}"
        for n in ("injection_layers", "injection_strength", "length_vs_accuracy", "injection_controls")
        for e in ("png", "html")
    )
    assert all(p.stat().st_size > 1000 for p in paths)
