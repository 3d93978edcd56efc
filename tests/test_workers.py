"""cotscope.workers: Ray actors and --shard parts write the store one process writes, bit for bit.

A local Ray cluster (``ray.init(num_cpus=2)``) runs two actors, each loading its own replica of the real
embedded SmolLM2 with one torch thread. The one-process reference runs in this process, also with one torch
thread, so both paths run the same kernels on the same batches and must agree byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional extra 'ray' (installed by `make test`)")

from cotscope.analyses.io.merge import merge_stores  # noqa: E402
from cotscope.analyses.io.store import ActivationStore, StoreError, read_index  # noqa: E402
from cotscope.workers import WorkerError, collect_distributed, collect_shard, parse_shard, part_dir  # noqa: E402

pytestmark = pytest.mark.slow
LAYERS = [0, 5, 10]
KW = dict(layers=LAYERS, positions=["last_prompt", "answer_mean"], batch_size=2)


def files(path: Path) -> dict[str, bytes]:
    """Every file of a store except the writer's manifest provenance, which is compared separately."""
    return {f.name: f.read_bytes() for f in sorted(Path(path).iterdir()) if f.is_file()}


@pytest.fixture(scope="module")
def job():
    from cotscope.api import pairs

    return pairs(8, seed=3)


@pytest.fixture(scope="module")
def one_process(smollm2, job, tmp_path_factory):
    """The reference: one process, one torch thread (what each actor uses)."""
    import torch

    from cotscope.probes.collect import collect_pairs

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        st = collect_pairs(smollm2, job, tmp_path_factory.mktemp("one") / "store", progress=False, **KW)
    finally:
        torch.set_num_threads(before)
    return st.path


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def analysis(path: Path) -> dict:
    from cotscope.analyses.layer_sweep import analyse_store, public

    return public(analyse_store(ActivationStore(path), "last_prompt", n_perm=20, seed=0, progress=False))


def test_parse_shard_and_part_dirs():
    assert parse_shard("3/8") == (3, 8)
    for bad in ("3", "8/8", "-1/4", "a/b", "1/0"):
        with pytest.raises(WorkerError, match="i/N|invalid"):
            parse_shard(bad)
    assert part_dir("runs/x/store", 1, 2) == Path("runs/x/store.parts/part-001-of-002")


def test_shards_then_merge_equal_one_process_and_refuse_other_configs(smollm2, job, one_process, tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(3):
            collect_shard(smollm2, job, tmp_path / f"s{i}", f"{i}/3", progress=False, **KW)
        with pytest.raises(StoreError, match="only part"):
            ActivationStore(tmp_path / "s0")
        merge_stores([tmp_path / f"s{i}" for i in (1, 2, 0)], tmp_path / "merged")
        assert files(tmp_path / "merged") == files(one_process)
        # a part of another configuration (other layers) is refused, naming the key
        collect_shard(smollm2, job, tmp_path / "other", "1/3", progress=False, **{**KW, "layers": [0, 5]})
    finally:
        torch.set_num_threads(before)
    with pytest.raises(StoreError, match="different configurations.*layers"):
        merge_stores([tmp_path / "s0", tmp_path / "other", tmp_path / "s2"], tmp_path / "bad")
    # a missing part is refused too
    with pytest.raises(StoreError):
        merge_stores([tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad2")


def test_two_ray_workers_write_the_one_process_store(cluster, smollm2, job, one_process, tmp_path):
    import cotscope as cs

    st = cs.collect("embedded:smollm2", job, tmp_path / "store", workers=2, progress=False, **KW)
    assert files(st.path) == files(one_process)
    assert not (tmp_path / "store.parts").exists()
    pids = {r["pid"] for r in st.worker_reports}
    assert len(pids) == 2 and os.getpid() not in pids  # two actor processes did the work
    assert analysis(st.path) == analysis(one_process)


def test_a_killed_worker_is_restarted_and_resumes_its_part(cluster, smollm2, job, one_process, tmp_path):
    """SIGKILL actor 0 once its first shard is on disk: Ray restarts it, the task resumes from the index."""
    out = tmp_path / "store"
    part0 = part_dir(out, 0, 2)
    killed: dict = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            idx = read_index(part0) if part0.is_dir() else {}
            lock = part0 / "store.lock"
            if len(idx) >= 1 and lock.is_file():
                from cotscope.analyses.io.lock import read_holder

                pid = int(read_holder(lock)["pid"])
                killed.update(pid=pid, shards_before=len(idx))
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    st = collect_distributed(smollm2, job, out, workers=2, progress=False, **KW)
    t.join()
    assert killed, "the worker finished before it could be killed"
    rep0 = st.worker_reports[0]
    assert rep0["pid"] != killed["pid"]  # a new process finished part 0 …
    assert rep0["resumed_shards"] >= killed["shards_before"]  # … from the shards the dead one wrote
    assert files(st.path) == files(one_process)
    assert len(read_index(st.path)) == 8  # 8 batches of 2 items, none lost or duplicated


def test_sweep_on_two_workers_equals_the_one_process_table(cluster, smollm2, tmp_path):
    """cs.sweep(workers=2): batches spread over two actors; the merged table is the one-process table, byte for byte."""
    import torch

    import cotscope as cs
    from cotscope.analyses.artifacts import DirectionMeta, DirectionSet
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.sweep import SweepConfig, direct_prompts, run_sweep
    from cotscope.workers import merge_sweep_tables

    rng = np.random.default_rng(0)
    direction = DirectionSet(
        {l: (rng.standard_normal(576) * 20).astype(np.float32) for l in (6, 20)},
        DirectionMeta(model_id="test-direction", n_layers=30, method="random"),
    )
    cfg = SweepConfig(
        layers=(6, 20),
        lams=(0.9,),
        controls=("none", "random"),
        control_layers=(20,),
        budget=3,
        score=True,
        answer_template=" {answer}",
        rows_per_batch=4,
        cutoff=0.25,
    )
    prompts = direct_prompts(generate_problems(2, seed=3, difficulties=("easy",)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_sweep(smollm2, direction, prompts, tmp_path / "one.csv", cfg, progress=False)
    finally:
        torch.set_num_threads(before)
    res = cs.sweep("embedded:smollm2", direction, prompts, tmp_path / "two.csv", cfg, workers=2, progress=False)
    assert one.complete and one.batches == 2
    assert res.complete and res.batches_run == 0  # the driver only read the merged table
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert (tmp_path / "two.csv.meta.json").read_bytes() == (tmp_path / "one.csv.meta.json").read_bytes()
    assert not (tmp_path / "two.csv.parts").exists()
    # parts of another configuration are refused
    other = dataclasses.replace(cfg, lams=(0.5,))
    run_sweep(smollm2, direction, prompts, tmp_path / "o.csv", other, part=(1, 2), progress=False, max_batches=1)
    with pytest.raises(WorkerError, match="different configurations"):
        merge_sweep_tables([tmp_path / "one.csv", tmp_path / "o.csv"], tmp_path / "bad.csv")
