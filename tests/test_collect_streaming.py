"""Collection streams its stimuli: images may be given as file paths or callables, opened per batch only, and
the store equals the one collected from in-memory PIL images bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cotscope.probes.collect import CollectionError, collect_pairs, image_sha256, load_image
from cotscope.probes.models.loading import wrap_model
from cotscope.probes.stimuli import generate_problems
from cotscope.probes.stimuli.pairs import Prompt, PromptPair


def test_image_paths_and_callables_give_the_same_store(tmp_path):
    from tiny_vlms import sample_image, tiny_vlm

    from cotscope.probes.models.processors import image_prompt

    vlm = tiny_vlm("llava")
    lm = wrap_model(vlm.model, processor=vlm.processor, model_id="tiny-llava")
    imgs = [sample_image(64, 48, seed=i) for i in range(4)]
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"im{i}.png")
        im.save(paths[-1])
    opened = []

    def lazy(i):
        def f():
            opened.append(i)
            return imgs[i]

        return f

    def pairs(src):
        def member(text, image):
            return Prompt([{"role": "user", "content": image_prompt(vlm.processor, "<image>\n" + text)}], " 7", image)

        return [
            PromptPair(i, p, "cue", member(p.question + " Think.", src[2 * i]), member(p.question, src[2 * i + 1]))
            for i, p in enumerate(generate_problems(2, seed=3))
        ]

    kw = dict(positions=("last_prompt", "image_mean"), batch_size=2, progress=False)
    ref = collect_pairs(lm, pairs(imgs), tmp_path / "pil", **kw)
    for name, src in (("paths", paths), ("callables", [lazy(i) for i in range(4)])):
        got = collect_pairs(lm, pairs(src), tmp_path / name, **kw)
        for p in kw["positions"]:
            for l in ref.layers:
                assert np.array_equal(ref.get(p, l), got.get(p, l)), (name, p, l)
    assert sorted(set(opened)) == [0, 1, 2, 3] and opened.count(0) == 2  # hashed once, encoded once
    assert image_sha256(paths[1]) == image_sha256(imgs[1])
    with pytest.raises(CollectionError, match="PIL image, a path or a callable"):
        load_image(42)
