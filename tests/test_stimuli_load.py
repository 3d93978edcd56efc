"""One loader for stimuli in any shape (probes.stimuli.load) and typed answers (analyses.answers)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from cotscope.analyses.answers import AnswerError, AnswerSpec
from cotscope.probes.stimuli.load import (
    StimulusLoadError,
    bundled_thoughts_path,
    load_stimuli,
    load_thought_pairs,
    stimulus_pairs,
)

ROWS = [
    {"id": "a", "question": "What is 2 + 3?", "answer": "5", "cot": "2 + 3 = 5. The answer is 5.", "direct": "5."},
    {
        "id": "b",
        "question": "Which is a fruit?",
        "choices": ["car", "apple", "rock"],
        "answer": "B",
        "cot": "An apple grows on a tree.",
        "direct": "B.",
    },
    {"id": "c", "question": "Half of 7?", "answer": "3.5", "cot": "7 / 2 = 3.5.", "direct": "3.5."},
    {
        "id": "d",
        "question": "Capital of France?",
        "answer": "Paris",
        "cot": "France's capital is Paris.",
        "direct": "Paris.",
    },
]


def _png(color="red", size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _write_all(tmp_path, rows):
    """The same rows as JSONL, JSON, CSV (choices as JSON text), Parquet and a datasets folder."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.json").write_text(json.dumps(rows))
    import csv

    cols = ["id", "question", "choices", "answer", "cot", "direct"]
    with open(tmp_path / "s.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(
                {**{c: r.get(c, "") for c in cols}, "choices": json.dumps(r["choices"]) if "choices" in r else ""}
            )
    flat = [{**{c: r.get(c) for c in cols}, "choices": r.get("choices", [])} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "s.parquet")
    datasets.Dataset.from_list(flat).save_to_disk(str(tmp_path / "hf"))
    return [tmp_path / n for n in ("s.jsonl", "s.json", "s.csv", "s.parquet", "hf")]


def test_every_format_gives_the_same_stimuli(tmp_path):
    ref = None
    for path in _write_all(tmp_path, ROWS):
        st = load_stimuli(path)
        got = [(s.id, s.question, s.answer.type, s.answer.gold, s.choices, s.cot, s.direct) for s in st]
        if ref is None:
            ref = got
        assert got == ref, path
    assert [g[2] for g in ref] == ["integer", "choice", "float", "text"]
    assert ref[1][3] == 1 and ref[1][4] == ("car", "apple", "rock")


def test_answer_types_and_matching():
    assert AnswerSpec.build("1,204", "integer").match("1204")
    assert not AnswerSpec.build("12", "integer").match("12.5")
    f = AnswerSpec.build("2.718", "float", tolerance=0.01)
    assert f.match("2.71") and not f.match("2.6")
    assert AnswerSpec.build("1.5", "float", precision=1).match("1.54") and AnswerSpec.build("0.333", "float").match(
        "0.333"
    )
    c = AnswerSpec.build("(C)", "choice", choices=["1", "2", "3", "4"])
    assert c.gold == 2 and c.match("C") and c.match("(c)") and c.match("3") and not c.match("B")
    assert AnswerSpec.build("2", "choice", choices=["x", "y", "z"]).gold == 2  # a 0-based index (ScienceQA)
    t = AnswerSpec.build("The Eiffel Tower", "text")
    assert t.match("eiffel tower!") and not t.match("tower")
    for bad, kw, words in [
        ("12.5", {"answer_type": "integer"}, "not an integer"),
        ("abc", {"answer_type": "float"}, "not a number"),
        ("E", {"answer_type": "choice", "choices": ["a", "b"]}, "neither an option letter"),
        ("A", {"answer_type": "choice", "choices": ["a"]}, "at least two options"),
        ("", {}, "empty"),
        ("1", {"answer_type": "bool"}, "unknown answer type"),
    ]:
        with pytest.raises(AnswerError, match=words):
            AnswerSpec.build(bad, **kw)


def test_images_as_paths_bytes_base64_and_hf_images(tmp_path):
    import datasets

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 6), "blue").save(tmp_path / "img" / "q1.png")
    rows = [
        {"question": "q1", "answer": 1, "image": "img/q1.png"},
        {"question": "q2", "answer": 2, "image": base64.b64encode(_png("green")).decode()},
        {"question": "q3", "answer": 3, "image": ["img/q1.png", "img/q1.png"]},
    ]
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    st = load_stimuli(tmp_path / "i.jsonl")
    assert st[0].image.size == (8, 6) and st[0].image.convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert st[1].image.convert("RGB").getpixel((0, 0)) == (0, 128, 0)
    assert len(st[2].images) == 2
    with pytest.raises(StimulusLoadError, match="one image per item"):
        st[2].image
    # HF image feature (bytes inside the dataset) and a Parquet column of {"bytes": ...}
    ds = datasets.Dataset.from_dict({"question": ["x"], "answer": ["7"], "decoded_image": [Image.new("RGB", (5, 5))]})
    ds = ds.cast_column("decoded_image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hfimg"))
    assert load_stimuli(tmp_path / "hfimg")[0].image.size == (5, 5)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist([{"query": "y", "answer": "1", "image": {"bytes": _png(), "path": None}}]),
        tmp_path / "b.parquet",
    )
    s = load_stimuli(tmp_path / "b.parquet", {"question": "query"})[0]
    assert s.image.size == (8, 6) and s.question == "y" and "image" not in s.meta


def test_errors_name_file_row_and_column(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"question": "ok", "answer": 1}\n{"question": "bad", "answer": "x1"}\n')
    with pytest.raises(StimulusLoadError, match=r"e\.jsonl:2: answer 'x1' is not an integer.*column 'answer'"):
        load_stimuli(p, answer_type="integer")
    p.write_text('{"question": "ok", "answer": 1}\n{"answer": 2}\n')
    with pytest.raises(StimulusLoadError, match=r"e\.jsonl:2: needs keys 'question'"):
        load_stimuli(p)
    with pytest.raises(StimulusLoadError, match=r"e\.jsonl:1: no column 'qq' for role 'question'"):
        load_stimuli(p, {"question": "qq"})
    p.write_text('{"question": "ok", "image": "nope.png", "answer": 1}\n')
    with pytest.raises(StimulusLoadError, match=r"e\.jsonl:1, column 'image': image 'nope.png' is not a file"):
        load_stimuli(p)
    from cotscope.probes.stimuli.textio import StimulusEncodingError

    p.write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(StimulusEncodingError, match=r"e\.jsonl:1: not UTF-8 .*iconv"):
        load_stimuli(p)
    (tmp_path / "e.csv").write_bytes("question,answer\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(StimulusEncodingError, match=r"e\.csv:2: not UTF-8"):  # CSV goes through the same reader
        load_stimuli(tmp_path / "e.csv")
    p.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n')
    with pytest.raises(StimulusLoadError, match="id '1' repeats"):
        load_stimuli(p)
    p.write_text("")
    with pytest.raises(StimulusLoadError, match="no rows"):
        load_stimuli(p)
    with pytest.raises(StimulusLoadError, match="unknown roles"):
        load_stimuli(tmp_path / "e.jsonl", {"questoin": "q"})
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(StimulusLoadError, match="unknown file type"):
        load_stimuli(tmp_path / "x.xlsx")


def test_vlmevalkit_style_tsv_with_letter_columns(tmp_path):
    tsv = (
        "index\tquestion\tA\tB\tC\tD\tanswer\tcategory\n"
        "0\tWhich colour?\tred\tblue\t\t\tB\tperception\n"
        "1\tHow many?\t1\t2\t3\t4\tD\treasoning\n"
    )
    (tmp_path / "m.tsv").write_text(tsv)
    st = load_stimuli(tmp_path / "m.tsv", {"choices": ["A", "B", "C", "D"]})
    assert st[0].choices == ("red", "blue") and st[0].answer.gold == 1 and st[0].category == "perception"
    assert st[1].answer.letter == "D" and st[1].id == "1"
    assert st[1].with_choices_text().endswith("C. 3\nD. 4")


def test_bundled_thought_pairs_and_the_released_reading(smollm2, tmp_path):
    rows = load_thought_pairs()
    assert 95 <= len(rows) <= 110 and bundled_thoughts_path().is_file()
    assert all(
        s.answer.match(s.answer.display) and s.answer.display in s.cot and s.answer.display in s.direct for s in rows
    )
    assert all(len(s.cot) > 2 * len(s.direct) for s in rows)
    pairs = stimulus_pairs(rows[:4], pairing="answer")
    assert pairs[0].cot.messages == pairs[0].direct.messages and pairs[0].cot.answer == rows[0].cot
    from cotscope.probes.collect import collect_pairs

    store = collect_pairs(
        smollm2, pairs, tmp_path / "st", layers=[3, 12], positions=("eot", "turn_end"), batch_size=8, progress=False
    )
    assert {it["eot_token"] for it in store.items} == {"<|im_end|>"}
    cot, direct = store.paired("eot", 12)
    assert cot.shape == (4, 576) and not np.allclose(cot, direct)
    with pytest.raises(StimulusLoadError, match="needs both a CoT text and a direct text"):
        stimulus_pairs([type(rows[0])(id="z", question="q", source="here")], pairing="answer")
