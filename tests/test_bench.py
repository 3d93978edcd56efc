"""Benchmark harness: published layouts (fixtures rendered by tests/fixtures/bench/make_fixtures.py), rule-based
extraction, Wilson intervals, resumable rows, the judge hook, injection and merged settings, and `cotscope eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotscope.analyses.answers import AnswerSpec
from cotscope.analyses.bench.extract import extract, extract_choice, extract_free, extract_number
from cotscope.analyses.bench.score import summarize_settings, wilson_interval
from cotscope.probes.bench.specs import BenchmarkError, load_benchmark, parse_inline_options

FIX = Path(__file__).parent / "fixtures" / "bench"
FILES = {
    "mathvista": FIX / "mathvista" / "testmini.parquet",
    "mathverse": FIX / "mathverse" / "testmini.parquet",
    "mmstar": FIX / "mmstar" / "val.parquet",
    "scienceqa": FIX / "scienceqa" / "test.parquet",
    "m3cot": FIX / "m3cot" / "test.parquet",
}


def test_fixtures_have_the_published_columns():
    import pyarrow.parquet as pq

    cols = {k: pq.read_schema(v).names for k, v in FILES.items()}
    assert cols["mathvista"] == [
        "pid",
        "question",
        "image",
        "decoded_image",
        "choices",
        "unit",
        "precision",
        "answer",
        "question_type",
        "answer_type",
        "metadata",
        "query",
    ]
    assert cols["mathverse"][:4] == ["sample_index", "problem_index", "problem_version", "question"]
    assert cols["mmstar"] == ["index", "question", "image", "answer", "category", "l2_category", "meta_info"]
    assert {"hint", "lecture", "solution"} <= set(cols["scienceqa"]) and "rationale" in cols["m3cot"]


def test_each_benchmark_loads_with_typed_golds():
    mv = load_benchmark("mathvista", FILES["mathvista"])
    assert [s.answer.type for s in mv] == ["choice", "integer", "integer", "choice", "float", "integer"]
    assert mv[0].answer.letter == "B" and mv[0].question.startswith("Hint:") and mv[4].answer.precision == 1
    assert mv[0].image is not None and mv[0].category == "math word problem" and mv[0].question_type == "multi_choice"
    vs = load_benchmark("mathverse", FILES["mathverse"])
    assert vs[0].choices == ("10", "9", "12", "7") and vs[0].answer.letter == "B" and vs[0].category == "Text Dominant"
    ms = load_benchmark("mmstar", FILES["mmstar"])
    assert all(s.answer.letter == "C" and len(s.choices) == 4 for s in ms) and ms[0].category == "math"
    sq = load_benchmark("mcq", FILES["scienceqa"])
    assert sq[3].image is None and sq[3].answer.gold == 1 and sq[0].question.startswith("Context:")
    m3 = load_benchmark("mcq", FILES["m3cot"])
    assert [s.answer.letter for s in m3] == ["C"] * 3 and m3[0].category == "mathematics"
    with pytest.raises(BenchmarkError, match=r"test.parquet: row 0, field 'question': no 'Options"):
        load_benchmark("mmstar", FILES["scienceqa"])  # no 'Options:' in the question
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        load_benchmark("mathvision", FILES["mathvista"])


def test_extractors():
    ch = ["10", "9", "12", "7"]
    assert extract_choice("So the answer is (C).", ch) == "C"
    assert extract_choice("B", ch) == "B" and extract_choice("\\boxed{D}", ch) == "D"
    assert extract_choice("The value is 12.", ch) == "C"  # option text, unique
    assert extract_choice("Either A or B.", ch) is None  # ambiguous: no answer
    assert extract_number("First 3, then 4; the answer is 7 apples") == "7"
    assert extract_number("\\boxed{2.5}") == "2.5" and extract_number("none") is None
    assert extract_free("Thinking...\nThe answer is Paris.") == "Paris"
    spec = AnswerSpec.build("2.5", "float", precision=1)
    assert spec.match(extract("so it is 2.50", spec)) and not spec.match(extract("2.6", spec))
    assert parse_inline_options("Q? Options: A: red, B: blue") == ("Q?", ["red", "blue"])


def test_wilson_and_breakdowns():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35  # stays informative at 0%
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    rows = [
        {
            "item_id": str(i),
            "setting": s,
            "correct": c,
            "category": "a" if i < 2 else "b",
            "n_tokens": 10 + i,
            "pred": "1",
        }
        for s, cs in (("base", [1, 0, 0, 1]), ("inject", [1, 1, 0, 1]))
        for i, c in enumerate(cs)
    ]
    out = summarize_settings(rows, ("category",), baseline="base")
    assert out["base"]["accuracy"] == 0.5 and out["inject"]["accuracy"] == 0.75
    assert out["inject"]["vs_baseline"] == {"baseline": "base", "n": 4, "gain": 0.25, "wins": 1, "losses": 0}
    assert out["base"]["by"]["category"]["b"]["n"] == 2 and out["base"]["median_tokens"] == 11.5


@pytest.fixture(scope="module")
def vlm():
    from cotscope.probes.models.loading import load_model

    return load_model("embedded:smolvlm")


def test_run_resume_judge_and_settings(vlm, tmp_path):
    from cotscope.analyses.sweeps import SweepTableError, read_table
    from cotscope.probes.bench.run import InjectSpec, run_benchmark

    r = run_benchmark(
        vlm, "mcq", FILES["scienceqa"], tmp_path, max_new_tokens=6, batch_size=2, progress=False, max_batches=1
    )
    assert r["rows"] == 2 and not r["complete"]
    r = run_benchmark(vlm, "mcq", FILES["scienceqa"], tmp_path, max_new_tokens=6, batch_size=2, progress=False)
    assert r["complete"] and r["batches_run"] == 2 and r["rows"] == 4  # image batch + the text-only item
    rows = read_table(r["table"])
    for row in rows:
        spec = AnswerSpec.build(row["gold"], "choice", choices=row["choices"])
        assert row["correct"] == spec.match(row["pred"])  # scored by the typed rule
        assert row["pred_source"] in ("rule", "none")
    s = r["summary"]
    assert s["n"] == 4 and s["ci_low"] <= s["accuracy"] <= s["ci_high"] and "category" in s["by"]
    with pytest.raises(SweepTableError, match="different configuration"):
        run_benchmark(vlm, "mcq", FILES["scienceqa"], tmp_path, max_new_tokens=7, progress=False)
    # the judge hook: called only where the rules find nothing (here: every row, the rules are given nothing)
    calls = []

    def judge(question, response, spec):
        calls.append(question)
        return spec.letter

    r = run_benchmark(
        vlm,
        "mcq",
        FILES["m3cot"],
        tmp_path,
        setting="judged",
        max_new_tokens=4,
        judge=judge,
        judge_mode="always",
        progress=False,
    )
    assert len(calls) == 3 and r["summary"]["accuracy"] == 1.0 and r["summary"]["judged"] == 3
    # injection: a random direction changes the recorded configuration and runs end to end
    import numpy as np

    from cotscope.analyses.artifacts import DirectionMeta, DirectionSet

    ds = DirectionSet(
        {12: np.random.default_rng(0).normal(size=576).astype(np.float32)},
        DirectionMeta(model_id="random", n_layers=30, hidden_size=576, method="random"),
    )
    r = run_benchmark(
        vlm,
        "mathvista",
        FILES["mathvista"],
        tmp_path,
        setting="inject",
        limit=2,
        max_new_tokens=4,
        inject=InjectSpec(ds, [12], 0.5, cutoff=29, strength_reference="hidden_norm"),
        progress=False,
    )
    meta = json.loads(Path(r["table"] + ".meta.json").read_text())["config"]
    assert meta["inject"]["cutoff"] == 29 and meta["inject"]["strength_reference"] == "hidden_norm"
    assert r["rows"] == 2


def test_eval_command_with_a_merged_setting(vlm, tmp_path, capsys):
    from cotscope.commands.eval import main
    from cotscope.probes.models.embedded import smollm2_dir
    from cotscope.probes.models.reference_vlm import reference_vlm_dir

    rc = main(
        [
            "embedded:smolvlm",
            "--bench",
            "mmstar",
            "--data",
            str(FILES["mmstar"]),
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path),
            "--merge",
            "layer_swap",
            "--reason",
            str(smollm2_dir()),
            "--vl",
            str(reference_vlm_dir()),
            "--swap-layers",
            "20-29",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "mmstar [merge-layer_swap]" in out and "95% CI" in out
    res = json.loads((tmp_path / "mmstar-merge-layer_swap.json").read_text())
    meta = json.loads(Path(res["table"] + ".meta.json").read_text())["config"]
    assert meta["merged"]["method"] == "layer_swap" and meta["merged"]["params"]["swap_layers"] == list(range(20, 30))


def test_checked_in_fixtures_are_what_the_renderer_writes(tmp_path):
    import pyarrow.parquet as pq

    from cotscope.probes.bench.fixtures import FILES as REL
    from cotscope.probes.bench.fixtures import write_fixtures

    new = write_fixtures(tmp_path)
    for name, rel in REL.items():
        assert pq.read_table(new[name]).equals(pq.read_table(FIX / rel)), name
