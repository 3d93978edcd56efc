import numpy as np
import pytest
import torch

from cotscope.analyses.store import ActivationStore, StoreError
from cotscope.probes.collect import CollectionError, collect_pairs, encode_batch
from cotscope.probes.stimuli import generate_problems, make_pairs


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(generate_problems(5, seed=11), "cue")


def test_residuals_equal_hf_hidden_states(smollm2, pairs, tmp_path):
    layers = [0, 7, 28, 29]
    store = collect_pairs(
        smollm2,
        pairs,
        tmp_path / "s",
        layers=layers,
        positions=("last_prompt", "last", "answer_mean"),
        batch_size=10,
        progress=False,
    )
    texts = [it["text"] for it in store.items]
    enc = encode_batch(smollm2, texts)
    with torch.no_grad():
        hs = smollm2.hf(**enc, output_hidden_states=True).hidden_states
    n_ans = torch.tensor([it["n_answer_tokens"] for it in store.items])
    T = enc["input_ids"].shape[1]
    for li, l in enumerate(layers[:-1]):  # hidden_states[30] is after the final norm, so compare up to layer 28
        ref = hs[l + 1]
        assert torch.allclose(torch.from_numpy(store.get("last", l)), ref[:, -1], atol=1e-4)
        lp = ref[torch.arange(len(texts)), T - 1 - n_ans]
        assert torch.allclose(torch.from_numpy(store.get("last_prompt", l)), lp, atol=1e-4)
        am = torch.stack([ref[r, T - n :].mean(0) for r, n in enumerate(n_ans.tolist())])
        assert torch.allclose(torch.from_numpy(store.get("answer_mean", l)), am, atol=1e-4)
    # the last block's raw output is the final norm's input
    with torch.no_grad():
        normed = smollm2.hf.model.norm(torch.from_numpy(store.get("last", 29)))
    assert torch.allclose(normed, hs[30][:, -1], atol=1e-3)
    assert store.labels.tolist() == [1, 0] * 5 and store.pair_ids.tolist() == sorted(list(range(5)) * 2)


def test_interrupted_collection_resumes_identically(smollm2, pairs, tmp_path):
    kw = dict(layers=[3, 12], positions=("last_prompt",), batch_size=4, progress=False)
    full = collect_pairs(smollm2, pairs, tmp_path / "full", **kw)
    assert collect_pairs(smollm2, pairs, tmp_path / "part", max_batches=1, **kw) is None
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(tmp_path / "part")
    resumed = collect_pairs(smollm2, pairs, tmp_path / "part", **kw)
    assert np.array_equal(resumed.get("last_prompt"), full.get("last_prompt"))


def test_corrupt_shard_is_detected_and_only_it_recomputed(smollm2, pairs, tmp_path):
    kw = dict(layers=[2], positions=("last_prompt",), batch_size=4, progress=False)
    store = collect_pairs(smollm2, pairs, tmp_path / "s", **kw)
    ref = store.get("last_prompt").copy()
    shard = tmp_path / "s" / "shard-00001.safetensors"
    other = tmp_path / "s" / "shard-00000.safetensors"
    mtime = other.stat().st_mtime_ns
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(StoreError, match="corrupt or truncated"):
        ActivationStore(tmp_path / "s").get("last_prompt")
    with pytest.raises(StoreError, match="corrupt or truncated"):
        ActivationStore(tmp_path / "s", verify=True)
    again = collect_pairs(smollm2, pairs, tmp_path / "s", **kw)
    assert np.array_equal(again.get("last_prompt"), ref)
    assert other.stat().st_mtime_ns == mtime


def test_bad_requests_get_clear_errors(smollm2, pairs, tmp_path):
    with pytest.raises(ValueError, match=r"layer 30 is out of range .*valid 0\.\.29"):
        collect_pairs(smollm2, pairs, tmp_path / "a", layers=[30], progress=False)
    with pytest.raises(CollectionError, match="empty stimulus set"):
        collect_pairs(smollm2, [], tmp_path / "b", progress=False)
    with pytest.raises(CollectionError, match="unknown positions"):
        collect_pairs(smollm2, pairs, tmp_path / "c", positions=("middle",), progress=False)
    with pytest.raises(CollectionError, match="needs image stimuli"):
        collect_pairs(smollm2, pairs, tmp_path / "d", positions=("image_mean",), progress=False)
    collect_pairs(smollm2, pairs, tmp_path / "e", layers=[1], positions=("last",), progress=False)
    with pytest.raises(StoreError, match="different configuration"):
        collect_pairs(smollm2, pairs, tmp_path / "e", layers=[2], positions=("last",), progress=False)
    assert ActivationStore(tmp_path / "e").layers == [1]  # nothing already written was lost
    with pytest.raises(StoreError, match="not in store"):
        ActivationStore(tmp_path / "e").get("last", 5)


def test_negative_layers_and_all_tokens(smollm2, pairs, tmp_path):
    store = collect_pairs(
        smollm2, pairs[:1], tmp_path / "s", layers=[-1, 0], positions=("last",), all_tokens=True, progress=False
    )
    assert store.layers == [0, 29]
    a = store.all_tokens(0)
    assert a.shape[0] == 2 and np.allclose(a[:, -1], store.get("last")[0], atol=1e-5)
