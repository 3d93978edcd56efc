"""Store migration v1 → v2 (analyses.io.migrate) and the `cotscope store` command (cotscope.commands.store)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import store_oracle as O  # noqa: E402
from store_synth import synth, write_store, write_v1_store  # noqa: E402

from cotscope.analyses.io import migrate as migrate_mod  # noqa: E402
from cotscope.analyses.io.migrate import migrate_store  # noqa: E402
from cotscope.analyses.io.store import ActivationStore, StoreError, StoreWriter  # noqa: E402
from cotscope.analyses.layer_sweep import analyse_store  # noqa: E402
from cotscope.commands.store import main  # noqa: E402


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_migrated_store_gives_identical_arrays_and_analysis(tmp_path):
    cfg, items, arrays = synth(n_pairs=30, layers=(0, 2, 3), d=16, positions=("last", "last_prompt"))
    v1 = write_v1_store(tmp_path / "s", cfg, items, arrays, batch_size=8)
    ref = {p: v1.get(p).copy() for p in arrays}
    migrate_store(tmp_path / "s")
    st = ActivationStore(tmp_path / "s")
    assert st.manifest["format_version"] == 2 and st.manifest["batch_size"] == 8
    for p in arrays:
        assert np.array_equal(st.get(p), ref[p])  # bit-identical arrays
    direct = write_store(tmp_path / "v2", cfg, items, arrays, batch_size=8)
    assert files(tmp_path / "s") == files(tmp_path / "v2")  # = a store written as v2
    a = analyse_store(st, "last", n_perm=20, progress=False)
    b = analyse_store(direct, "last", n_perm=20, progress=False)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())  # identical analysis
    assert migrate_store(tmp_path / "s") == tmp_path / "s"  # v2: nothing to do
    assert sorted(os.listdir(tmp_path)) == ["s", "v2"]  # no leftovers


def test_interrupted_migration_resumes_and_a_crash_between_renames_is_finished(tmp_path, monkeypatch):
    cfg, items, arrays = synth(n_pairs=30, d=8)
    write_v1_store(tmp_path / "s", cfg, items, arrays, batch_size=8)
    calls = {"n": 0}
    real = StoreWriter.write_shard

    def crash_after_two(self, *a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        migrate_store(tmp_path / "s")
    monkeypatch.setattr(StoreWriter, "write_shard", real)
    assert (tmp_path / ".s.v2-migrating").is_dir()
    with pytest.raises(StoreError, match="store migrate"):
        ActivationStore(tmp_path / "s")  # still v1 until the swap
    done = []
    monkeypatch.setattr(StoreWriter, "write_shard", lambda self, i, *a, **k: (done.append(i), real(self, i, *a, **k)))
    real_replace = os.replace

    def crash_second_rename(src, dst):  # old store moved aside; the new one not yet moved in
        if str(src).endswith(".v2-migrating"):
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(migrate_mod.os, "replace", crash_second_rename)
    with pytest.raises(OSError, match="power cut"):
        migrate_store(tmp_path / "s")
    assert done == list(range(2, 8)) and not (tmp_path / "s").exists()  # resumed: only the rest written
    monkeypatch.setattr(migrate_mod.os, "replace", real_replace)
    migrate_store(tmp_path / "s")
    assert np.array_equal(ActivationStore(tmp_path / "s").get("last"), arrays["last"])
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_incomplete_v1_store_becomes_a_resumable_v2_store(tmp_path):
    cfg, items, arrays = synth(n_pairs=12, d=8)
    w = O.V1StoreWriter(tmp_path / "s", {**cfg, "batch_size": 8}, items)
    w.write_shard(0, np.arange(0, 8), {"last": arrays["last"][:8]})
    migrate_store(tmp_path / "s")
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(tmp_path / "s")
    w2 = StoreWriter(tmp_path / "s", {**cfg, "batch_size": 8}, items)  # the same collection resumes
    assert w2.todo() == [1, 2]
    for b in w2.todo():
        a, e = w2.batch_rows(b)
        w2.write_shard(b, np.arange(a, e), {"last": arrays["last"][a:e]})
    assert np.array_equal(w2.finish().get("last"), arrays["last"])


def test_store_command_merge_migrate_verify_info(tmp_path, capsys):
    cfg, items, arrays = synth(n_pairs=10, d=8)
    for i in range(2):
        write_store(tmp_path / f"p{i}", cfg, items, arrays, batch_size=4, part=(i, 2))
    assert main(["merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "m")]) == 0
    assert "merged 2 stores" in capsys.readouterr().out
    write_v1_store(tmp_path / "v1", cfg, items, arrays)
    assert main(["info", str(tmp_path / "v1")]) == 0 and "format_version  1" in capsys.readouterr().out
    assert main(["migrate", str(tmp_path / "v1")]) == 0 and "format 1 -> 2" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "m")]) == 0
    shard = tmp_path / "m" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path / "m")]) == 2
    assert "shard-00001.safetensors is corrupt" in capsys.readouterr().err
    write_store(
        tmp_path / "x", {**cfg, "layers": [0, 1]}, items, {"last": arrays["last"][:, :2]}, batch_size=4, part=(1, 2)
    )
    assert main(["merge", str(tmp_path / "p0"), str(tmp_path / "x"), "--out", str(tmp_path / "m2")]) == 2
    assert "differ in: layers" in capsys.readouterr().err
