"""The demo stage bodies added with the recipes work (released reading, benchmark fixtures, merging), and their
wiring into ``make demo``: demo_stages() and recipes/demo.toml list the same stages, and each new stage's summary
fragment and report paragraph carry what issue 15 asks for."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parent.parent
NEW_STAGES = ("llm_released", "merging", "bench")


def test_demo_stages_and_demo_recipe_list_the_same_stages():
    from cotscope.demo import demo_stages
    from cotscope.recipes import compile_recipe, load_recipe

    want = [s.name for s in demo_stages()]
    toml = [st["name"] for st in load_recipe(ROOT / "recipes" / "demo.toml").stages]
    assert toml == want == [s.name for s in compile_recipe(load_recipe(ROOT / "recipes" / "demo.toml"))]
    assert len(set(want)) == len(want) and set(NEW_STAGES) <= set(want)
    pos = {n: i for i, n in enumerate(want)}
    # the released reading follows the cue reading (it compares with its directions); merging reuses the prior
    # and the intervention sweep of the same run, so it comes after both
    assert pos["llm"] < pos["llm_released"] and pos["prior"] < pos["merging"] and pos["intervention"] < pos["merging"]


def test_released_reading_stage_beside_the_cue_reading(smollm2, tmp_path):
    from cotscope.report import render_markdown
    from cotscope.stages.llm import llm_summary, run_llm_stage
    from cotscope.stages.released import released_reading_stage

    cue = llm_summary(run_llm_stage(tmp_path, smollm2, n_problems=8, n_perm=10, batch_size=8, progress=False))
    out = released_reading_stage(tmp_path, smollm2, {"llm": cue}, limit=6, n_perm=20, n_perm_dispersion=20)
    assert out["pairing"] == "answer" and out["position"] == "eot" and out["eot_token"] == ["<|im_end|>"]
    assert out["n_pairs"] == 6 and len(out["cos_eot_vs_turn_end"]) == 30
    # both dispersion references are in the summary, and the isotropic one is (2c - 1/2)/d of the trace
    l = out["best_layer"]
    assert out["dispersion_lowpass_isotropic"][l] == pytest.approx(
        out["dispersion"][l] * (2 * 29 - 0.5) / 576, abs=0.02
    )
    assert l in out["dispersion_lowpass_null_mean"]
    assert (tmp_path / "directions" / "llm_released_mean_diff.safetensors").is_file()
    # beside the cue reading: per-layer cosine between the two directions and one headline row per reading
    assert len(out["cos_released_vs_cue"]) == 30 and all(-1 <= c <= 1 for c in out["cos_released_vs_cue"].values())
    r, c = out["readings"]["released"], out["readings"]["cue"]
    assert (r["pairing"], r["token_rule"], r["n_pairs"]) == ("answer", "eot", 6)
    assert (c["pairing"], c["token_rule"], c["n_pairs"]) == ("cue", "last_prompt", 8)
    for h, block in ((r, out), (c, cue)):
        b = block["best_layer"]
        assert h["dispersion_lowpass_isotropic_best"] == block["dispersion_lowpass_isotropic"][b]
        assert h["dispersion_lowpass_null_mean_best"] == block["dispersion_lowpass_null_mean"][b]
        assert h["layers_beating_null"] == sum(p < 0.05 for p in block["lowpass_energy_p_value"].values())
    assert (
        "| released | `answer` | `eot` | 6 |" in out["report"]
        and "| cue | `cue` | `last_prompt` | 8 |" in out["report"]
    )
    # report.md: the released paragraph directly after the cue section, both with the two dispersion references
    md = render_markdown({"title": "t", "run_dir": str(tmp_path), "llm": cue, "llm_released": out})
    i_cue, i_rel = md.index("## CoT vs direct in the LLM\n"), md.index(f"## {out['title']}")
    assert i_cue < i_rel and "isotropic low-pass expectation" in md[i_cue:i_rel]
    assert "permutation null" in md[i_cue:i_rel] and "isotropic expectation" in md[i_rel:]


def test_bench_fixture_stage(tmp_path):
    from cotscope.probes.models.loading import load_model
    from cotscope.stages.bench import bench_fixture_stage

    vlm = load_model("embedded:smolvlm")
    out = bench_fixture_stage(tmp_path, vlm, max_new_tokens=4)  # the demo's benches: mathvista and scienceqa
    for bench, n in (("mathvista", 6), ("scienceqa", 4)):
        s = out[bench]["base"]
        assert s["n"] == n and s["ci_low"] <= s["accuracy"] <= s["ci_high"] and "inject" not in out[bench]
        assert {"mean_tokens", "no_answer", "by"} <= set(s) and f"**{bench}**" in out["report"]
    assert (tmp_path / "bench" / "fixtures" / "scienceqa" / "test.parquet").is_file()
    assert {"title", "report", "files", "max_new_tokens"} <= set(out)


@pytest.mark.slow
def test_merging_stage_table_has_every_family(tmp_path):
    """One small run of the demo's merging stage: a merge of each kind, two DRIFT rules, paired gains."""
    from cotscope.probes.models.loading import load_model
    from cotscope.stages.merging import DEFAULT_MERGES, merging_stage

    vlm = load_model("embedded:smolvlm")
    before = {n: p.detach().clone() for n, p in vlm.hf.named_parameters()}
    out = merging_stage(
        tmp_path, vlm=vlm, n_prompts=2, budget=4, drift_rules=(None, "adaptive"), drift_steps=1, drift_batch=1
    )
    import torch

    assert all(torch.equal(before[n], p) for n, p in vlm.hf.named_parameters())  # every setting undone
    want = {f"merge:{m}" for m, _ in DEFAULT_MERGES} | {"drift:none", "drift:adaptive"}
    assert set(out["settings"]) == want and out["n_items"] == 2 and out["budget"] == 4
    for cell, s in out["settings"].items():
        assert {"gain_gold_logprob", "gain_gold_logprob_ci", "gain_correct", "accuracy", "control"} <= set(s)
        assert s["control"] == cell.split(":")[0]
        assert ("change_norm" in s) == cell.startswith("merge:") and ("loss_first" in s) == cell.startswith("drift:")
    assert all(out["settings"][f"merge:{m}"]["change_norm"] > 0 for m, _ in DEFAULT_MERGES)
    assert out["injection_source"] is None  # no intervention sweep in this run directory
    assert "Toy scale" in out["report"] and out["report"].count("\n| merge:") == 4
    assert (tmp_path / "merging" / "merge_eval.csv").is_file() and (tmp_path / "merging" / "merging.json").is_file()


def test_attention_report_shows_both_definitions():
    from cotscope.stages.attention import report_markdown, summarise

    def agg(r, f, rq, fn):
        step = {k: {"mean": v, "n": [2] * len(v)} for k, v in (("R", r), ("F", f), ("R_question", rq), ("F_norm", fn))}
        step["image_share"] = {"mean": [0.1] * len(r), "n": [2] * len(r)}
        slope = {"R": -0.1, "F": 0.2, "R_question": 0.05, "F_norm": -0.3}
        token = {"R": {"mean": r}, "F": {"mean": f}}
        return {"n_traces": 2, "n_steps": [2, 2], "n_tokens": [5, 7], "step": step, "token": token,
                "slope_step": slope, "slope_token": slope}  # fmt: skip

    s = summarise({"aggregate": {"cot": agg([0.5, 0.4], [1.0, 1.2], [2.0, 2.5], [3.0, 2.0]),
                                 "direct": agg([0.6], [1.1], [1.5], [2.5])}})  # fmt: skip
    assert s["cot"]["R_question_per_step"] == [2.0, 2.5] and s["cot"]["F_norm_per_step"] == [3.0, 2.0]
    assert (
        s["ivt_lr"]["cot_R_falls"] and not s["ivt_lr"]["cot_R_question_falls"] and not s["ivt_lr"]["cot_F_norm_rises"]
    )
    md = report_markdown({**s, "n_items": 2, "layers": [0], "heads": [0], "entropy_over": "all"})
    header = next(l for l in md.splitlines() if l.startswith("| step |"))
    assert header.count("R_q ") == 2 and header.count("F_norm ") == 2 and header.count("| R ") == 2
    row1 = next(l for l in md.splitlines() if l.startswith("| 1 |")).split(" | ")
    assert row1[1:7] == ["0.5", "1", "–", "2", "3", "2"]  # R, F, F img, R_q, F_norm, n of the cot condition
    assert "R_q falls False, F_norm rises False" in md


def test_readme_lists_every_released_code_setting_with_file_and_line():
    doc = (ROOT / "docs" / "released-code.md").read_text()
    doc = doc[: doc.index("## Data in any shape")]
    readme = (ROOT / "README.md").read_text()
    rows = [l for l in doc.splitlines() if l.startswith("| ") and not l.startswith("| setting")]
    settings = [r for r in rows if r.count(" | ") == 3]  # | setting | released code | file:line | cotscope |
    assert len(settings) >= 25 and all(r in readme for r in rows)  # the README carries the same tables
    located = [r.split(" | ")[2] for r in settings]
    # a verified setting names a file and line(s); "—" only where the released code has no such thing
    for r, loc in zip(settings, located):
        assert (loc == "—" and "not" in r) or (":" in loc and any(ch.isdigit() for ch in loc)), r
    for repo, commit in (
        ("whynot-zyl/L2V-CoT", "efda26d"),
        ("FYYDCC/IVT-LR", "a47db8c"),
        ("WikiChao/DRIFT", "d60b91a"),
    ):
        assert f"`{repo}` @ `{commit}`" in readme


def test_crossmodel_summary_and_report_carry_both_dispersion_references(tmp_path):
    """Synthetic LLM/VLM stores through the crossmodel analysis, summary and report section."""
    from store_synth import synth, write_store

    from cotscope.analyses.crossmodel import crossmodel_analysis
    from cotscope.analyses.spectral import cutoff_bins
    from cotscope.report import findings
    from cotscope.stages.crossmodel import crossmodel_summary

    cfg, items, arrays = synth(n_pairs=30, layers=(0, 1, 2), d=48, positions=("last_prompt",), seed=1)
    vcfg, _, varrays = synth(n_pairs=30, layers=(0, 1, 2), d=48, positions=("last_prompt",), seed=2)
    llm = write_store(tmp_path / "l", cfg, items, arrays)
    vlm = write_store(tmp_path / "v", vcfg, items, varrays)
    res = {"vlm_model": {"model_id": "synthetic-vlm", "hidden_size": 48}, "timings_s": {}}
    for cond in ("text", "image"):
        res[cond] = crossmodel_analysis(llm, vlm, n_perm=20, seed=0)
    s = crossmodel_summary(res, cutoff=0.1)
    c = cutoff_bins(48, 0.1)
    for row in s["image"]["per_layer"].values():
        assert row["dispersion_vlm_lowpass_isotropic"] == pytest.approx(
            row["dispersion_vlm"] * (2 * c - 0.5) / 48, abs=0.011
        )
        assert row["dispersion_vlm_lowpass_null_mean"] > 0 and 0 < row["dispersion_vlm_lowpass_p_value"] <= 1
    (title, md), *_ = [f for f in findings({"crossmodel": s}) if "LLM ↔ VLM" in f[0]]
    refs = re.findall(r"VLM low-pass [\d.]+ \(isotropic low-pass expectation [\d.]+, permutation null [\d.]+, p = ", md)
    assert len(refs) == 6  # 3 layers × 2 inputs
