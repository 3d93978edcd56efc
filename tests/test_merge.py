"""Merging stores of one collection (analyses.io.merge): bit-identical to a one-process run; refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from store_synth import synth, write_store  # noqa: E402

from cotscope.analyses.io.merge import merge_stores  # noqa: E402
from cotscope.analyses.io.store import ActivationStore, StoreError  # noqa: E402


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_merged_parts_equal_a_one_process_store_bit_for_bit(tmp_path):
    cfg, items, arrays = synth(n_pairs=37, layers=(0, 4), d=8, positions=("last", "answer_mean"))
    write_store(tmp_path / "one", cfg, items, arrays, batch_size=6)
    for i in range(3):
        assert write_store(tmp_path / f"p{i}", cfg, items, arrays, batch_size=6, part=(i, 3)) is None
    with pytest.raises(StoreError, match="only part 0/3"):
        ActivationStore(tmp_path / "p0")
    merged = merge_stores([tmp_path / f"p{i}" for i in (2, 0, 1)], tmp_path / "m")
    assert files(tmp_path / "m") == files(tmp_path / "one")
    assert np.array_equal(merged.get("answer_mean"), arrays["answer_mean"])
    # a retried worker that wrote the same shard twice (identical bytes) is merged once
    write_store(tmp_path / "p0b", cfg, items, arrays, batch_size=6, part=(0, 3))
    merge_stores([tmp_path / "p0", tmp_path / "p0b", tmp_path / "p1", tmp_path / "p2"], tmp_path / "m2")
    assert files(tmp_path / "m2") == files(tmp_path / "one")
    with pytest.raises(StoreError, match="exists and is not empty"):
        merge_stores([tmp_path / "p0", tmp_path / "p1", tmp_path / "p2"], tmp_path / "m")


def test_parts_of_different_batch_sizes_merge_into_a_valid_store(tmp_path):
    cfg, items, arrays = synth(n_pairs=20, d=8)
    write_store(tmp_path / "a", cfg, items, {k: v for k, v in arrays.items()}, batch_size=40)  # one shard
    # a store from rows 0..39 in 8-row batches is a full store too; merging two full stores of different cuts refuses
    write_store(tmp_path / "b", cfg, items, arrays, batch_size=8)
    with pytest.raises(StoreError, match="overlap"):
        merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    # halves cut differently: part 0 of 2 at batch 20 (rows 0..19) + part 1 of 4 … at batch 10 covers 10..19 again
    write_store(tmp_path / "h0", cfg, items, arrays, batch_size=20, part=(0, 2))
    write_store(tmp_path / "h1", cfg, items, arrays, batch_size=10, part=(0, 1))
    with pytest.raises(StoreError, match="overlap|different bytes"):
        merge_stores([tmp_path / "h0", tmp_path / "h1"], tmp_path / "m")
    write_store(tmp_path / "q1", cfg, items, arrays, batch_size=20, part=(1, 2))
    m = merge_stores([tmp_path / "h0", tmp_path / "q1"], tmp_path / "m3")
    assert np.array_equal(m.get("last"), arrays["last"]) and m.manifest["batch_size"] == 20
    # rows 0..19 in one 20-row shard + rows 20..39 in two 10-row shards: renumbered in row order
    write_store(tmp_path / "t2", cfg, items, arrays, batch_size=10, part=(2, 4))
    write_store(tmp_path / "t3", cfg, items, arrays, batch_size=10, part=(3, 4))
    m = merge_stores([tmp_path / "t3", tmp_path / "h0", tmp_path / "t2"], tmp_path / "m4")
    assert [e["rows"] for e in m.shards] == [[0, 20], [20, 30], [30, 40]] and m.manifest["batch_size"] is None
    assert [e["file"] for e in m.shards] == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert np.array_equal(m.get("last"), arrays["last"])


def test_merge_refuses_different_configurations_naming_the_keys(tmp_path):
    cfg, items, arrays = synth(n_pairs=10, layers=(0, 1), d=8)
    write_store(tmp_path / "a", cfg, items, arrays, batch_size=4, part=(0, 2))
    write_store(tmp_path / "b", {**cfg, "layers": [0, 2]}, items, arrays, batch_size=4, part=(1, 2))
    with pytest.raises(StoreError, match=r"different configurations \(differ in: layers\)"):
        merge_stores([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    write_store(tmp_path / "c", cfg, items, arrays, batch_size=4, part=(1, 2), dtype="bfloat16")
    with pytest.raises(StoreError, match=r"differ in: dtype"):
        merge_stores([tmp_path / "a", tmp_path / "c"], tmp_path / "m")
    other_items = [dict(it, text=it["text"] + "!") for it in items]
    write_store(tmp_path / "d", cfg, other_items, arrays, batch_size=4, part=(1, 2))
    with pytest.raises(StoreError, match=r"differ in: items"):
        merge_stores([tmp_path / "a", tmp_path / "d"], tmp_path / "m")
    with pytest.raises(StoreError, match=r"rows 4\.\.7 are in none of the stores"):
        merge_stores([tmp_path / "a"], tmp_path / "m")
    w = write_store(tmp_path / "e", cfg, items, arrays, batch_size=4, part=(1, 2), finish=False, max_shards=1)
    w.close()
    with pytest.raises(StoreError, match="incomplete"):
        merge_stores([tmp_path / "a", tmp_path / "e"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_collected_parts_merge_to_the_one_process_store(smollm2, tmp_path):
    """Real collection (SmolLM2): two workers' parts merge into exactly the one-process store."""
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    pairs = make_pairs(generate_problems(5, seed=11), "cue")
    kw = dict(layers=[3, 12], positions=("last_prompt",), batch_size=4, progress=False)
    collect_pairs(smollm2, pairs, tmp_path / "one", **kw)
    for i in range(2):
        assert collect_pairs(smollm2, pairs, tmp_path / f"w{i}", part=(i, 2), **kw) is None
    merge_stores([tmp_path / "w0", tmp_path / "w1"], tmp_path / "m")
    assert files(tmp_path / "m") == files(tmp_path / "one")
