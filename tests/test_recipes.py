"""Recipe files: validation, compilation into stages, the dry-run plan, demo.toml == make demo, and a real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotscope.recipes import RecipeError, compile_recipe, format_plan, load_recipe, model_info, plan, run_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_compiles_and_plans(path):
    r = load_recipe(path)
    stages = compile_recipe(r)
    assert [s.name for s in stages] == [st["name"] for st in r.stages]
    pl = plan(r)
    assert format_plan(pl).startswith(f"recipe {path}")
    assert pl["generations"] >= 0 and pl["disk_gb"] >= 0


def test_demo_recipe_is_make_demo():
    from cotscope.demo import DEMO_DEFAULTS, demo_stages
    from cotscope.recipes import recipe_config

    r = load_recipe(ROOT / "recipes" / "demo.toml")
    got, want = compile_recipe(r), demo_stages()
    assert [(s.name, s.fn, s.required, s.needs) for s in got] == [(s.name, s.fn, s.required, s.needs) for s in want]
    cfg = recipe_config(r)
    assert {k: cfg[k] for k in DEMO_DEFAULTS} == DEMO_DEFAULTS and str(r.run_dir) == "runs/demo"


def test_paper_recipes_carry_the_released_cutoffs():
    r = load_recipe(ROOT / "recipes" / "l2v_cot_main.toml")
    cut = {st["name"]: st.get("cutoff") for st in r.stages if st["kind"] == "directions"}
    assert cut["qwen2vl_own"] == 200 and cut["llava_next_own"] == 900 and cut["internvl2_own"] == 200
    assert all(isinstance(c, int) for n, c in cut.items() if n != "source")  # bins, not fractions
    assert all(
        st.get("token_rule") == "turn_end" and st.get("pairing") == "answer"
        for st in r.stages
        if st["kind"] == "directions"
    )
    pl = plan(r)
    notes = {s["stage"]: s["notes"] for s in pl["stages"]}
    assert "cutoff 900 of 2049 bins (43.9%)" in notes["llava_next_own"]
    assert pl["models"]["source"]["n_layers"] == 64 and pl["gpu_memory_gb"] > pl["gpu_memory_one_model_at_a_time_gb"]


@pytest.mark.parametrize(
    "text,words",
    [
        ("[run]\nname='x'\n", r"no \[\[stage\]\] tables"),
        ("[[stage]]\nkind='sweeep'\nname='a'\n", "unknown kind"),
        (
            "[models.m]\nspec='embedded:smollm2'\n[[stage]]\nkind='directions'\nname='a'\nmodel='m'\ntoken='eot'\n",
            "unknown keys \\['token'\\]",
        ),
        ("[[stage]]\nkind='directions'\nname='a'\nmodel='nope'\n", "model 'nope' is not declared"),
        ("[models.m]\nspec='x'\n[[stage]]\nkind='directions'\nname='a'\nmodel='m'\ncutoff=2.0\n", "pass the integer 2"),
        ("[models.m]\nspec='x'\n[[stage]]\nkind='sweep'\nname='a'\nmodel='m'\ndirection='b'\n", "names no stage"),
        (
            "[models.m]\nspec='x'\n[[stage]]\nkind='compare'\nname='a'\n[[stage]]\nkind='compare'\nname='a'\n",
            "used twice",
        ),
        ("[[stage]]\nkind='demo'\nname='llmm'\n", "does not exist"),
        ("[models.m]\n[[stage]]\nkind='demo'\nname='llm'\n", "needs spec"),
        ("[stage\n", "not valid TOML"),
    ],
)
def test_bad_recipes_are_refused_before_anything_runs(tmp_path, text, words):
    p = tmp_path / "r.toml"
    p.write_text(text)
    with pytest.raises(RecipeError, match=words):
        compile_recipe(load_recipe(p))


def test_model_info_reads_local_configs_without_loading(smollm2_path):
    info = model_info(str(smollm2_path))
    assert info["n_layers"] == 30 and info["hidden_size"] == 576 and 0.1 < info["params_b"] < 0.2
    assert model_info("nobody/unknown-model")["params_b"] is None


def test_dry_run_command_loads_nothing(capsys):
    import sys

    from cotscope.commands.run import main

    before = {m for m in sys.modules if m.startswith("transformers")}
    assert main([str(ROOT / "recipes" / "l2v_cot_main.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated GPU memory" in out and "11 stages compiled" in out
    assert "cutoff 200 of 1793 bins" in out
    assert "transformers.models" not in " ".join({m for m in sys.modules if m.startswith("transformers")} - before)


def test_a_small_recipe_runs_end_to_end(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(f"""
[run]
name = "tiny"
seed = 0
[models.llm]
spec = "embedded:smollm2"
[[stage]]
kind = "directions"
name = "released"
model = "llm"
data = "bundled:thoughts"
limit = 6
pairing = "answer"
token_rule = "eot"
layers = [6, 12]
cutoff = 29
n_perm = 10
[[stage]]
kind = "eval"
name = "eval_fixture"
model = "llm"
bench = "mcq"
data = "{ROOT / "tests/fixtures/bench/scienceqa/test.parquet"}"
text_only = true
max_new_tokens = 4
settings = [{{ name = "base" }}, {{ name = "inject", inject = {{ direction = "released", layers = [12], lam = 0.5, cutoff = 29 }} }}]
[figures]
enabled = false
""")
    s = run_recipe(p, tmp_path / "run")
    assert s["stages"]["released"]["status"] == "ok", s["stages"]
    assert s["stages"]["eval_fixture"]["status"] == "ok", s["stages"]
    assert s["released"]["token_rule"] == "eot" and s["released"]["eot_tokens"] == ["<|im_end|>"]
    assert s["released"]["cutoff"]["bins"] == 29 and s["released"]["n_pairs"] == 6
    ev = s["eval_fixture"]["settings"]
    assert ev["base"]["n"] == 4 and "vs_baseline" in ev["inject"]
    assert (tmp_path / "run" / "directions" / "released_mean_diff.safetensors").is_file()
