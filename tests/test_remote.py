"""Remote execution through nnsight: every request goes through ``remote="local"``, nnsight's simulation of NDIF
(the request is serialised as for the server, then deserialised with user modules hidden; cotscope's backend also
hides cotscope itself, which the server does not have) and must give the local result bit for bit.

Payload sizes per request are printed (``pytest -s``) and bounded: the weights never travel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from cotscope.probes.collect import collect_pairs
from cotscope.probes.intervene import RowSteer, generate_steered
from cotscope.probes.models.loading import load_model, wrap_model
from cotscope.probes.remote import RemoteExecutionError, backend_for, check_remote, payload_log
from cotscope.probes.stimuli import generate_problems, make_pairs

MAX_PAYLOAD = 1 << 20  # 1 MiB: the requests carry inputs and code, never the (135M-parameter) weights


def _same_store(a, b, positions):
    for p in positions:
        for l in a.layers:
            assert np.array_equal(a.get(p, l), b.get(p, l)), (p, l)


def _report(what, sent):
    sizes = [p["bytes"] for p in sent]
    print(f"\n{what}: {len(sizes)} request(s), payload bytes {sizes}")
    assert sizes and all(10_000 < s < MAX_PAYLOAD for s in sizes), sizes


def _chat(lm, text):
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def test_collection_through_the_remote_path_equals_local(smollm2, tmp_path):
    pairs = make_pairs(generate_problems(5, seed=2), "cue")  # 10 rows -> 3 batches of 4
    kw = dict(layers=[0, 13, 29], positions=("last_prompt", "answer_mean"), batch_size=4, progress=False)
    local = collect_pairs(smollm2, pairs, tmp_path / "local", **kw)
    with payload_log() as sent:
        remote = collect_pairs(smollm2, pairs, tmp_path / "remote", remote="local", batches_per_request=2, **kw)
    _same_store(local, remote, kw["positions"])
    assert [p["kind"] for p in sent] == ["collect", "collect"]  # 3 batches in 2 sessions
    _report("collection (session of 2 batches, then 1)", sent)


def test_injection_during_generation_through_the_remote_path_equals_local(smollm2):
    from cotscope.probes.evaluate import forced_answer

    rng = np.random.default_rng(0)
    v = (rng.standard_normal(smollm2.hidden_size) * 4).astype(np.float32)
    prompts = [_chat(smollm2, "What is 12 + 7? Answer directly.")] * 2 + [_chat(smollm2, "Name a colour.")] * 2
    rows = [RowSteer.none(), RowSteer({8: v, 20: v}, 3.0), RowSteer({8: v}, 6.0), RowSteer.none()]
    fa = [forced_answer(smollm2.tokenizer, 19, " {answer}")] * 2 + [
        None,
        forced_answer(smollm2.tokenizer, 3, " {answer}"),
    ]
    kw = dict(budget=4, forced=fa, positions=("last_prompt", "generated"), share_prefix=False)
    local = generate_steered(smollm2, prompts, rows, **kw)
    with payload_log() as sent:
        remote = generate_steered(smollm2, prompts, rows, remote="local", **kw)
    assert [r.token_ids for r in remote] == [r.token_ids for r in local]
    assert [r.logprob for r in remote] == [r.logprob for r in local]
    assert [r.forced_logprobs for r in remote] == [r.forced_logprobs for r in local]
    assert local[1].token_ids != local[0].token_ids  # the injection changed the generation
    _report("injection during generation (4 rows, one request)", sent)
    # sampling (per-row seeded generators travel with the request) is reproduced too
    samp = dict(budget=3, temperature=0.8, seeds=[1, 2, 3, 4], share_prefix=False)
    a = generate_steered(smollm2, prompts, rows, **samp)
    b = generate_steered(smollm2, prompts, rows, remote="local", **samp)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_tiny_vlm_collection_and_injection_with_images(tmp_path):
    from tiny_vlms import sample_image, tiny_vlm

    from cotscope.probes.models.processors import image_prompt
    from cotscope.probes.stimuli.pairs import Prompt, PromptPair

    vlm = tiny_vlm("llava")
    lm = wrap_model(vlm.model, processor=vlm.processor, model_id="tiny-llava")
    probs = generate_problems(2, seed=4)
    imgs = [sample_image(64, 48, seed=i) for i in range(4)]

    def member(text, image):
        return Prompt([{"role": "user", "content": image_prompt(vlm.processor, "<image>\n" + text)}], " 42", image)

    pairs = [
        PromptPair(i, p, "cue", member(p.question + " Think.", imgs[2 * i]), member(p.question, imgs[2 * i + 1]))
        for i, p in enumerate(probs)
    ]
    kw = dict(positions=("last_prompt", "image_mean", "answer_mean"), batch_size=2, progress=False)
    local = collect_pairs(lm, pairs, tmp_path / "local", **kw)
    with payload_log() as sent:
        remote = collect_pairs(lm, pairs, tmp_path / "remote", remote="local", **kw)
    _same_store(local, remote, kw["positions"])
    _report("tiny LLaVA collection with images", sent)

    v = np.random.default_rng(1).standard_normal(lm.hidden_size).astype(np.float32) * 4
    prompts = [vlm.prompt()] * 3
    rows = [RowSteer.none(), RowSteer({1: v}, 2.0), RowSteer({1: v, 2: v}, 1.0)]
    a = generate_steered(lm, prompts, rows, images=imgs[:3], budget=4)
    with payload_log() as sent:
        b = generate_steered(lm, prompts, rows, images=imgs[:3], budget=4, remote="local")
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.logprob for r in a] == [r.logprob for r in b]
    _report("tiny LLaVA injection with images", sent)


def test_remote_load_builds_the_model_on_meta_from_the_config(smollm2, tmp_path):
    from tiny_vlms import tiny_vlm_dir

    from cotscope.probes.models.embedded import smollm2_dir

    lm = load_model(smollm2_dir(), remote=True)
    assert lm.is_remote and lm.remote is True
    assert {p.device.type for p in lm.hf.parameters()} == {"meta"}  # nothing downloaded or loaded
    assert (lm.n_layers, lm.hidden_size) == (30, 576)
    assert lm.layer_device(3) is None  # the server decides placement
    with pytest.raises(RemoteExecutionError, match="no local weights"):
        collect_pairs(lm, make_pairs(generate_problems(1), "cue"), tmp_path / "x", remote=False, progress=False)
    vl = load_model(tiny_vlm_dir("llava"), remote=True)
    assert vl.is_vlm and (vl.n_layers, vl.hidden_size) == (4, 64)
    assert {p.device.type for p in vl.hf.parameters()} == {"meta"}

    # remote="local" on such a model: nnsight loads the weights as a server would, and the result is the local one
    sim = load_model("embedded:smollm2", remote="local")
    pairs = make_pairs(generate_problems(2, seed=5), "cue")
    kw = dict(layers=[4, 29], positions=("last_prompt",), batch_size=4, progress=False)
    _same_store(
        collect_pairs(smollm2, pairs, tmp_path / "a", **kw),
        collect_pairs(sim, pairs, tmp_path / "b", **kw),
        kw["positions"],
    )


def test_trace_code_that_needs_cotscope_fails_like_on_a_server(smollm2):
    """The strict simulation hides cotscope: a trace calling a cotscope function (not probes.traced) is refused."""
    from cotscope.probes.intervene import steer_hidden  # a cotscope function that is not shipped by value

    nm = smollm2.nnsight
    enc = dict(smollm2.tokenizer(["Hello there"], return_tensors="pt"))
    add, mask = torch.zeros(1, smollm2.hidden_size), torch.ones(1, enc["input_ids"].shape[1], dtype=torch.bool)
    with pytest.raises(ModuleNotFoundError, match="cotscope"):
        with torch.no_grad():
            with nm.trace(enc, backend=backend_for(nm, "local")):
                nm.model.layers[0].output = steer_hidden(nm.model.layers[0].output, add, mask)


def _same_traces(a, b):
    for x, y in zip(a, b, strict=True):
        assert x["record"] == y["record"]
        assert x["tensors"].keys() == y["tensors"].keys()
        for k in x["tensors"]:
            assert np.array_equal(x["tensors"][k], y["tensors"][k]), k


def test_attention_capture_through_the_remote_path_equals_local(smollm2, tmp_path):
    """The traced capture reads each chosen layer's attention inputs inside the generation and computes the query row
    with the model file's own eager function; the local ``"rows"`` switch runs that same function on the same inputs
    from a registered kernel. Same code on the same tensors: equal bit for bit (tokens, rows, key-type masses),
    locally and through the remote simulation (one request per batch)."""
    from cotscope.analyses.attention_store import AttentionRun
    from cotscope.probes.attention import CaptureRequest, capture_batch, capture_run

    reqs = [
        CaptureRequest("a", "What is 12 + 7? Let's think step by step.", question="What is 12 + 7?"),
        CaptureRequest("b", "Name a colour."),
    ]
    kw = dict(layers=[3, 20, 29], heads=[0, 4, 8], max_new_tokens=6)
    rows = capture_batch(smollm2, reqs, switch="rows", **kw)
    traced = capture_batch(smollm2, reqs, switch="traced", **kw)
    _same_traces(rows, traced)
    with payload_log() as sent:
        remote = capture_batch(smollm2, reqs, remote="local", **kw)  # switch=None -> "traced" remotely
    _same_traces(rows, remote)
    assert [p["kind"] for p in sent] == ["attention"]
    _report("SmolLM2 attention capture (2 prompts, 3 layers x 3 heads, 6 steps)", sent)
    # a model loaded for remote execution (built from its config, as for NDIF): remote by default, same traces
    sim = load_model("embedded:smollm2", remote="local")
    assert sim.is_remote
    _same_traces(rows, capture_batch(sim, reqs, **kw))

    # a whole run: batches of 1 (two batches travel as one session request); the remote store holds the local
    # traced store's arrays
    local_run = capture_run(smollm2, reqs, tmp_path / "local", switch="traced", progress=False, **kw)
    with payload_log() as sent:
        remote_run = capture_run(
            smollm2, reqs, tmp_path / "remote", remote="local", progress=False, batches_per_request=2, **kw
        )
    assert len(sent) == 1
    _report("SmolLM2 attention run, 2 batches in one session", sent)
    a, b = AttentionRun(tmp_path / "local"), AttentionRun(tmp_path / "remote")
    assert a.manifest["config_hash"] == b.manifest["config_hash"] and a.manifest["switch"] == "traced"
    assert len(local_run) == len(remote_run) == 2
    for i in range(2):
        ta, tb = a.trace(i), b.trace(i)
        assert ta.record == tb.record
        assert np.array_equal(ta.rows, tb.rows) and np.array_equal(ta.mass, tb.mass)


def test_attention_capture_of_a_tiny_vlm_through_the_remote_path_equals_local():
    """With an image: the same equality on a tiny LLaVA (image keys typed from the processor's mask)."""
    from tiny_vlms import sample_image, tiny_vlm

    from cotscope.probes.attention import CaptureRequest, capture_batch

    vlm = tiny_vlm("llava")
    lm = wrap_model(vlm.model, processor=vlm.processor, model_id="tiny-llava")
    reqs = [CaptureRequest(f"r{i}", "Describe the picture.", image=sample_image(64, 48, seed=i)) for i in range(2)]
    kw = dict(layers=[1, 3], max_new_tokens=4)
    local = capture_batch(lm, reqs, switch="rows", **kw)
    with payload_log() as sent:
        remote = capture_batch(lm, reqs, remote="local", **kw)
    _same_traces(local, remote)
    assert all(t["record"]["n_keys_by_type"]["image"] > 0 for t in remote)
    _report("tiny LLaVA attention capture with images", sent)


def test_cli_attention_with_remote_local_equals_the_local_traced_capture(tmp_path):
    """``cotscope attention --remote local`` (the reference VLM) gives the numbers of the same capture run here."""
    import json

    from cotscope.cli import main
    from cotscope.stages.attention import run_attention_demo

    with payload_log() as sent:
        assert main(["attention", "--remote", "local", "--n-items", "1", "--max-new-tokens", "4",
                     "--run-dir", str(tmp_path / "remote")]) == 0  # fmt: skip
    assert sent and {p["kind"] for p in sent} == {"attention"}
    remote = json.loads((tmp_path / "remote" / "analysis" / "attention_shift.json").read_text())["summary"]
    local = run_attention_demo(
        load_model("embedded:smolvlm"), None, tmp_path / "local", n_items=1, max_new_tokens=4, switch="traced",
        figures=False, progress=False,
    )  # fmt: skip
    assert remote["switch"] == local["switch"] == "traced"
    for k in ("cot", "direct", "ivt_lr"):  # R/F, R_q/F_norm, entropy per condition, and the IVT-LR comparison
        assert remote[k] == json.loads(json.dumps(local[k])), k


def test_remote_attention_capture_refuses_kernel_swapping_switches(smollm2):
    from cotscope.probes.attention import CaptureRequest, capture_batch, recording

    with pytest.raises(RemoteExecutionError, match="switch='traced'"):
        capture_batch(
            smollm2, [CaptureRequest("a", "Hi")], layers=[0], max_new_tokens=1, switch="layers", remote="local"
        )
    with pytest.raises(Exception, match="nnsight generation"):
        with recording(smollm2, [0], None, "traced"):
            pass
    with pytest.raises(RemoteExecutionError, match="remote="):
        check_remote("ndif")
    with pytest.raises(Exception, match="share_prefix=True"):
        generate_steered(
            smollm2, [_chat(smollm2, "Hi")], [None], budget=1, positions="generated", share_prefix=True, remote="local"
        )


def test_cli_collect_with_remote_local_equals_the_local_cli_run(tmp_path):
    """``cotscope collect --remote local`` sends the traces through nnsight's simulation of NDIF; same bytes as local."""
    from cotscope.analyses.store import ActivationStore
    from cotscope.cli import main

    common = ["collect", "--n", "3", "--layers", "0,29", "--positions", "last_prompt", "--batch-size", "4"]
    with payload_log() as sent:
        assert main([*common, "--remote", "local", "--out", str(tmp_path / "remote")]) == 0
    assert sent and all(p["kind"] == "collect" for p in sent)
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    a, b = ActivationStore(tmp_path / "local"), ActivationStore(tmp_path / "remote")
    _same_store(a, b, ["last_prompt"])
