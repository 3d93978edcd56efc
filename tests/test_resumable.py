"""The resumable-writer protocol (analyses.io.resumable) and the writers ported onto it: attention runs and
sweep/eval tables leave exactly the files their pre-protocol versions (``writers_oracle``) wrote, and an
interrupted run resumes to the same bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import writers_oracle as W  # noqa: E402

from cotscope.analyses.io.attention_runs import AttentionRun, AttentionRunWriter, AttentionStoreError  # noqa: E402
from cotscope.analyses.io.resumable import UnitLog, check_unit_file, diff_keys, open_output, write_unit_file  # noqa: E402
from cotscope.analyses.io.tables import SweepTable, read_table  # noqa: E402


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def same_run(new: Path, old: Path) -> None:
    """Same files; trace files equal as safetensors (header as JSON, data bytes), the rest byte for byte.

    The pre-protocol writer used safetensors' save_file, which writes metadata keys in a random order, so its
    own files differ between runs; the new writer sorts them (reproducible) and is otherwise the same layout.
    """
    from cotscope.analyses.io.tensorfile import sha256_file

    a, b = files(new), files(old)
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".safetensors"):
            na, nb = (int.from_bytes(x[:8], "little") for x in (a[name], b[name]))
            assert na == nb and json.loads(a[name][8 : 8 + na]) == json.loads(b[name][8 : 8 + nb])
            assert a[name][8 + na :] == b[name][8 + nb :]
    ma, mb = json.loads(a["manifest.json"]), json.loads(b["manifest.json"])
    for t in ma["traces"]:
        assert t["sha256"] == sha256_file(new / t["file"])
    for m in (ma, mb):
        for t in m["traces"]:
            t["sha256"] = "-"
    assert json.dumps(ma) == json.dumps(mb)
    assert a["traces.jsonl"] == b["traces.jsonl"]


def trace(i: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(i)
    rec = {
        "id": f"t{i}",
        "condition": "cot" if i % 2 else "direct",
        "prompt_len": 4,
        "gen_tokens": ["a", "b"],
        "layout": {"shape": (1, 3)},
    }
    tens = {
        "rows": rng.random((2, 2, 9)).astype(np.float32),
        "row_offsets": np.array([0, 4, 9]),
        "mass": rng.random((2, 2, 2, 4)).astype(np.float32),
        "key_types": np.array([0, 1, 2, 2, 3, 3], np.int8),
        "token_ids": np.arange(6),
    }
    return rec, tens


CFG = {"model": {"model_id": "synthetic"}, "layers": [0, 1], "heads": [0, 1]}
PLAN = [{"id": f"t{i}"} for i in range(4)]


def test_attention_run_files_equal_the_pre_protocol_writer_and_resume_bit_identically(tmp_path):
    old = W.OldAttentionRunWriter(tmp_path / "old", CFG, PLAN)
    new = AttentionRunWriter(tmp_path / "new", CFG, PLAN)
    for i in range(4):
        for w in (old, new):
            w.write(i, *trace(i))
    old.finish()
    run = new.finish()
    same_run(tmp_path / "new", tmp_path / "old")
    assert len(run) == 4 and run.trace(3).rows.shape == (2, 2, 9)
    # interrupted after two traces (and a torn log line): the resumed run equals the uninterrupted one
    part = AttentionRunWriter(tmp_path / "res", CFG, PLAN)
    for i in (0, 2):
        part.write(i, *trace(i))
    del part
    with open(tmp_path / "res" / "traces.index.jsonl", "a") as fh:
        fh.write('{"index": 1, "fi')
    (tmp_path / "res" / ".trace-00001.safetensors.abc.tmp").write_bytes(b"half")  # a killed atomic write
    res = AttentionRunWriter(tmp_path / "res", CFG, PLAN)
    assert res.done() == {0, 2}
    for i in (1, 3):
        res.write(i, *trace(i))
    res.finish()
    assert files(tmp_path / "res") == files(tmp_path / "new")  # resumed = uninterrupted, bit for bit


def test_attention_run_first_read_verification(tmp_path, monkeypatch):
    monkeypatch.delenv("COTSCOPE_TRUST_STORE", raising=False)
    w = AttentionRunWriter(tmp_path / "r", CFG, PLAN[:1])
    w.write(0, *trace(0))
    w.finish()
    f = tmp_path / "r" / "trace-00000.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(AttentionStoreError, match=r"trace-00000.*sha256.*trust=True"):
        AttentionRun(tmp_path / "r").trace(0)
    assert AttentionRun(tmp_path / "r", trust=True).trace(0).rows.shape == (2, 2, 9)


SCHEMA = {"cell_id": "str", "prompt_id": "str", "x": "float", "ok": "bool", "text": "json"}


def test_sweep_table_files_equal_the_pre_protocol_table(tmp_path):
    rows = [
        [{"cell_id": "none", "prompt_id": f"p{i}", "x": i / 3, "ok": i % 2 == 0, "text": {"a": [i, "q\n"]}}]
        for i in range(3)
    ]
    old = W.OldSweepTable(tmp_path / "old" / "s.csv", {"lams": [0.1]}, SCHEMA, ("cell_id", "prompt_id"))
    new = SweepTable(tmp_path / "new" / "s.csv", {"lams": [0.1]}, SCHEMA, ("cell_id", "prompt_id"))
    for r in rows:
        old.append(r)
        new.append(r)
    new.close()
    assert files(tmp_path / "new") == files(tmp_path / "old")
    assert len(read_table(tmp_path / "new" / "s.csv")) == 3


def test_second_process_cannot_append_to_a_table_being_written(tmp_path):
    t = SweepTable(tmp_path / "s.csv", {"a": 1}, SCHEMA, ("cell_id", "prompt_id"))
    code = (
        "import sys; from cotscope.analyses.io.tables import SweepTable; "
        "SweepTable(sys.argv[1], {'a': 1}, {'cell_id': 'str', 'prompt_id': 'str', 'x': 'float', 'ok': 'bool', "
        "'text': 'json'}, ('cell_id', 'prompt_id'))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0 and "being written by another process" in r.stderr and "s.csv.lock" in r.stderr
    t.close()
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.csv")], timeout=60).returncode == 0


def test_protocol_pieces(tmp_path):
    log = UnitLog(tmp_path / "log.jsonl", first="h\n")
    log.create()
    assert log.append('{"a": 1}\n') == 9
    with open(log.path, "a") as fh:
        fh.write('{"a": 2')
    assert log.lines() == ["h", '{"a": 1}'] and log.repair() == 7 and log.path.read_text() == 'h\n{"a": 1}\n'
    with pytest.raises(ValueError, match="newline"):
        log.append("x")
    assert diff_keys({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2}) == ["a.b"]
    fresh = {"format": "demo", "format_version": 2, "config_hash": "h1", "config": {"k": 1}}
    out = open_output(
        tmp_path / "o",
        "head.json",
        "log",
        "o.lock",
        fresh=fresh,
        fmt="demo",
        version=2,
        error=ValueError,
        what="demo output",
        fix="Use another directory.",
        config_of=lambda h: h["config"],
    )
    out.close()
    with pytest.raises(ValueError, match=r"differs in: k\)\. Use another directory"):
        open_output(
            tmp_path / "o",
            "head.json",
            "log",
            "o.lock",
            fresh={**fresh, "config_hash": "h2", "config": {"k": 2}},
            fmt="demo",
            version=2,
            error=ValueError,
            what="demo output",
            fix="Use another directory.",
            config_of=lambda h: h["config"],
        )
    with pytest.raises(ValueError, match="format version 2.*run `demo migrate o`"):
        open_output(
            tmp_path / "o",
            "head.json",
            "log",
            "o.lock",
            fresh={**fresh, "format_version": 3},
            fmt="demo",
            version=3,
            error=ValueError,
            what="demo output",
            fix="",
            migrate="demo migrate o",
        )
    nbytes, sha = write_unit_file(tmp_path / "u.bin", lambda p: p.write_bytes(b"abc") and None)
    entry = {"file": "u.bin", "bytes": nbytes, "sha256": sha}
    assert check_unit_file(tmp_path, entry, full=True) is None
    (tmp_path / "u.bin").write_bytes(b"abd")
    assert check_unit_file(tmp_path, entry) is None and "sha256" in check_unit_file(tmp_path, entry, full=True)
    assert json.loads((tmp_path / "o" / "head.json").read_text())["config"] == {"k": 1}
