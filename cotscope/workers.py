"""Data parallelism over processes: ``--shard i/N`` jobs and Ray actors (the only module that knows about processes).

A collection job's items are cut into batches of ``batch_size`` contiguous rows; batch ``b`` is store shard
``b``. Worker ``i`` of ``n`` owns batches ``i, i+n, i+2n, …`` (:func:`cotscope.analyses.io.store.part_batches`)
and writes them into its own sub-store (a *part*). :func:`cotscope.analyses.io.merge.merge_stores` joins the
parts into the store one process would have written, byte for byte: the configuration hash ignores the batch
size and the worker's share, every shard holds the same rows as in a one-process run, and each row's
activations do not depend on which process computed them (same weights, same batch, same padding).

Two ways to run the parts:

- **Without a scheduler** (SLURM array jobs, torchrun, separate machines): every job runs
  ``cotscope collect … --shard i/N --out STORE.part-i`` (:func:`collect_shard`), then one job runs
  ``cotscope store merge STORE.part-* --out STORE``.
- **Ray** (:func:`collect_distributed`, ``cotscope collect --workers N [--ray-address ADDR]``): N actors, each
  holding one model replica (one GPU with ``gpus_per_worker=1``; here one CPU process with one torch thread),
  collect the N parts into ``STORE.parts/``, then the driver merges them into ``STORE`` and removes the parts.
  A worker that dies is restarted by Ray (``max_restarts``) and its task retried (``max_task_retries``); the
  retried task resumes its sub-store from the shards already on disk (the store's append-only index), so no
  batch is lost or written twice. On a cluster ``STORE`` must be on a filesystem every node sees.

>>> from cotscope.workers import parse_shard
>>> parse_shard("2/8")
(2, 8)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError

log = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"


class WorkerError(CotscopeError):
    """A distributed or sharded collection was configured wrongly or a worker failed for good."""


def parse_shard(text: str | Sequence[int]) -> tuple[int, int]:
    """``"i/N"`` (0-based ``i``) → ``(i, N)``; refuses anything else with the expected form.

    >>> parse_shard("0/4")
    (0, 4)
    """
    if isinstance(text, str):
        parts = text.split("/")
        try:
            i, n = (int(p) for p in parts)
        except ValueError:
            raise WorkerError(
                f"--shard {text!r} is not of the form i/N (e.g. 0/4 for the first of 4 jobs; "
                "with SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
            ) from None
    else:
        i, n = (int(x) for x in text)
    if not (n >= 1 and 0 <= i < n):
        raise WorkerError(f"shard {i}/{n} is invalid: need N >= 1 and 0 <= i < N (shards are numbered from 0)")
    return i, n


def part_dir(out: str | Path, i: int, n: int) -> Path:
    """Sub-store of worker ``i`` of ``n`` for the store ``out``: ``out.parts/part-00i-of-00n``."""
    out = Path(out)
    return out.parent / (out.name + PARTS_SUFFIX) / f"part-{i:03d}-of-{n:03d}"


def _spec_of(model: Any) -> str:
    """What a worker process passes to ``load_model`` to rebuild ``model``."""
    from cotscope.probes.models.loading import EMBEDDED_LLM, EMBEDDED_VLM, MODEL_ID, LoadedModel

    if isinstance(model, LoadedModel):
        if model.source == "in-memory":
            raise WorkerError(
                "workers load their own model replica, so pass a model spec (e.g. 'embedded:smollm2', "
                "a local directory or a hub name) instead of a model built in memory"
            )
        # the spec load_model was given: its model_id, except for the embedded aliases
        return {MODEL_ID: EMBEDDED_LLM, "cotscope-smolvlm": EMBEDDED_VLM}.get(model.model_id, model.model_id)
    if isinstance(model, (str, Path)):
        return str(model)
    raise WorkerError(f"model must be a spec string, a path or a LoadedModel, got {type(model).__name__}")


def collect_shard(
    model: Any,
    pairs: Sequence[Any],
    out: str | Path,
    shard: str | Sequence[int],
    *,
    load_kwargs: dict[str, Any] | None = None,
    **collect_kw: Any,
) -> Path:
    """Collect part ``shard = "i/N"`` of a job into its own store ``out`` (one SLURM array task / torchrun rank).

    Every part must get the same ``pairs``, layers, token rules, dtype and batch size; merge the finished parts
    with ``cotscope store merge PART… --out STORE``. Returns ``out``.
    """
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.models.loading import LoadedModel, load_model

    i, n = parse_shard(shard)
    lm = model if isinstance(model, LoadedModel) else load_model(model, **(load_kwargs or {}))
    collect_pairs(lm, pairs, out, part=(i, n), **collect_kw)
    return Path(out)


# ================================================================================================ Ray
def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise WorkerError(
            "workers > 1 needs Ray: pip install 'cotscope[ray]' (or run the parts as separate jobs "
            "with --shard i/N and merge them with `cotscope store merge`)"
        ) from None
    return ray


class _CollectWorker:
    """One model replica in one process; collects parts of a job into sub-stores (a Ray actor)."""

    def __init__(
        self, spec: str, load_kwargs: dict[str, Any], torch_threads: int | None, expect: dict[str, Any] | None
    ) -> None:
        import torch

        from cotscope.probes.models.loading import load_model

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.model = load_model(spec, **load_kwargs)
        if expect is not None and self.model.provenance() != expect:
            raise WorkerError(
                f"worker pid {os.getpid()} loaded {self.model.provenance()} from {spec!r}, but the "
                f"driver's model is {expect}; give every node the same model files"
            )

    def collect(self, pairs: Sequence[Any], out: str, part: tuple[int, int], kw: dict[str, Any]) -> dict[str, Any]:
        """Collect (or resume) part ``part`` into ``out``; reports the pid and how many shards were already there."""
        from cotscope.analyses.io.store import read_index
        from cotscope.probes.collect import collect_pairs

        t0 = time.perf_counter()
        before = len(read_index(Path(out))) if Path(out).is_dir() else 0
        collect_pairs(self.model, pairs, out, part=part, progress=False, **kw)
        return {"part": list(part), "pid": os.getpid(), "resumed_shards": before, "seconds": time.perf_counter() - t0}

    def sweep(
        self, direction: Any, prompts: Sequence[Any], table: str, cfg: Any, part: tuple[int, int], kw: dict[str, Any]
    ) -> dict[str, Any]:
        """Run (or resume) part ``part`` of a sweep into its own table."""
        from cotscope.probes.sweep import run_sweep

        t0 = time.perf_counter()
        res = run_sweep(self.model, direction, prompts, table, cfg, part=part, progress=False, **kw)
        return {
            "part": list(part),
            "pid": os.getpid(),
            "batches_run": res.batches_run,
            "seconds": time.perf_counter() - t0,
        }


def collect_distributed(
    model: Any,
    pairs: Sequence[Any],
    out: str | Path,
    *,
    workers: int,
    ray_address: str | None = None,
    load_kwargs: dict[str, Any] | None = None,
    torch_threads: int | None = 1,
    gpus_per_worker: float = 0,
    max_restarts: int = 3,
    keep_parts: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **collect_kw: Any,
) -> Any:
    """Collect ``pairs`` with ``workers`` Ray actors and merge their parts into ``out``; returns the store.

    Args:
        model: a spec (``"embedded:smollm2"``, a directory, a hub name) or a LoadedModel loaded from one;
            every actor loads its own replica.
        ray_address: an existing cluster (``"auto"``, ``"ray://head:10001"``); ``None`` joins the cluster
            ``ray.init`` finds or starts a local one.
        torch_threads: torch threads per actor (1: one actor per CPU core); ``None`` keeps torch's default.
        gpus_per_worker: GPUs each actor reserves (1 on a GPU cluster; then pass ``load_kwargs={"device": "cuda"}``).
        max_restarts: how often Ray restarts a dead actor and retries its task (the task resumes its part).
        keep_parts: keep ``out.parts/`` after the merge (default: removed once ``out`` is complete).
        collect_kw: ``layers``, ``positions``, ``batch_size``, ``store_dtype``, ``all_tokens`` of
            :func:`cotscope.probes.collect.collect_pairs` (the same for every part).

    The result equals ``collect_pairs(model, pairs, out, **collect_kw)`` bit for bit.

    >>> collect_distributed("embedded:smollm2", pairs, "runs/x/store", workers=2)   # doctest: +SKIP
    """
    from cotscope.analyses.io.merge import merge_stores
    from cotscope.probes.models.loading import LoadedModel

    if int(workers) < 1:
        raise WorkerError(f"workers must be >= 1, got {workers}")
    workers = int(workers)
    bad = sorted(set(collect_kw) & {"part", "max_batches", "progress"})
    if bad:
        raise WorkerError(f"{bad} cannot be passed to a distributed collection (each worker owns one part)")
    pairs = list(pairs)
    spec = _spec_of(model)
    expect = model.provenance() if isinstance(model, LoadedModel) else None
    ray = _require_ray()
    out = Path(out)
    parts = [part_dir(out, i, workers) for i in range(workers)]
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise WorkerError(
            f"{out} exists and is not empty; a distributed collection writes a new store. Use a new "
            "directory, or pass overwrite=True (--overwrite) to replace it"
        )
    if overwrite:
        for p in (out, out.parent / (out.name + PARTS_SUFFIX)):
            if p.exists():
                shutil.rmtree(p)
    started_here = False
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started_here = True
    try:
        actor_cls = ray.remote(
            num_cpus=1, num_gpus=gpus_per_worker, max_restarts=max_restarts, max_task_retries=max_restarts
        )(_CollectWorker)
        load_kwargs = dict(load_kwargs or {})
        actors = [actor_cls.remote(spec, load_kwargs, torch_threads, expect) for _ in range(workers)]
        pairs_ref = ray.put(pairs)
        kw = dict(collect_kw)
        futures = [a.collect.remote(pairs_ref, str(p), (i, workers), kw) for i, (a, p) in enumerate(zip(actors, parts))]
        from tqdm.auto import tqdm

        reports: list[dict[str, Any]] = []
        pending = list(futures)
        with tqdm(total=workers, desc=f"collect on {workers} workers", unit="part", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    reports.append(ray.get(done[0]))
                except ray.exceptions.RayError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, CotscopeError):
                        raise cause from None
                    raise WorkerError(
                        f"a worker failed after {max_restarts} restarts: {e}. Finished parts stay in "
                        f"{parts[0].parent}; run the same command again to resume"
                    ) from None
                bar.update(1)
        for a in actors:
            ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()
    for r in sorted(reports, key=lambda r: r["part"]):
        log.info("part %s: pid %d, %d shards resumed, %.1f s", r["part"], r["pid"], r["resumed_shards"], r["seconds"])
    store = merge_stores(parts, out, overwrite=overwrite)
    store.worker_reports = sorted(reports, key=lambda r: r["part"])
    if not keep_parts:
        shutil.rmtree(parts[0].parent)
    return store


def run_collect_command(model: Any, pairs: Sequence[Any], out: str | Path, args: Any, **collect_kw: Any) -> int:
    """The ``--shard`` / ``--workers`` / ``--ray-address`` branch of ``cotscope collect`` (prints one line)."""
    if args.shard and (args.workers > 1 or args.ray_address):
        raise WorkerError(
            "--shard i/N runs one part in this process; it cannot be combined with --workers or "
            "--ray-address (use one or the other)"
        )
    if args.shard:
        i, n = parse_shard(args.shard)
        collect_shard(model, pairs, out, (i, n), **collect_kw)
        print(f"part {i}/{n}: {out} (merge all parts with `cotscope store merge PART... --out STORE`)")
        return 0
    device = str(getattr(args, "device", "cpu") or "cpu")
    load_kwargs = {
        "device": device,
        "dtype": getattr(args, "dtype", "float32"),
        "trust_remote_code": bool(getattr(args, "trust_remote_code", False)),
    }
    if getattr(args, "revision", None):
        load_kwargs["revision"] = args.revision
    store = collect_distributed(
        model,
        pairs,
        out,
        workers=max(int(args.workers), 1),
        ray_address=args.ray_address,
        load_kwargs=load_kwargs,
        gpus_per_worker=1 if device.startswith("cuda") else 0,
        torch_threads=None if device.startswith("cuda") else 1,
        **collect_kw,
    )
    print(
        f"store: {store.path} ({store.n_items} items, layers {store.layers[0]}..{store.layers[-1]}; "
        f"{len(store.worker_reports)} workers)"
    )
    return 0


# ================================================================================================ sweeps
def sweep_part_path(table: str | Path, i: int, n: int) -> Path:
    """Table of worker ``i`` of ``n`` for the sweep table ``table``: ``table.parts/part-00i-of-00n.csv``."""
    table = Path(table)
    return table.parent / (table.name + PARTS_SUFFIX) / f"part-{i:03d}-of-{n:03d}.csv"


def merge_sweep_tables(parts: Sequence[str | Path], out: str | Path) -> Path:
    """Join the part tables of one sweep (``run_sweep(part=(i, n))``) into ``out``, the one-process table.

    Refuses parts of different configurations (their ``.meta.json`` differ) and a row key found twice. Rows are
    ordered by batch (each batch lies wholly in one part, its rows in generation order), which is the order
    one process appends them in. Returns ``out``.
    """
    import csv
    import io

    from cotscope.analyses.atomic import write_text_atomic
    from cotscope.analyses.sweeps import meta_path

    parts = [Path(p) for p in parts]
    if not parts:
        raise WorkerError("nothing to merge: pass at least one part table")
    metas = [meta_path(p).read_text() if meta_path(p).is_file() else None for p in parts]
    if metas[0] is None or any(m != metas[0] for m in metas):
        raise WorkerError(
            f"cannot merge sweep tables {[str(p) for p in parts]}: they were written by different "
            "configurations (their .meta.json differ or are missing); merge parts of one sweep only"
        )
    header, lines = None, []
    for p in parts:
        text = p.read_text()
        if text and not text.endswith("\n"):  # a torn last row of an interrupted part
            text = text[: text.rfind("\n") + 1]
        rows = text.splitlines(keepends=True)
        if header is None:
            header = rows[0]
        lines += rows[1:]
    cols = next(csv.reader(io.StringIO(header)))
    bi, ki, pi = cols.index("batch"), cols.index("cell_id"), cols.index("prompt_id")
    parsed = [(next(csv.reader(io.StringIO(l))), l) for l in lines]
    keys = [(r[ki], r[pi]) for r, _ in parsed]
    if len(set(keys)) != len(keys):
        raise WorkerError("the part tables share rows (same cell and prompt); merge the parts of one --workers run")
    parsed.sort(key=lambda rl: int(rl[0][bi]))  # stable: rows of a batch keep their order
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path(out), metas[0])
    write_text_atomic(out, header + "".join(l for _, l in parsed))
    return out


def sweep_distributed(
    model: Any,
    direction: Any,
    prompts: Sequence[Any],
    table: str | Path,
    cfg: Any = None,
    *,
    workers: int,
    ray_address: str | None = None,
    load_kwargs: dict[str, Any] | None = None,
    torch_threads: int | None = 1,
    gpus_per_worker: float = 0,
    max_restarts: int = 3,
    keep_parts: bool = False,
    **sweep_kw: Any,
) -> Path:
    """Spread a sweep's batches over ``workers`` Ray actors; their part tables merge into ``table``.

    Each actor runs ``run_sweep(..., part=(i, workers))`` on its own model replica (rows are seeded per
    (prompt, cell), so the rows do not depend on the process); a dead actor is restarted and its part resumes
    from the rows already written. Returns the path of the merged table (identical to a one-process run).
    """
    from cotscope.probes.sweep import SweepConfig

    if int(workers) < 1:
        raise WorkerError(f"workers must be >= 1, got {workers}")
    workers = int(workers)
    cfg = cfg if cfg is not None else SweepConfig()
    spec = _spec_of(model)
    from cotscope.probes.models.loading import LoadedModel

    expect = model.provenance() if isinstance(model, LoadedModel) else None
    ray = _require_ray()
    parts = [sweep_part_path(table, i, workers) for i in range(workers)]
    parts[0].parent.mkdir(parents=True, exist_ok=True)
    started_here = False
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started_here = True
    try:
        actor_cls = ray.remote(
            num_cpus=1, num_gpus=gpus_per_worker, max_restarts=max_restarts, max_task_retries=max_restarts
        )(_CollectWorker)
        actors = [actor_cls.remote(spec, dict(load_kwargs or {}), torch_threads, expect) for _ in range(workers)]
        d_ref, p_ref = ray.put(direction), ray.put(list(prompts))
        futures = [
            a.sweep.remote(d_ref, p_ref, str(p), cfg, (i, workers), dict(sweep_kw))
            for i, (a, p) in enumerate(zip(actors, parts))
        ]
        try:
            reports = ray.get(futures)
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, CotscopeError):
                raise cause from None
            raise WorkerError(
                f"a sweep worker failed after {max_restarts} restarts: {e}. Finished rows stay in "
                f"{parts[0].parent}; run the same call again to resume"
            ) from None
        for a in actors:
            ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()
    for r in reports:
        log.info("sweep part %s: pid %d, %d batches, %.1f s", r["part"], r["pid"], r["batches_run"], r["seconds"])
    out = merge_sweep_tables(parts, table)
    if not keep_parts:
        shutil.rmtree(parts[0].parent)
    return out
