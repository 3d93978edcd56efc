"""The demo stage bodies added with the recipes work: released reading and the benchmark fixtures stage."""

from __future__ import annotations

import pytest


def test_released_reading_stage(smollm2, tmp_path):
    from cotscope.stages.released import released_reading_stage

    out = released_reading_stage(tmp_path, smollm2, limit=6, n_perm=20, n_perm_dispersion=20)
    assert out["pairing"] == "answer" and out["position"] == "eot" and out["eot_token"] == ["<|im_end|>"]
    assert out["n_pairs"] == 6 and len(out["cos_eot_vs_turn_end"]) == 30
    # both dispersion references are in the summary, and the isotropic one is (2c - 1/2)/d of the trace
    l = out["best_layer"]
    assert out["dispersion_lowpass_isotropic"][l] == pytest.approx(
        out["dispersion"][l] * (2 * 29 - 0.5) / 576, abs=0.02
    )
    assert l in out["dispersion_lowpass_null_mean"] and "report" in out and "cos_released_vs_cue" not in out
    assert (tmp_path / "directions" / "llm_released_mean_diff.safetensors").is_file()


def test_bench_fixture_stage(tmp_path):
    from cotscope.probes.models.loading import load_model
    from cotscope.stages.bench import bench_fixture_stage

    vlm = load_model("embedded:smolvlm")
    out = bench_fixture_stage(tmp_path, vlm, benches=("scienceqa",), max_new_tokens=4)
    s = out["scienceqa"]["base"]
    assert s["n"] == 4 and s["ci_low"] <= s["accuracy"] <= s["ci_high"] and "inject" not in out["scienceqa"]
    assert (tmp_path / "bench" / "fixtures" / "scienceqa" / "test.parquet").is_file()
