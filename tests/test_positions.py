"""One vocabulary: Positions (steering), TokenRule (reading), the layer convention and the layer resolver."""

import numpy as np
import pytest
import torch

from cotscope.errors import CotscopeError
from cotscope.probes.positions import Positions, PositionsError, TokenRule, TokenRuleError, parse_token_rules

# ---------------------------------------------------------------- Positions: one parser, old spellings accepted


@pytest.mark.parametrize(
    "spec,names",
    [
        ("first", ("first",)),
        (("generated", "last_prompt"), ("last_prompt", "generated")),  # intervene's tuple form
        ("last_prompt+generated", ("last_prompt", "generated")),  # the sweep table's spelling
        ("prompt, generated", ("prompt", "generated")),
        ("all", ("prompt", "generated")),  # apply's spellings
        ("last", ("last_prompt", "generated")),
        (["last", "first"], ("first", "last_prompt", "generated")),
    ],
)
def test_names_parse_to_canonical_atoms(spec, names):
    p = Positions.parse(spec)
    assert p.names == names and p.index is None
    assert Positions.parse(str(p)) == p  # str() is itself a valid spelling
    assert Positions.parse(p) is p


@pytest.mark.parametrize(
    "spec,forward", [(3, 3), (-1, -1), ([1, 2], [1, 2]), (np.int64(2), 2), (slice(1, None), slice(1, None))]
)
def test_indices_parse_for_one_forward_pass(spec, forward):
    assert Positions.parse(spec).forward() == forward


def test_forward_and_generation_views():
    assert Positions.parse("all").forward() == "all" and Positions.parse("prompt").forward() == "all"
    assert Positions.parse("last").forward() == "last" and Positions.parse("last_prompt").forward() == "last"
    with pytest.raises(PositionsError, match="positions='first'.*generate_steered"):
        Positions.parse("first").forward()
    with pytest.raises(PositionsError, match="only generated tokens"):
        Positions.parse("generated").forward()
    with pytest.raises(PositionsError, match="token indices.*during generation use names"):
        Positions.parse([0, 1]).generation()


@pytest.mark.parametrize(
    "bad,msg",
    [
        ("middle", "unknown position 'middle'"),
        (2.5, "positions=2.5"),
        (True, "is a bool"),
        ((), "no positions given"),
        (["first", 1], "mixes"),
        (None, "cannot be read"),
    ],
)
def test_bad_positions_name_the_valid_spellings(bad, msg):
    with pytest.raises(PositionsError, match=msg) as e:
        Positions.parse(bad)
    assert "'last_prompt'" in str(e.value) or "bool" in str(e.value) or "mixes" in str(e.value)
    assert isinstance(e.value, CotscopeError) and isinstance(e.value, ValueError)


def test_intervene_and_apply_read_the_same_type():
    from cotscope.probes.apply import _check_positions
    from cotscope.probes.intervene import InjectionError, normalize_positions

    assert normalize_positions("last") == ("last_prompt", "generated")  # apply's spelling, during generation
    assert normalize_positions(Positions.parse("all")) == ("prompt", "generated")
    assert _check_positions("last_prompt") == "last"  # intervene's spelling, one forward pass
    assert _check_positions(Positions.parse([4])) == [4]
    with pytest.raises(InjectionError, match="unknown injection position 'middle'"):
        normalize_positions("middle")
    with pytest.raises(InjectionError, match="token indices"):
        normalize_positions(3)


# ---------------------------------------------------------------- token rules: one type for reading


def test_token_rules():
    assert parse_token_rules("last_prompt, answer_mean,last_prompt") == (TokenRule.LAST_PROMPT, TokenRule.ANSWER_MEAN)
    assert parse_token_rules(["last", TokenRule.IMAGE_MEAN]) == (TokenRule.LAST, TokenRule.IMAGE_MEAN)
    assert TokenRule.parse("mean") is TokenRule.MEAN and str(TokenRule.LAST) == "last"
    assert TokenRule.LAST_PROMPT == "last_prompt"  # a str: stored metadata compares equal
    with pytest.raises(TokenRuleError, match=r"unknown token rule 'mean'.*\['last_prompt', 'last'"):
        parse_token_rules(["mean"], allowed=("last_prompt", "last"))
    with pytest.raises(TokenRuleError, match="no token rules"):
        parse_token_rules("")


def test_readers_use_the_token_rule_type():
    from cotscope.probes import collect, vision_latents

    assert all(TokenRule(p) for p in collect.POSITIONS) and all(TokenRule(p) for p in vision_latents.TOKEN_RULES)


def test_collect_refuses_unknown_token_rules(smollm2):
    from cotscope.probes.collect import CollectionError, collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    with pytest.raises(CollectionError, match=r"unknown positions.*'middle'.*\['last_prompt', 'last', 'answer_mean'"):
        collect_pairs(smollm2, make_pairs(generate_problems(1), "cue"), "unused", positions="last_prompt,middle")


# ---------------------------------------------------------------- layer convention: -1 is the last block everywhere


def test_minus_one_is_the_last_block_everywhere(smollm2):
    from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
    from cotscope.analyses.layers import normalize_layer
    from cotscope.probes.apply import steering_vectors
    from cotscope.probes.intervene import build_controls

    n, d = smollm2.n_layers, smollm2.hidden_size
    rng = np.random.default_rng(0)
    v, w = rng.normal(size=d), rng.normal(size=d)
    last = n - 1
    assert normalize_layer(-1, n) == last and smollm2.check_layers([-1]) == [last]
    assert DirectionSet({-1: v}, DirectionMeta(n_layers=n)).layers == [last]
    assert list(steering_vectors(v, layers=[-1], n_layers=n)) == [last]
    assert list(steering_vectors(DirectionSet({-1: v}, DirectionMeta()), n_layers=n)) == [last]
    # intervene: {-1: v, 12: w} feeds the last block from v and block 12 from w (not "every layer" from v)
    iv = build_controls({-1: v, 12: w}, (d, n), [12, last], controls=("unfiltered",), filter="none", cutoff=None)
    assert iv.src_layer == {12: 12, last: last}
    np.testing.assert_allclose(iv.vectors["unfiltered"][last], v.astype(np.float32))
    np.testing.assert_allclose(iv.vectors["unfiltered"][12], w.astype(np.float32))
    # a bare vector is layer-agnostic: it feeds every target layer, without pretending to be block -1
    iv = build_controls(v, (d, n), [3, 12], controls=("unfiltered",), filter="none", cutoff=None)
    assert sorted(iv.vectors["unfiltered"]) == [3, 12]


def test_vision_latents_accepts_negative_layers():
    from tiny_vlms import sample_image, tiny_vlm

    from cotscope.probes.vision_latents import VisionLatentsError, collect_vision_latents

    vlm = tiny_vlm("idefics2")
    kw = dict(images=[sample_image()], prompts=vlm.prompt(), connector_path="model.connector", progress=False)
    n = vlm.model.config.text_config.num_hidden_layers
    a = collect_vision_latents(vlm.model, vlm.processor, layers=[-1], **kw)
    b = collect_vision_latents(vlm.model, vlm.processor, layers=[n - 1], **kw)
    assert list(a["hidden"]) == [n - 1] and np.array_equal(a["hidden"][n - 1], b["hidden"][n - 1])
    with pytest.raises(VisionLatentsError, match="unknown token rule 'answer_mean'"):
        collect_vision_latents(vlm.model, vlm.processor, token_rule="answer_mean", **kw)


# ---------------------------------------------------------------- one layer resolver, on the adapter


def test_one_layer_resolver(smollm2):
    from cotscope.probes.apply import decoder_layers
    from cotscope.probes.models.registry import LayerPathError, ModelAdapter
    from cotscope.probes.vision_latents import VisionLatentsError, find_decoder_layers

    hf = smollm2.hf
    path, blocks = ModelAdapter.find_layers(hf)
    assert path == smollm2.adapter.layers_path == "model.layers" and blocks is hf.model.layers
    assert decoder_layers(hf) is blocks and find_decoder_layers(hf) == (path, blocks)
    assert smollm2.layers() is blocks
    assert len(decoder_layers(smollm2.nnsight)) == smollm2.n_layers  # nnsight envoys too
    # an unregistered architecture falls back to known layouts
    gpt2 = torch.nn.Module()
    gpt2.transformer = torch.nn.Module()
    gpt2.transformer.h = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    assert ModelAdapter.find_layers(gpt2)[0] == "transformer.h"
    assert ModelAdapter.find_layers(hf, "model.layers")[1] is blocks
    for call, err in (
        (lambda: ModelAdapter.find_layers(torch.nn.Linear(2, 2)), LayerPathError),
        (lambda: decoder_layers(torch.nn.Linear(2, 2)), LayerPathError),
        (lambda: find_decoder_layers(torch.nn.Linear(2, 2)), VisionLatentsError),
    ):
        with pytest.raises(err, match="layers_path"):
            call()
    with pytest.raises(LayerPathError, match="'model.nope' does not name"):
        ModelAdapter.find_layers(hf, "model.nope")


def test_steer_reads_every_positions_spelling(smollm2):
    """cs.steer takes the same Positions type: intervene's 'last_prompt' is apply's 'last' in one forward pass."""
    from cotscope.probes.steer import steer

    rng = np.random.default_rng(1)
    v = rng.normal(size=smollm2.hidden_size)
    ids = smollm2.tokenizer("The answer is", return_tensors="pt")
    out = {}
    for spec in ("last", "last_prompt", Positions.parse("last"), "all"):
        with torch.no_grad(), steer(smollm2, v, 4.0, layers=[5], positions=spec):
            out[str(spec)] = smollm2.hf(**ids).logits
    assert torch.equal(out["last"], out["last_prompt"]) and torch.equal(out["last"], out["last_prompt+generated"])
    assert not torch.equal(out["last"], out["all"])
    with pytest.raises(PositionsError, match="generate_steered"):
        with steer(smollm2, v, 4.0, layers=[5], positions="first"):
            pass
