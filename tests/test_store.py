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


# ------------------------------------------------------------------------------------------ store format v2
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from store_synth import synth, write_store, write_v1_store  # noqa: E402

from cotscope.analyses.io import tensorfile as tf  # noqa: E402
from cotscope.analyses.io import verify as verify_mod  # noqa: E402
from cotscope.analyses.io.lock import LockedError  # noqa: E402
from cotscope.analyses.io.store import INDEX, MANIFEST, tensor_name  # noqa: E402


def test_slice_read_equals_full_read_and_reads_only_that_slice(tmp_path, monkeypatch):
    cfg, items, arrays = synth(n_pairs=23, layers=(0, 3, 5), d=12, positions=("last", "last_prompt"))
    st = write_store(tmp_path / "s", cfg, items, arrays, batch_size=7)  # uneven shards: 7,7,7,…,4
    for p, X in arrays.items():
        assert np.array_equal(st.get(p), X)  # all layers
        for li, l in enumerate(cfg["layers"]):
            assert np.array_equal(st.read_slice(p, l), X[:, li])  # one slice
            assert np.array_equal(st.read_rows(p, l, 5, 30), X[5:30, li])  # a row range across shards
            cot, direct = st.paired(p, l)
            ref_c, ref_d = split_pairs(X[:, li], st.labels, st.pair_ids)
            assert np.array_equal(cot, ref_c) and np.array_equal(direct, ref_d)
            chunks = list(st.iter_pairs(p, l, chunk_pairs=5))
            assert np.array_equal(np.concatenate([c for _, c, _ in chunks]), ref_c)
    assert st.get("last", -1).shape == (46, 12)  # negative layer: counted from n_layers
    # reading one slice reads exactly that slice's bytes of array data, nothing of the other layers/rules
    seen = []
    real = tf._pread_exact
    monkeypatch.setattr(
        tf, "_pread_exact", lambda fd, buf, off, path: (seen.append(len(buf)), real(fd, buf, off, path))
    )
    st.read_slice("last_prompt", 3)
    assert sum(seen) == 46 * 12 * 4


def test_float16_and_bfloat16_round_trip(tmp_path):
    import torch
    from safetensors import safe_open

    cfg, items, arrays = synth(n_pairs=10, d=32)
    X = arrays["last"]
    X[0, 0, :3] = [np.nan, np.inf, -0.0]
    f32 = write_store(tmp_path / "f32", cfg, items, arrays, batch_size=8)
    for dtype, ref in [
        ("float16", X.astype(np.float16).astype(np.float32)),
        ("bfloat16", torch.from_numpy(X).to(torch.bfloat16).float().numpy()),
    ]:
        st = write_store(tmp_path / dtype, cfg, items, arrays, batch_size=8, dtype=dtype)
        assert st.dtype == dtype and json.loads((tmp_path / dtype / MANIFEST).read_text())["dtype"] == dtype
        got = st.get("last")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)  # NaN == NaN for assert_array_equal
        size = sum(f.stat().st_size for f in (tmp_path / dtype).glob("shard-*"))
        size32 = sum(f.stat().st_size for f in (tmp_path / "f32").glob("shard-*"))
        assert size < 0.6 * size32
        with safe_open(str(tmp_path / dtype / "shard-00000.safetensors"), framework="pt") as fh:  # standard reader
            t = fh.get_tensor(tensor_name("last", 1))
            assert t.dtype == getattr(torch, dtype) and torch.equal(t.float(), torch.from_numpy(ref[:8, 1]))
    assert f32.dtype == "float32"
    hashes = {json.loads((tmp_path / d / MANIFEST).read_text())["config_hash"] for d in ("f32", "float16", "bfloat16")}
    assert len(hashes) == 3  # the storage dtype is configuration


def test_index_append_costs_o1_and_manifest_is_not_rewritten(tmp_path):
    cfg, items, arrays = synth(n_pairs=120, layers=(0,), d=4)
    w = write_store(tmp_path / "s", cfg, items, arrays, batch_size=2, finish=False, max_shards=0)
    man = tmp_path / "s" / MANIFEST
    ino, mtime = man.stat().st_ino, man.stat().st_mtime_ns
    grown = []
    for b in w.todo():
        before = (tmp_path / "s" / INDEX).stat().st_size
        a, e = w.batch_rows(b)
        w.write_shard(b, np.arange(a, e), {"last": arrays["last"][a:e]})
        grown.append((tmp_path / "s" / INDEX).stat().st_size - before)
    assert len(grown) == 120 and max(grown) <= 200  # one short line per shard …
    assert max(grown[-10:]) - min(grown[:10]) <= 8  # … whatever k is (only digits grow)
    assert w.out.log.bytes_written == sum(grown)
    assert (man.stat().st_ino, man.stat().st_mtime_ns) == (ino, mtime)  # manifest untouched per shard
    w.finish()
    assert man.stat().st_mtime_ns != mtime and ActivationStore(tmp_path / "s").n_items == 240


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_first_read_checksum_catches_a_flipped_byte_and_opt_out_skips_it(tmp_path, monkeypatch):
    monkeypatch.delenv("COTSCOPE_TRUST_STORE", raising=False)
    cfg, items, arrays = synth(n_pairs=12, d=8)
    write_store(tmp_path / "s", cfg, items, arrays, batch_size=8)
    shard = tmp_path / "s" / "shard-00001.safetensors"
    info = tf.read_header(shard).tensors[tensor_name("last", 2)]
    _flip_byte(shard, info.begin + 5)  # same size, one bit of layer 2 changed
    verify_mod.forget()
    st = ActivationStore(tmp_path / "s")  # opening is cheap: nothing hashed yet
    with pytest.raises(StoreError, match=r"shard-00001\.safetensors.*sha256.*trust=True.*COTSCOPE_TRUST_STORE=1"):
        st.read_slice("last", 0)  # any read of that shard checks it
    trusted = ActivationStore(tmp_path / "s", trust=True)
    assert not np.array_equal(trusted.read_slice("last", 2), arrays["last"][:, 2])  # read as is, unchecked
    monkeypatch.setenv("COTSCOPE_TRUST_STORE", "1")
    assert ActivationStore(tmp_path / "s").read_slice("last", 0).shape == (24, 8)
    with pytest.raises(StoreError, match="corrupt"):
        ActivationStore(tmp_path / "s", verify=True)  # asked: always checks
    monkeypatch.delenv("COTSCOPE_TRUST_STORE")
    # an intact store is hashed once per process, not once per read
    write_store(tmp_path / "ok", cfg, items, arrays, batch_size=8)
    verify_mod.reset_stats()
    ok = ActivationStore(tmp_path / "ok")
    for l in (0, 1, 2):
        ok.read_slice("last", l)
    assert verify_mod.STATS["files"] == 3
    ActivationStore(tmp_path / "ok").read_slice("last", 0)
    assert verify_mod.STATS["files"] == 3


def test_other_format_versions_are_refused_with_the_migrate_command(tmp_path):
    cfg, items, arrays = synth(n_pairs=6, d=4)
    write_v1_store(tmp_path / "v1", cfg, items, arrays)
    for call in (lambda: ActivationStore(tmp_path / "v1"), lambda: StoreWriter(tmp_path / "v1", cfg, items)):
        with pytest.raises(StoreError, match=rf"version 1.*`cotscope store migrate {tmp_path / 'v1'}`"):
            call()
    write_store(tmp_path / "v3", cfg, items, arrays)
    m = json.loads((tmp_path / "v3" / MANIFEST).read_text())
    (tmp_path / "v3" / MANIFEST).write_text(json.dumps({**m, "format_version": 3}))
    with pytest.raises(StoreError, match="newer than this cotscope reads.*upgrade"):
        ActivationStore(tmp_path / "v3")


def test_resume_checks_sizes_drops_bad_shards_and_torn_index_lines(tmp_path):
    cfg, items, arrays = synth(n_pairs=20, d=4)
    w = write_store(tmp_path / "s", cfg, items, arrays, batch_size=8, finish=False, max_shards=4)
    w.close()
    with open(tmp_path / "s" / "shard-00001.safetensors", "r+b") as fh:
        fh.truncate(50)
    with open(tmp_path / "s" / INDEX, "a") as fh:
        fh.write('{"bytes":12,"file":"shard-0000')  # a torn append
    verify_mod.reset_stats()
    w2 = StoreWriter(tmp_path / "s", {**cfg, "batch_size": 8}, items)
    assert w2.done_shards() == {0, 2, 3} and w2.todo() == [1, 4]
    assert verify_mod.STATS["files"] == 0  # resume stats files, never hashes
    assert (tmp_path / "s" / INDEX).read_text().endswith("\n")
    with pytest.raises(StoreError, match="batch_size=8"):  # shards are batches: same size to resume
        StoreWriter(tmp_path / "s", {**cfg, "batch_size": 4}, items)
    for b in w2.todo():
        a, e = w2.batch_rows(b)
        w2.write_shard(b, np.arange(a, e), {"last": arrays["last"][a:e]})
    st = w2.finish()
    assert np.array_equal(st.get("last"), arrays["last"])
    with pytest.raises(StoreError, match="different configuration.*differs in: layers"):
        StoreWriter(tmp_path / "s", {**cfg, "layers": [0, 1], "batch_size": 8}, items)


LOCK_CHILD = """
import sys, numpy as np
from cotscope.analyses.io.store import StoreWriter
cfg = {"model": {"model_id": "synthetic", "n_layers": 1, "hidden_size": 4}, "layers": [0], "positions": ["last"],
       "batch_size": 2}
items = [{"row": i, "pair_id": i // 2, "label": 1 - i % 2} for i in range(4)]
w = StoreWriter(sys.argv[1], cfg, items)
if sys.argv[2] == "die":
    w.write_shard(0, np.arange(0, 2), {"last": np.ones((2, 1, 4), np.float32)})
    import os, signal; os.kill(os.getpid(), signal.SIGKILL)
print("got the lock")
"""


def _child(path: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LOCK_CHILD, str(path), mode], capture_output=True, text=True, timeout=120
    )


def test_second_writer_process_gets_an_error_naming_the_holder(tmp_path):
    import socket

    cfg = {
        "model": {"model_id": "synthetic", "n_layers": 1, "hidden_size": 4},
        "layers": [0],
        "positions": ["last"],
        "batch_size": 2,
    }
    items = [{"row": i, "pair_id": i // 2, "label": 1 - i % 2} for i in range(4)]
    w = StoreWriter(tmp_path / "s", cfg, items)
    r = _child(tmp_path / "s", "wait")
    assert r.returncode != 0 and "StoreLockedError" in r.stderr
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started 20" in r.stderr
    assert "being written by another process" in r.stderr
    write_store(tmp_path / "r", {**cfg}, items, {"last": np.zeros((4, 1, 4), np.float32)}, batch_size=2)
    # readers never lock: a store can be read while another process writes elsewhere, and vice versa
    assert ActivationStore(tmp_path / "r").n_items == 4
    w.close()
    r = _child(tmp_path / "s", "wait")
    assert r.returncode == 0 and "got the lock" in r.stdout


def test_stale_lock_of_a_killed_writer_is_taken_over_and_resumed(tmp_path, caplog):
    r = _child(tmp_path / "s", "die")
    assert r.returncode == -9
    holder = json.loads((tmp_path / "s" / "store.lock").read_text())
    cfg = {
        "model": {"model_id": "synthetic", "n_layers": 1, "hidden_size": 4},
        "layers": [0],
        "positions": ["last"],
        "batch_size": 2,
    }
    items = [{"row": i, "pair_id": i // 2, "label": 1 - i % 2} for i in range(4)]
    with caplog.at_level("WARNING"):
        w = StoreWriter(tmp_path / "s", cfg, items)
    assert f"pid {holder['pid']}" in caplog.text and "ended without releasing" in caplog.text
    assert json.loads((tmp_path / "s" / "store.lock").read_text())["pid"] == os.getpid()
    assert w.done_shards() == {0} and w.todo() == [1]
    w.write_shard(1, np.arange(2, 4), {"last": np.zeros((2, 1, 4), np.float32)})
    w.finish()
    assert not (tmp_path / "s" / "store.lock").exists()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    cfg, items, arrays = synth(n_pairs=4, d=4)
    a = StoreWriter(tmp_path / "s", {**cfg, "batch_size": 4}, items)
    b = StoreWriter(tmp_path / "s", {**cfg, "batch_size": 4}, items)  # same process: shares the lock
    a.close()
    assert (tmp_path / "s" / "store.lock").exists()
    b.close()
    assert not (tmp_path / "s" / "store.lock").exists()
    assert issubclass(LockedError, ValueError)
