"""Visual stimuli: determinism, exact answers, image validation and the JSONL loader."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from cotscope.probes.stimuli.arithmetic import generate_problems
from cotscope.probes.stimuli.visual import (
    ALL_KINDS,
    ImageInputError,
    bar_chart_item,
    check_image,
    counting_item,
    generate_visual_items,
    load_image,
    load_visual_jsonl,
    render_problem,
    render_text,
    save_visual_jsonl,
    text_prompt,
)


def test_deterministic_pixels_and_seed_sensitivity():
    a = generate_visual_items(12, seed=3, kinds=ALL_KINDS)
    b = generate_visual_items(12, seed=3, kinds=ALL_KINDS)
    c = generate_visual_items(12, seed=4, kinds=ALL_KINDS)
    assert [x.image.tobytes() for x in a] == [y.image.tobytes() for y in b]
    assert [x.id for x in a] == [y.id for y in b]
    assert [x.image.tobytes() for x in a] != [z.image.tobytes() for z in c]
    assert all(x.image.mode == "RGB" for x in a)
    assert {x.kind for x in a} == set(ALL_KINDS)


def test_counting_answers_match_description():
    for seed in range(40):
        it = counting_item(seed)
        counts = {m[1]: int(m[0]) for m in re.findall(r"(\d+) (\w+ \w+?)s?(?:,|$)", it.description)}
        if "total" in it.question:
            assert it.answer == sum(counts.values())
        else:
            color, shape = re.match(r"How many (\w+) (\w+)s are", it.question).groups()
            assert it.answer == counts[f"{color} {shape}"]


def test_bar_answers_match_description():
    for seed in range(40):
        it = bar_chart_item(seed)
        vals = {k: int(v) for k, v in re.findall(r"([A-D]) (\d)", it.description)}
        if "plus" in it.question:
            x, y = re.match(r"What is ([A-D]) plus ([A-D])\?", it.question).groups()
            assert it.answer == vals[x] + vals[y]
        elif "total" in it.question:
            assert it.answer == sum(vals.values())
        else:
            assert it.answer == max(vals.values()) - min(vals.values())


def test_problem_and_expression_items_share_the_problem():
    p = generate_problems(1, seed=0)[0]
    img = render_problem(p)
    assert img.size == (320, 96) and img.getextrema() != ((255, 255), (255, 255), (255, 255))
    items = generate_visual_items(4, seed=0, kinds=("problem", "expression"))
    assert items[0].description == generate_problems(2, seed=0)[0].question
    assert text_prompt(items[0], cot=True).startswith(items[0].description + "\n")
    assert items[1].answer == eval(items[1].description.replace("/", "//"))


def test_expressions_render_on_one_line_in_reading_order():
    """One line of 11-px glyphs: ink only in the top rows, and the glyphs' columns run left to right."""
    import numpy as np

    items = [it for it in generate_visual_items(90, seed=424_242) if it.kind == "expression"]
    assert len(items) == 30 and max(len(it.description) for it in items) >= 15  # long ones are in the sample
    for it in items:
        ink = np.asarray(it.image.convert("L")) < 128
        rows = np.flatnonzero(ink.any(1))
        assert rows.max() - rows.min() <= 14, it.description  # one line (a second would start 14 px lower)
        assert ink[:, -2:].sum() == 0, it.description  # the line ends inside the image, nothing cut off
    # text that does not fit one line still wraps at spaces (pixel width), and too much text is refused
    two = np.asarray(render_text("12345 67890 12345 67890", size=(96, 96), font_size=11, max_width_px=60).convert("L"))
    rows = np.flatnonzero((two < 128).any(1))
    assert rows.max() - rows.min() > 14
    with pytest.raises(ValueError, match="does not fit"):
        render_text("word " * 60, size=(96, 96), font_size=11, max_width_px=60)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown kinds"):
        generate_visual_items(2, kinds=("photos",))
    with pytest.raises(ValueError, match="positive"):
        generate_visual_items(0)


def test_load_image_errors_and_conversion(tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageInputError, match="cannot read"):
        load_image(tmp_path / "junk.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(ImageInputError, match="smaller"):
        load_image(tmp_path / "dot.png")
    Image.new("L", (5000, 8)).save(tmp_path / "wide.png")
    with pytest.raises(ImageInputError, match="larger"):
        load_image(tmp_path / "wide.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "rgba.png")
    im = load_image(tmp_path / "rgba.png")
    assert im.mode == "RGB" and im.getpixel((3, 3)) == (255, 255, 255)  # transparent -> white
    Image.new("P", (20, 20)).save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").mode == "RGB"
    assert check_image(Image.new("L", (10, 10))).mode == "RGB"
    with pytest.raises(ImageInputError, match="PIL.Image"):
        check_image("path.png")


def test_jsonl_roundtrip_and_errors(tmp_path):
    items = generate_visual_items(3, seed=5)
    path = save_visual_jsonl(items, tmp_path / "set.jsonl")
    back = load_visual_jsonl(path)
    assert [b.answer for b in back] == [i.answer for i in items]
    assert [b.description for b in back] == [i.description for i in items]
    assert back[0].image.tobytes() == items[0].image.tobytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "x.png", "question": "q"}) + "\n")
    with pytest.raises(ValueError, match="missing keys"):
        load_visual_jsonl(bad)
    bad.write_text(json.dumps({"image": "x.png", "question": "q", "answer": 1}) + "\n")
    with pytest.raises(ImageInputError, match="not found"):
        load_visual_jsonl(bad)
