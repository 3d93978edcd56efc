"""Fault injection: kill -9 at seeded random points of every resumable writer, and failing OS calls.

**Kill points.** Every writer's durable steps go through a few OS calls: ``os.fsync`` (before a temporary file is
renamed, and after every sweep-table append), ``os.replace`` (the rename that publishes a file) and, for the prior
artifact, each streamed chunk. :class:`FaultPoints` numbers these events. An uninterrupted reference run (in this
process) counts them; each trial forks a child that runs the same writer from an empty directory and SIGKILLs
itself at a seeded event — before or after a rename, before an fsync, mid-stream — optionally first tearing the
file being fsynced (a partially written append). The parent checks that the child really died of SIGKILL, that
what it left is a valid partial state, then resumes the writer (same call) and compares every output file with
the reference **byte for byte** (temporary ``.*.tmp`` files a killed writer leaves are ignored by readers and here;
the sweep's ``.timing.jsonl`` holds wall-clock seconds and is excluded). The points are distinct event numbers
drawn by ``numpy.random.default_rng(SEED + k)``; change ``SEED`` to draw other points.

**Failing OS calls.** ENOSPC/EIO raised from ``os.fsync``/``os.replace`` (in-process), and a real failing
``write()`` in a forked child (``RLIMIT_FSIZE``: the kernel refuses the write with EFBIG), must leave the previous
file valid and raise an error that names the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cotscope.analyses import atomic
from cotscope.analyses.prior import artifact as prior_artifact

SEED = 20261129
POINTS = {"collect": 6, "sweep": 6, "attention": 5, "prior": 5}  # 22 kill -9 interruptions
HIT: dict[str, list[str]] = {}  # writer -> event names the kills landed on (printed at the end, for the record)


# ----------------------------------------------------------------------------------------------- the hook
class FaultPoints:
    """Numbers the OS-level write events of this process; at event ``kill_at`` it SIGKILLs the process.

    With ``tear`` a kill at an ``fsync`` first truncates that file to a random length inside the bytes written
    since its previous fsync (a torn append; for a temporary file it makes no difference, it is never published).
    """

    def __init__(self, kill_at: int | None = None, tear: bool = False, seed: int = 0) -> None:
        self.kill_at, self.tear = kill_at, tear
        self.rng = np.random.default_rng(seed)
        self.events: list[str] = []
        self.synced: dict[str, int] = {}  # path -> size at its last fsync or rename

    def _event(self, name: str, fd: int | None = None) -> None:
        self.events.append(name)
        if self.kill_at is not None and len(self.events) == self.kill_at:
            if self.tear and fd is not None:
                path = os.readlink(f"/proc/self/fd/{fd}")
                size, prev = os.fstat(fd).st_size, self.synced.get(path, 0)
                if size - prev > 1:
                    os.ftruncate(fd, int(self.rng.integers(prev + 1, size)))
            os.kill(os.getpid(), signal.SIGKILL)

    @contextlib.contextmanager
    def installed(self) -> Iterator[FaultPoints]:
        real_fsync, real_replace = os.fsync, os.replace
        real_chunk = prior_artifact._StreamingWriter.write

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            self._event(f"fsync {_short(path)}", fd)
            real_fsync(fd)
            self.synced[path] = os.fstat(fd).st_size

        def replace(src, dst, **kw):
            self._event(f"before rename -> {_short(dst)}")
            real_replace(src, dst, **kw)
            self.synced[str(Path(dst).resolve())] = os.stat(dst).st_size
            self._event(f"after rename -> {_short(dst)}")

        def chunk(writer, name, data):
            self._event(f"stream chunk {name}")
            return real_chunk(writer, name, data)

        os.fsync, os.replace = fsync, replace
        prior_artifact._StreamingWriter.write = chunk
        try:
            yield self
        finally:
            os.fsync, os.replace = real_fsync, real_replace
            prior_artifact._StreamingWriter.write = real_chunk


def _short(path: str | os.PathLike) -> str:
    name = Path(path).name
    if name.startswith(".") and name.endswith(".tmp"):  # atomic_path's ".<target>.<random>.tmp"
        return f"temp of {name[1:-4].rsplit('.', 1)[0]}"
    return name


def killed_child(run: Callable[[], object], kill_at: int, tear: bool, seed: int) -> None:
    """Run ``run`` in a forked child that SIGKILLs itself at event ``kill_at``; assert it died that way."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            with FaultPoints(kill_at, tear, seed).installed():
                run()
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the child was to be killed at event {kill_at} but ended with status {status}"
    )


def snapshot(d: Path) -> dict[str, bytes]:
    """Every output file under ``d`` (relative path -> bytes), without temp files and timing logs."""
    out = {}
    for f in sorted(d.rglob("*")):
        if (
            f.is_file()
            and not (f.name.startswith(".") and f.name.endswith(".tmp"))
            and not f.name.endswith((".timing.jsonl", ".lock"))
        ):  # timings and lock files (pid, host) differ
            out[str(f.relative_to(d))] = f.read_bytes()
    return out


def _listed(d: Path, index: str, key: str) -> list[dict]:
    """Finished units of a writer: its append-only index (a torn last line ignored) or its manifest's list."""
    if (d / index).is_file():
        out = []
        for line in (d / index).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out
    return json.loads((d / "manifest.json").read_text()).get(key, [])


def assert_same(got: dict[str, bytes], ref: dict[str, bytes], what: str) -> None:
    assert sorted(got) == sorted(ref), f"{what}: files differ: {sorted(set(got) ^ set(ref))}"
    bad = [k for k in ref if got[k] != ref[k]]
    assert not bad, f"{what}: bytes differ in {bad}"


def interrupt_and_resume(
    name: str,
    run: Callable[[], object],
    out: Path,
    check_partial: Callable[[Path, dict], None],
    prepare: Callable[[], None] = lambda: None,
) -> None:
    """The reference run, then ``POINTS[name]`` kill/resume trials at distinct seeded events."""
    prepare()
    with FaultPoints().installed() as fp:
        run()
    ref, n_events = snapshot(out), len(fp.events)
    events = list(fp.events)
    rng = np.random.default_rng(SEED + sorted(POINTS).index(name))
    points = sorted(rng.choice(n_events, size=min(POINTS[name], n_events), replace=False) + 1)
    assert len(points) == POINTS[name], f"{name}: only {n_events} events"
    for k in points:
        tear = bool(rng.integers(2))
        shutil.rmtree(out, ignore_errors=True)
        prepare()
        killed_child(run, int(k), tear, seed=int(k))
        what = f"{name}: kill -9 at event {k}/{n_events} ({events[k - 1]}{', torn' if tear else ''})"
        check_partial(out, ref)
        run()  # resume
        assert_same(snapshot(out), ref, what)
        HIT.setdefault(name, []).append(events[k - 1])
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Same thread count in parent and children (reduction order), and a reproducible prior timestamp."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    old_epoch = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1764374400"
    yield
    torch.set_num_threads(old)
    if old_epoch is None:
        os.environ.pop("SOURCE_DATE_EPOCH", None)
    else:
        os.environ["SOURCE_DATE_EPOCH"] = old_epoch
    for name, hits in sorted(HIT.items()):
        print(f"[faults] {name}: {len(hits)} kills at: {'; '.join(hits)}")


# ----------------------------------------------------------------------------------------------- kill -9 trials
@pytest.mark.slow
def test_collect_pairs_resumes_bit_identically_after_kill(smollm2, tmp_path):
    from cotscope.analyses.store import MANIFEST, sha256_file
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    pairs = make_pairs(generate_problems(3, seed=5), "cue")
    out = tmp_path / "store"

    def run():
        return collect_pairs(
            smollm2, pairs, out, layers=[2, 9], positions=("last_prompt", "answer_mean"), batch_size=2, progress=False
        )

    def check(d: Path, ref: dict) -> None:
        if not (d / MANIFEST).exists():
            return
        json.loads((d / MANIFEST).read_text())  # never torn: it is replaced atomically
        for s in _listed(d, "index.jsonl", "shards"):  # every listed shard is complete and is the reference's
            assert sha256_file(d / s["file"]) == s["sha256"]
            assert (d / s["file"]).read_bytes() == ref[s["file"]]

    interrupt_and_resume("collect", run, out, check)


@pytest.mark.slow
def test_sweep_table_resumes_bit_identically_after_kill(smollm2, tmp_path):
    from cotscope.probes.stimuli import generate_problems
    from cotscope.probes.sweep import SweepConfig, direct_prompts, run_sweep

    prompts = direct_prompts(generate_problems(3, seed=7, difficulties=("easy",)))
    vec = np.random.default_rng(3).normal(size=smollm2.hidden_size).astype(np.float32)
    cfg = SweepConfig(layers=(4,), lams=(0.5,), controls=("none", "random"), budget=3, rows_per_batch=2, score=False)
    out = tmp_path / "sweep"

    def run():
        return run_sweep(smollm2, vec, prompts, out / "table.csv", cfg, progress=False)

    def check(d: Path, ref: dict) -> None:
        f = d / "table.csv"
        if f.exists():  # the appended table minus a torn last line is a prefix of the finished one
            data = f.read_bytes()
            data = data[: data.rfind(b"\n") + 1]
            assert ref["table.csv"].startswith(data)

    interrupt_and_resume("sweep", run, out, check)


@pytest.mark.slow
def test_attention_capture_resumes_bit_identically_after_kill(tmp_path):
    from tiny_vlms import build_tiny_vlm, sample_image

    from cotscope.analyses.attention_store import MANIFEST
    from cotscope.analyses.store import sha256_file as _sha256
    from cotscope.probes.attention import CaptureRequest, capture_run
    from cotscope.probes.models.loading import wrap_model

    v = build_tiny_vlm("idefics3")
    lm = wrap_model(v.model, processor=v.processor)
    reqs = [
        CaptureRequest(
            f"r{i}",
            "What is in this picture?\nLet's think step by step.",
            image=sample_image(seed=i),
            question="What is in this picture?",
            condition=c,
        )
        for i, c in enumerate("abc")
    ]
    out = tmp_path / "attn"

    def run():
        return capture_run(lm, reqs, out, layers=[0, 2], max_new_tokens=3, progress=False)

    def check(d: Path, ref: dict) -> None:
        if not (d / MANIFEST).exists():
            return
        json.loads((d / MANIFEST).read_text())
        for t in _listed(d, "index.jsonl", "traces"):
            assert _sha256(d / t["file"]) == t["sha256"] and (d / t["file"]).read_bytes() == ref[t["file"]]

    interrupt_and_resume("attention", run, out, check)


def _tiny_checkpoints(root: Path) -> tuple[Path, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        d = root / f"ckpt{seed}"
        LlamaForCausalLM(cfg).save_pretrained(d)
        dirs.append(d)
    return dirs[0], dirs[1]


@pytest.mark.slow
def test_prior_artifact_rewrite_is_atomic_and_bit_identical_after_kill(tmp_path):
    """The prior is one streamed file: a kill leaves the previous version or the new one, never a mix."""
    from cotscope.analyses.prior import ANALYSIS_FILENAME, PRIOR_FILENAME, run_prior_analysis

    reason, vl = _tiny_checkpoints(tmp_path)
    out = tmp_path / "prior"
    kw = dict(n_perm=10, n_perm_layer=5, verbose=False, progress=False, chunk_mb=0.002)

    def run():
        return run_prior_analysis(reason, vl, out, **kw)

    previous = tmp_path / "previous"  # an older prior of the same checkpoints, in float16, sits there first
    run_prior_analysis(reason, vl, previous, out_dtype="float16", **kw)
    prev = {f: (previous / f).read_bytes() for f in (PRIOR_FILENAME, ANALYSIS_FILENAME)}

    def prepare() -> None:
        out.mkdir(parents=True, exist_ok=True)
        for f, b in prev.items():
            (out / f).write_bytes(b)

    def check(d: Path, ref: dict) -> None:
        for f in (PRIOR_FILENAME, ANALYSIS_FILENAME):
            assert (d / f).read_bytes() in (prev[f], ref[f]), f"{f} is neither the previous nor the new version"

    interrupt_and_resume("prior", run, out, check, prepare)


@pytest.mark.slow
def test_kill_points_cover_every_writer():
    """Runs after the four trials above (file order): 20+ kills spread over the four writers."""
    if set(HIT) != set(POINTS):
        pytest.skip("run together with the kill trials above")
    assert sum(len(h) for h in HIT.values()) >= 20
    kinds = {e.split(" ")[0] for h in HIT.values() for e in h}
    assert {"before", "after", "fsync"} <= kinds, kinds


# ----------------------------------------------------------------------------------------------- failing OS calls
def _raise(code: int):
    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    "call,code", [("fsync", errno.ENOSPC), ("fsync", errno.EIO), ("replace", errno.ENOSPC), ("replace", errno.EIO)]
)
def test_failed_atomic_write_keeps_previous_file_and_names_it(tmp_path, monkeypatch, call, code):
    target = tmp_path / "manifest.json"
    atomic.write_json_atomic(target, {"version": 1})
    monkeypatch.setattr(os, call, _raise(code))
    with pytest.raises(OSError) as ei:
        atomic.write_json_atomic(target, {"version": 2})
    monkeypatch.undo()
    assert ei.value.errno == code and str(target) in str(ei.value) and "previous version" in str(ei.value)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # the temporary file is gone


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_failed_sweep_append_keeps_rows_and_names_table(tmp_path, monkeypatch, code):
    from cotscope.analyses.sweeps import SweepTable, read_table

    schema, key = {"k": "str", "v": "float"}, ("k",)
    t = SweepTable(tmp_path / "t.csv", {"a": 1}, schema, key)
    t.append([{"k": "a", "v": 1.0}])
    monkeypatch.setattr(os, "fsync", _raise(code))
    with pytest.raises(OSError) as ei:
        t.append([{"k": "b", "v": 2.0}])
    monkeypatch.undo()
    assert ei.value.errno == code and str(tmp_path / "t.csv") in str(ei.value)
    rows = read_table(tmp_path / "t.csv")
    assert rows[0] == {"k": "a", "v": 1.0} and all(set(r) == {"k", "v"} for r in rows)
    assert SweepTable(tmp_path / "t.csv", {"a": 1}, schema, key).done_keys() >= {("a",)}


def _in_child_with_file_size_limit(limit: int, fn: Callable[[], object], report: Path) -> None:
    """Run ``fn`` in a forked child whose files may not grow past ``limit`` bytes (a real failing write())."""
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            fn()
            report.write_text("no error")
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            report.write_text(json.dumps({"type": type(e).__name__, "errno": getattr(e, "errno", None), "msg": str(e)}))
        os._exit(0)
    os.waitpid(pid, 0)


def test_real_failed_write_in_collection_keeps_store_resumable(smollm2, tmp_path):
    """A shard write the kernel refuses (safetensors' own writer) names the shard; the store resumes exactly."""
    from cotscope.analyses.store import MANIFEST, ActivationStore
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.stimuli import generate_problems, make_pairs

    pairs = make_pairs(generate_problems(2, seed=9), "cue")
    kw = dict(layers=[1, 5], positions=("last_prompt",), batch_size=2, progress=False)
    ref = collect_pairs(smollm2, pairs, tmp_path / "ref", **kw).get("last_prompt")
    report = tmp_path / "report.json"
    _in_child_with_file_size_limit(6000, lambda: collect_pairs(smollm2, pairs, tmp_path / "s", **kw), report)
    err = json.loads(report.read_text())
    assert err["errno"] == errno.EFBIG and "shard-00000.safetensors" in err["msg"], err
    json.loads((tmp_path / "s" / MANIFEST).read_text())  # the manifest written before is intact
    again = collect_pairs(smollm2, pairs, tmp_path / "s", **kw)
    assert np.array_equal(again.get("last_prompt"), ref)
    ActivationStore(tmp_path / "s", verify=True)


def test_real_failed_write_of_prior_keeps_previous_artifact(tmp_path):
    from cotscope.analyses.prior import PRIOR_FILENAME, PriorArtifact, compute_prior

    reason, vl = _tiny_checkpoints(tmp_path)
    target = tmp_path / PRIOR_FILENAME
    compute_prior(reason, vl, out_path=target, out_dtype="float16", spectrum=False, verbose=False, progress=False)
    before = target.read_bytes()
    report = tmp_path / "report.json"
    _in_child_with_file_size_limit(
        len(before) + 512,
        lambda: compute_prior(reason, vl, out_path=target, spectrum=False, verbose=False, progress=False),
        report,
    )
    err = json.loads(report.read_text())
    assert err["errno"] == errno.EFBIG and str(target) in err["msg"] and "previous version" in err["msg"], err
    assert target.read_bytes() == before
    assert PriorArtifact.load(target).meta["out_dtype"] == "float16"
