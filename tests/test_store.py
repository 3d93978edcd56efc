import numpy as np
import pytest

from cotscope.analyses.store import ActivationStore, StoreError, StoreWriter, split_pairs


def test_split_pairs_matches_by_pair_id():
    X = np.arange(8)[:, None].astype(float)
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 1])
    pids = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    cot, direct = split_pairs(X, labels, pids)
    assert cot[:, 0].tolist() == [0, 3, 4, 7] and direct[:, 0].tolist() == [1, 2, 5, 6]


def test_unequal_pairs_refused():
    with pytest.raises(StoreError, match="unequal count"):
        split_pairs(np.zeros((3, 2)), np.array([1, 0, 1]), np.array([0, 0, 1]))


def test_writer_round_trip_and_missing_store(tmp_path):
    items = [{"row": i, "pair_id": i // 2, "label": 1 - i % 2} for i in range(4)]
    cfg = {"model": {"model_id": "toy", "n_layers": 2, "hidden_size": 3}, "layers": [0, 1], "positions": ["last"]}
    w = StoreWriter(tmp_path / "s", cfg, items)
    w.write_shard(0, np.arange(0, 2), {"last": np.ones((2, 2, 3), np.float32)})
    w.write_shard(1, np.arange(2, 4), {"last": np.zeros((2, 2, 3), np.float32)})
    st = w.finish()
    assert st.get("last").shape == (4, 2, 3) and st.get("last", 1)[0].tolist() == [1, 1, 1]
    with pytest.raises(StoreError, match="missing manifest"):
        ActivationStore(tmp_path / "nothing")
    with pytest.raises(StoreError, match="empty stimulus set"):
        StoreWriter(tmp_path / "t", cfg, [])
