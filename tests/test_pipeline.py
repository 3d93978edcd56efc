import json

import numpy as np

from cotscope.analyses.artifacts import DirectionSet
from cotscope.stages.llm import llm_summary, run_llm_stage


def test_llm_stage_end_to_end_and_reuse(smollm2, tmp_path):
    kw = dict(n_problems=12, layers=[2, 10, 20], batch_size=8, n_perm=20, progress=False)
    res = run_llm_stage(tmp_path, smollm2, **kw)
    assert set(res["layers"]) == {2, 10, 20}
    for l, r in res["layers"].items():
        assert 0.0 <= r["probe"]["test_accuracy"] <= 1.0 and -1.0 <= r["lat_vs_mean_diff_cosine"] <= 1.0
        assert 0.0 <= r["lowpass_energy_fraction"] <= 1.0
    ds = DirectionSet.load(res["directions"]["mean_diff"], expect_hidden_size=576, expect_n_layers=30)
    assert ds.layers == [2, 10, 20] and ds.meta.pairing == "cue" and ds.meta.token_rule == "last_prompt"
    shard = next((tmp_path / "stores" / "llm").glob("shard-*.safetensors"))
    mtime = shard.stat().st_mtime_ns
    again = run_llm_stage(tmp_path, smollm2, **kw)
    assert shard.stat().st_mtime_ns == mtime  # activations reused, not recomputed
    assert np.array_equal(
        DirectionSet.load(again["directions"]["lat"])[10], DirectionSet.load(res["directions"]["lat"])[10]
    )
    s = llm_summary(json.loads((tmp_path / "analysis" / "llm.json").read_text()))
    assert s["best_layer"] in (2, 10, 20)
    from cotscope.figures.__main__ import render_all

    written = render_all(tmp_path, verbose=False)
    pngs = [p for p in written if p.endswith(".png")]
    assert {"probe_accuracy.png", "pca_scatter.png", "spectrum.png"} <= {p.rsplit("/", 1)[-1] for p in pngs}


def test_answer_pairing_run_lives_beside_the_cue_run(smollm2, tmp_path):
    kw = dict(n_problems=8, layers=[5, 15], batch_size=8, n_perm=10, progress=False)
    cue = run_llm_stage(tmp_path, smollm2, **kw)
    ans = run_llm_stage(tmp_path, smollm2, pairing="answer", position="answer_mean", name="llm_answer", **kw)
    assert (tmp_path / "analysis" / "llm.json").is_file() and (tmp_path / "analysis" / "llm_answer.json").is_file()
    a = DirectionSet.load(ans["directions"]["mean_diff"])
    assert a.meta.pairing == "answer" and a.meta.token_rule == "answer_mean"
    assert DirectionSet.load(cue["directions"]["mean_diff"]).meta.pairing == "cue"  # not overwritten
    assert not np.allclose(a[15], DirectionSet.load(cue["directions"]["mean_diff"])[15])
