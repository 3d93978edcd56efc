"""probes.vision_latents on tiny random VLMs: hooks equal HF outputs; the end-to-end probe run writes results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_vlms import sample_image, tiny_vlm

from cotscope.probes.models.hf_compat import image_feature_rows
from cotscope.probes.vision_latents import VisionLatentsError, collect_vision_latents, run_reconstruction_analysis

torch.set_num_threads(2)


@pytest.mark.parametrize(
    "family,connector", [("idefics2", "model.connector"), ("llava", "model.multi_modal_projector")]
)
def test_collected_latents_equal_hf_outputs(family, connector):
    vlm = tiny_vlm(family)
    imgs = [sample_image(seed=i) for i in range(2)]
    data = collect_vision_latents(vlm.model, vlm.processor, imgs, vlm.prompt(), connector, progress=False)
    n_layers = len(data["hidden"])
    enc = vlm.processor(text=vlm.prompt(), images=[imgs[1]], return_tensors="pt")
    with torch.no_grad():
        out = vlm.model(**enc, output_hidden_states=True)
    # One code path, so exact: the collector runs each image as a batch of one, like this reference forward, and
    # its hooks read the very tensors HF returns as hidden_states / image_hidden_states.
    for l in range(n_layers - 1):  # HF's last entry is after the final norm
        np.testing.assert_array_equal(data["hidden"][l][1], out.hidden_states[l + 1][0, -1].numpy())
    img = image_feature_rows(out.image_hidden_states)  # a tensor up to transformers 5.23, a list from 5.24
    np.testing.assert_array_equal(data["connector"][1], img.numpy())
    mean = collect_vision_latents(
        vlm.model, vlm.processor, imgs[:1], vlm.prompt(), connector, layers=[0], token_rule="image_mean", progress=False
    )
    assert mean["hidden"][0].shape == (1, data["connector"].shape[-1])


def test_collector_errors_name_the_problem():
    vlm = tiny_vlm("idefics2")
    img = [sample_image()]
    with pytest.raises(VisionLatentsError, match="not a submodule"):
        collect_vision_latents(vlm.model, vlm.processor, img, vlm.prompt(), "model.projector", progress=False)
    with pytest.raises(VisionLatentsError, match="out of range"):
        collect_vision_latents(
            vlm.model, vlm.processor, img, vlm.prompt(), "model.connector", layers=[9], progress=False
        )
    with pytest.raises(VisionLatentsError, match="one prompt per image"):
        collect_vision_latents(vlm.model, vlm.processor, img, ["a", "b"], "model.connector", progress=False)


def test_run_reconstruction_analysis_end_to_end(tmp_path):
    vlm = tiny_vlm("llava")
    imgs = [sample_image(seed=i) for i in range(8)]
    s = run_reconstruction_analysis(
        vlm.model, vlm.processor, imgs, vlm.prompt(), "model.multi_modal_projector", tmp_path, n_tokens=32
    )
    data = json.loads((tmp_path / "reconstruction.json").read_text())
    assert data["n_tokens"] == 16 and s["recon_n_tokens"] == 16  # capped at the 16 connector tokens
    assert len(data["rows"]) == 4 and "cos_centered_shuffled" in data["rows"][0]
    assert np.asarray(data["patch_similarity"]["cos"]).shape[1:] == (4, 4)  # 16 patches of a square image
    from cotscope.figures import fig_patch_similarity, fig_reconstruction  # figures draw the stored JSON

    figs = fig_reconstruction.save(data, tmp_path) + fig_patch_similarity.save(data, tmp_path)
    assert sum(str(f).endswith(".png") for f in figs) == 2


def test_reconstruction_stage_gives_numbers_and_a_report(tmp_path):
    from tiny_vlms import tiny_vlm_dir

    from cotscope.stages.reconstruction import reconstruction_stage

    s = reconstruction_stage(tmp_path, {}, vlm_dir=tiny_vlm_dir("llava"), n_images=8)
    assert s["recon_n_tokens"] == 16 and "held-out images" in s["report"] and s["title"]
    assert (tmp_path / "reconstruction" / "reconstruction.json").is_file()
