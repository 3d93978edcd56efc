"""Length-robust attention-shift variants: R against question text only (template and sinks excluded) and H / log N."""

from __future__ import annotations

import numpy as np
import pytest
from test_attention_shift import as_trace, synthetic_trace

from cotscope.analyses.attention_shift import METRICS, analyse_trace, row_metrics, token_metrics
from cotscope.analyses.attention_store import GENERATED, IMAGE, QUESTION, TEMPLATE


def test_by_hand():
    #        sink/template  image  image  question question generated
    row = np.array([0.50, 0.10, 0.05, 0.10, 0.05, 0.20])
    kt = np.array([TEMPLATE, IMAGE, IMAGE, QUESTION, QUESTION, GENERATED])
    m = row_metrics(row, kt)
    assert m["R"] == pytest.approx(0.15 / 0.85)
    assert m["R_question"] == pytest.approx(0.15 / 0.15)
    assert m["H_norm"] == pytest.approx(m["H"] / np.log(6)) and m["F_norm"] == pytest.approx(1 / (m["H_norm"] + 1e-6))
    # a sink that is a question token (no template before it) leaves the denominator too
    kt2 = np.array([QUESTION, IMAGE, IMAGE, QUESTION, QUESTION, GENERATED])
    assert row_metrics(row, kt2)["R_question"] == pytest.approx(0.15 / 0.15)
    assert row_metrics(row, kt2, n_sink=0)["R_question"] == pytest.approx(0.15 / 0.65)
    # entropy over image keys: N = 2
    mi = row_metrics(row, kt, entropy_over="image")
    assert mi["n_keys"] == 2 and mi["H_norm"] == pytest.approx(mi["H"] / np.log(2))


def test_uniform_rows_have_normalised_entropy_one_at_any_length():
    for n in (8, 64, 512):
        kt = np.array([TEMPLATE] + [IMAGE] * 3 + [QUESTION] * 3 + [GENERATED] * (n - 7))
        m = row_metrics(np.full(n, 1.0 / n), kt)
        assert m["H_norm"] == pytest.approx(1.0)  # F_norm does not drift with N
        assert m["F"] == pytest.approx(1 / (np.log(n) + 1e-6))  # F does


def test_growing_generated_text_moves_R_but_not_R_question():
    # the same attention on image and question keys; each new generated key takes mass from nothing but itself
    base = {IMAGE: 0.2, QUESTION: 0.1, TEMPLATE: 0.3}
    Rs, Rq = [], []
    for n_gen in range(1, 8):
        kt = np.array([TEMPLATE, IMAGE, IMAGE, QUESTION] + [GENERATED] * n_gen)
        row = np.array([base[TEMPLATE], base[IMAGE] / 2, base[IMAGE] / 2, base[QUESTION]] + [0.4 / n_gen] * n_gen)
        m = row_metrics(row * (1 + 0.1 * n_gen), kt)  # an unnormalised row: ratios must not care
        Rs.append(m["R"]), Rq.append(m["R_question"])
    assert np.allclose(Rq, 2.0) and np.allclose(Rs, 0.25)
    # now generated keys absorb mass from the template/sink: R rises, R_question is unmoved
    Rs, Rq = [], []
    for n_gen in range(1, 8):
        kt = np.array([TEMPLATE, IMAGE, IMAGE, QUESTION] + [GENERATED] * n_gen)
        gen = 0.05 * n_gen
        row = np.array([0.5 - gen, 0.1, 0.1, 0.1] + [gen / n_gen] * n_gen)
        m = row_metrics(row, kt)
        Rs.append(m["R"]), Rq.append(m["R_question"])
    assert np.allclose(Rq, 2.0) and np.ptp(Rs) < 1e-9  # same text mass overall here
    assert "R_question" in METRICS and "F_norm" in METRICS


def test_trace_and_run_level_curves():
    tr = as_trace(synthetic_trace(n_steps=6, seed=3))
    tm = token_metrics(tr, n_sink=2)
    assert tm.R_question.shape == (6,) and np.all(tm.H_norm <= 1.0 + 1e-12) and np.all(tm.H_norm > 0)
    assert tm.choice["n_sink"] == 2
    res = analyse_trace(tr)
    assert set(res["step"]) >= {"R", "F", "R_question", "F_norm"} and len(res["token"]["H_norm"]) == 6
