"""User-declared adapters (probes.models.adapter_spec): a valid TOML/JSON spec collects exactly like the built-in
adapter; every invalid field is refused with a message naming the field and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from family_checks import make_pairs
from tiny_vlms import scratch_dir, tiny_vlm

from cotscope.errors import CotscopeError
from cotscope.probes.collect import collect_pairs
from cotscope.probes.models import adapter_for
from cotscope.probes.models.adapter_spec import (
    SPEC_FIELDS,
    AdapterSpecError,
    adapter_from_spec,
    load_adapter_spec,
    read_spec,
)
from cotscope.probes.models.loading import wrap_model
from cotscope.probes.models.registry import _REGISTRY, UnsupportedModelError

torch.set_num_threads(1)

LLAVA_TOML = """
family = "llava_declared"
model_types = ["llava"]
layers_path = "model.language_model.layers"
final_norm_path = "model.language_model.norm"
vision_path = "model.vision_tower"
projector_path = "model.multi_modal_projector"
image_token = "<image>"
text_config_attr = "text_config"
notes = "LLaVA declared by hand, to check the spec route against the built-in adapter"

[processor_kwargs]
"""


def _spec() -> dict:
    import tomllib

    return tomllib.loads(LLAVA_TOML)


def test_declared_llava_collects_exactly_like_the_built_in_adapter(tmp_path):
    vlm = tiny_vlm("llava")
    (tmp_path / "llava.toml").write_text(LLAVA_TOML)
    declared = load_adapter_spec(tmp_path / "llava.toml", tokenizer=vlm.tokenizer, model=vlm.model, register_it=False)
    builtin = adapter_for(vlm.model)
    assert declared.family == "llava_declared" and builtin.family == "llava"  # the registry was not touched
    assert declared.image_token_id(vlm.model.config) == builtin.image_token_id(vlm.model.config)
    pairs = make_pairs("llava")
    pos = ("last_prompt", "answer_mean", "image_mean")
    stores = {}
    for name, adapter in (("declared", declared), ("builtin", builtin)):
        lm = wrap_model(vlm.model, processor=vlm.processor, model_id="tiny-llava", adapter=adapter)
        stores[name] = collect_pairs(
            lm, pairs, scratch_dir(f"spec-{name}-"), positions=pos, batch_size=2, all_tokens=True, progress=False
        )
    a, b = stores["declared"], stores["builtin"]
    for p in pos:  # the same model, inputs and code path: bit for bit
        np.testing.assert_array_equal(a.get(p), b.get(p))
    for row in range(a.n_items):
        np.testing.assert_array_equal(a.image_masks()[row], b.image_masks()[row])
        np.testing.assert_array_equal(a.all_tokens(row), b.all_tokens(row))
    assert a.image_masks()[0].sum() == 16


def test_json_spec_equals_toml_spec_and_registration(tmp_path):
    from transformers import PretrainedConfig

    vlm = tiny_vlm("llava")
    spec = _spec()
    (tmp_path / "s.json").write_text(json.dumps(spec))
    (tmp_path / "s.toml").write_text(LLAVA_TOML)
    assert read_spec(tmp_path / "s.json") == read_spec(tmp_path / "s.toml")
    a = adapter_from_spec(read_spec(tmp_path / "s.json"), tokenizer=vlm.tokenizer)
    b = adapter_from_spec(read_spec(tmp_path / "s.toml"), tokenizer=vlm.tokenizer)
    assert a == b and a.final_norm_path == "model.language_model.norm"

    class ChatConfig(PretrainedConfig):
        model_type = "internvl_chat_test"

    with pytest.raises(UnsupportedModelError, match="load_adapter_spec"):
        adapter_for(ChatConfig())
    remote = {
        "family": "internvl_chat",
        "model_types": ["internvl_chat_test"],
        "layers_path": "language_model.model.layers",
        "vision_path": "vision_model",
        "projector_path": "mlp1",
        "image_token_id": 7,
        "text_config_attr": "llm_config",
        "auto_class": "AutoModel",
        "processor_kwargs": {"max_num": 1},
    }
    try:
        got = load_adapter_spec(remote)
        assert adapter_for(ChatConfig()) is got
        assert got.final_norm_path == "language_model.model.norm" and got.image_token_id(ChatConfig()) == 7
        assert got.processor_kwargs == {"max_num": 1} and got.auto_class == "AutoModel"
    finally:
        _REGISTRY.pop("internvl_chat_test", None)


BAD = [
    ({"family": None}, "family", "missing"),
    ({"family": "has space"}, "family", "not a short name"),
    ({"model_types": "llava"}, "model_types", "not a list"),
    ({"model_types": []}, "model_types", "missing"),
    ({"layers_path": "model..layers"}, "layers_path", "dotted attribute path"),
    ({"layers_path": 3}, "layers_path", "dotted attribute path"),
    ({"final_norm_path": "model/norm"}, "final_norm_path", "dotted attribute path"),
    ({"vision_path": None}, "vision_path", "projector_path is set"),
    ({"projector_path": "a b"}, "projector_path", "dotted attribute path"),
    ({"image_token": None}, "image_token_id", "needs image_token_id or image_token"),
    ({"image_token": "<not-a-token>"}, "image_token", "not a single token"),
    ({"image_token": ""}, "image_token", "non-empty string"),
    ({"image_token_id": 5}, "image_token", "not both"),
    ({"image_token": None, "image_token_id": -1}, "image_token_id", "non-negative integer"),
    ({"image_token": None, "image_token_id": 10**9}, "image_token_id", "outside the tokenizer"),
    ({"image_token": None, "image_token_id": True}, "image_token_id", "non-negative integer"),
    ({"processor_kwargs": ["crop"]}, "processor_kwargs", "table with string keys"),
    ({"text_config_attr": 1}, "text_config_attr", "not a string"),
    ({"auto_class": "LlavaForConditionalGeneration"}, "auto_class", "not a transformers auto class"),
    ({"image_tokens_in_sequence": "no"}, "image_tokens_in_sequence", "true/false"),
    ({"processor_suffix": 1}, "processor_suffix", "not a string"),
    ({"notes": ["x"]}, "notes", "not a string"),
]


@pytest.mark.parametrize("change,field,problem", BAD, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD)])
def test_each_invalid_field_is_named_with_a_fix(change, field, problem):
    spec = {**_spec(), **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(AdapterSpecError) as e:
        adapter_from_spec(spec, tokenizer=tiny_vlm("llava").tokenizer)
    msg = str(e.value)
    assert f"field {field!r}" in msg and problem in msg and "Fix:" in msg and SPEC_FIELDS[field] in msg
    assert isinstance(e.value, CotscopeError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "change,field,problem",
    [
        ({"layers_path": "model.language_model.blocks"}, "layers_path", "does not exist"),
        ({"layers_path": "model.language_model.norm"}, "layers_path", "not a list of decoder blocks"),
        ({"final_norm_path": "model.language_model.final_ln"}, "final_norm_path", "does not exist"),
        ({"vision_path": "model.vision"}, "vision_path", "does not exist"),
        ({"projector_path": "model.projector"}, "projector_path", "does not exist"),
        ({"model_types": ["internvl_chat"]}, "model_types", "'llava' is not among"),
        ({"text_config_attr": "llm_config"}, "text_config_attr", "no attribute 'llm_config'"),
    ],
)
def test_paths_are_checked_on_the_model(change, field, problem):
    vlm = tiny_vlm("llava")
    with pytest.raises(AdapterSpecError) as e:
        adapter_from_spec({**_spec(), **change}, tokenizer=vlm.tokenizer, model=vlm.model)
    assert f"field {field!r}" in str(e.value) and problem in str(e.value)


def test_spec_file_errors(tmp_path):
    with pytest.raises(AdapterSpecError, match="not found"):
        read_spec(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("family = \n")
    with pytest.raises(AdapterSpecError, match="not valid TOML"):
        read_spec(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AdapterSpecError, match="not valid JSON"):
        read_spec(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(AdapterSpecError, match="JSON object"):
        read_spec(tmp_path / "list.json")
    (tmp_path / "s.yaml").write_text("family: x")
    with pytest.raises(AdapterSpecError, match=r"\.toml or \.json"):
        read_spec(tmp_path / "s.yaml")
    with pytest.raises(AdapterSpecError, match=r"unknown field\(s\) \['layer_path'\]"):
        adapter_from_spec({**_spec(), "layer_path": "x"})
    with pytest.raises(AdapterSpecError, match="needs a tokenizer"):
        adapter_from_spec(_spec())
