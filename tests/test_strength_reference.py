"""What λ is relative to: strength_reference = source / target_direction / hidden_norm (probes.intervene, sweeps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cotscope.analyses import spectral
from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
from cotscope.analyses.sweeps import read_table
from cotscope.probes.intervene import InjectionError, build_controls, mean_hidden_norms
from cotscope.probes.stimuli import generate_problems
from cotscope.probes.sweep import SweepConfig, direct_prompts, run_sweep

D, N = 576, 30
KINDS = ("real", "unfiltered", "highpass", "random")


def _set(scale: float, seed: int, layers=(6, 20)) -> DirectionSet:
    rng = np.random.default_rng(seed)
    return DirectionSet(
        {l: (rng.standard_normal(D) * scale).astype(np.float32) for l in layers},
        DirectionMeta(model_id=f"test-{seed}", n_layers=N, hidden_size=D, method="random"),
    )


def test_source_is_todays_behaviour():
    src = _set(20.0, 0)
    a = build_controls(src, (D, N), [6, 20], controls=KINDS, cutoff=0.1)
    b = build_controls(src, (D, N), [6, 20], controls=KINDS, cutoff=0.1, strength_reference="source")
    for k in KINDS:
        for l in (6, 20):
            assert np.array_equal(a.vectors[k][l], b.vectors[k][l])
    assert b.settings["strength_reference"] == "source" and b.settings["scales"] == {6: 1.0, 20: 1.0}


def test_target_direction_takes_the_targets_own_norm():
    src, own = _set(20.0, 0), _set(3.0, 1)
    s = build_controls(src, (D, N), [6, 20], controls=KINDS, cutoff=200, strength_reference="target_direction", own=own)
    ref = build_controls(src, (D, N), [6, 20], controls=KINDS, cutoff=200)
    for l in (6, 20):
        want = np.linalg.norm(spectral.lowpass(own.vectors[l], 200))  # the target's own low-passed direction
        assert np.linalg.norm(s.vectors["real"][l]) == pytest.approx(want, rel=1e-5)
        assert s.settings["reference_norms"][l] == pytest.approx(want, rel=1e-6)
        f = s.settings["scales"][l]
        for k in ("unfiltered", "highpass"):  # one factor per layer: controls keep relative size
            assert np.allclose(s.vectors[k][l], ref.vectors[k][l] * f, rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(s.vectors["random"][l]) == pytest.approx(want, rel=1e-5)
    # `reference=` overrides `own=`
    t = build_controls(
        src,
        (D, N),
        [6],
        controls=("real",),
        cutoff=0.1,
        strength_reference="target_direction",
        own=own,
        reference=_set(7.0, 2),
    )
    assert np.linalg.norm(t.vectors["real"][6]) == pytest.approx(
        np.linalg.norm(spectral.lowpass(_set(7.0, 2).vectors[6], 0.1)), rel=1e-5
    )


def test_hidden_norm_makes_lambda_a_fraction_of_the_hidden_norm():
    s = build_controls(
        _set(20.0, 0),
        (D, N),
        [6, 20],
        controls=("real", "random"),
        cutoff=0.1,
        strength_reference="hidden_norm",
        reference={6: 12.5, 20: 80.0, 3: 1.0},
    )
    assert np.linalg.norm(s.vectors["real"][6]) == pytest.approx(12.5, rel=1e-5)
    assert np.linalg.norm(s.vectors["random"][20]) == pytest.approx(80.0, rel=1e-5)


@pytest.mark.parametrize(
    "kw,words",
    [
        (dict(strength_reference="target"), "unknown strength_reference"),
        (dict(strength_reference="target_direction"), "own direction"),
        (dict(strength_reference="hidden_norm"), "mean_hidden_norms"),
        (dict(strength_reference="hidden_norm", reference={6: 1.0}), "every injected layer"),
        (dict(strength_reference="hidden_norm", reference={6: 1.0, 20: float("nan")}), "finite and positive"),
        (dict(strength_reference="target_direction", reference=np.ones(100)), "100 dims"),
    ],
)
def test_bad_references_are_refused(kw, words):
    with pytest.raises(InjectionError, match=words):
        build_controls(_set(20.0, 0), (D, N), [6, 20], controls=("real",), cutoff=0.1, **kw)


def test_mean_hidden_norms_equals_hf(smollm2):
    tok = smollm2.tokenizer
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("What is 2 + 2?", "Name three colours, please, in one short line.")
    ]
    got = mean_hidden_norms(smollm2, texts, [0, 15])
    tot, n = {0: 0.0, 15: 0.0}, 0
    for t in texts:  # one at a time: no padding at all
        ids = tok(t, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = smollm2.hf(input_ids=ids, output_hidden_states=True).hidden_states
        for l in tot:
            tot[l] += float(hs[l + 1][0].norm(dim=-1).sum())
        n += ids.shape[1]
    for l in tot:
        assert got[l] == pytest.approx(tot[l] / n, rel=1e-4)


def test_every_sweep_row_records_the_reference(smollm2, tmp_path):
    prompts = direct_prompts(generate_problems(1, seed=3, difficulties=("easy",)))
    cfg = SweepConfig(
        layers=(6,),
        lams=(0.5,),
        controls=("none", "random"),
        budget=2,
        score=False,
        cutoff=0.1,
        strength_reference="hidden_norm",
        rows_per_batch=4,
    )
    res = run_sweep(smollm2, _set(20.0, 0), prompts, tmp_path / "s.csv", cfg, progress=False)
    rows = read_table(tmp_path / "s.csv")
    h = mean_hidden_norms(smollm2, [prompts[0].render(smollm2)], [6])[6]
    assert res.settings["reference_norms"][6] == pytest.approx(h, rel=1e-5)
    for r in rows:
        assert r["strength_reference"] == "hidden_norm"
        if r["control"] != "none":
            assert r["ref_norm"] == pytest.approx(h, rel=1e-5) and r["vec_norm"] == pytest.approx(h, rel=1e-4)
        else:
            assert np.isnan(r["ref_norm"])
    with pytest.raises(InjectionError, match="use one of them"):
        run_sweep(
            smollm2,
            _set(20.0, 0),
            prompts,
            tmp_path / "t.csv",
            SweepConfig(layers=(6,), lams=(0.5,), unit_norm=True, strength_reference="hidden_norm"),
            progress=False,
        )
