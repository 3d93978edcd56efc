"""Atomic writes: a failed write leaves the old file intact; new files get ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from cotscope.analyses.atomic import atomic_path, write_json_atomic


def test_failed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind


def test_written_file_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", [1])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_atomic_dir_publishes_complete_folders_only(tmp_path):
    from cotscope.analyses.atomic import atomic_dir

    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target, meta={"v": 1}) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise RuntimeError("crash while building")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target, meta={"v": 2}) as tmp:
        (tmp / "weights.bin").write_bytes(b"full")
    assert (target / "cotscope.json").read_text().count('"v": 2') == 1 and (target / "weights.bin").is_file()
    # a folder completed by someone else meanwhile is kept; ours is discarded
    with atomic_dir(target, meta={"v": 3}) as tmp:
        (tmp / "weights.bin").write_bytes(b"other")
    assert (target / "weights.bin").read_bytes() == b"full"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
