"""A run's reports: ``report.md`` (the measured numbers in words, figures, provenance, commands) and
``report.html`` (one self-contained file: every figure static and interactive, every number of
``summary.json``, the provenance of each artifact, the commands to reproduce).

Runs made by the demo, recipes and :func:`cotscope.stages.run_stages` have a ``summary.json``; runs made with
CLI commands or the API alone do not, and get their numbers from the stored results.

>>> import tempfile
>>> paths = report_run(tempfile.mkdtemp())          # an empty run still gets both reports
>>> sorted(p.name for p in paths)
['report.html', 'report.md']
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


# ----------------------------------------------------------------------------------------- numbers and words
def fmt_number(x: Any) -> str:
    """How every number is shown in the reports: ints as they are, floats to 6 significant digits.

    >>> fmt_number(0.123456789), fmt_number(12), fmt_number(float("nan")), fmt_number(1e-9)
    ('0.123457', '12', 'nan', '1e-09')
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"


def _get(d: Mapping[Any, Any], k: Any) -> Any:
    return d[str(k)] if str(k) in d else d[k]


def _llm_section(llm: dict[str, Any]) -> str:
    acc = {int(k): v for k, v in llm["probe_test_accuracy"].items()}
    layers = sorted(acc)
    show = layers[:: max(1, len(layers) // 6)]
    show += [layers[-1]] if layers[-1] not in show else []
    lpf = {int(k): v for k, v in llm["lowpass_energy_fraction"].items()}
    nul = {int(k): v for k, v in llm["lowpass_energy_null_mean"].items()}
    pv = {int(k): v for k, v in llm["lowpass_energy_p_value"].items()}
    cos = {int(k): v for k, v in llm["lat_vs_mean_diff_cosine"].items()}
    n_sig = sum(1 for l in layers if pv[l] < 0.05)
    best = llm["best_layer"]
    return "\n".join(
        [
            f"Model: **{llm['model']}**, {llm['n_pairs']} CoT/direct pairs ({llm['pairing']} pairing), "
            f"token rule `{llm['position']}`.",
            "",
            f"- Held-out logistic-probe accuracy per layer: {', '.join(f'L{l} {acc[l]:.2f}' for l in show)}. "
            f"Best layer: {best}.",
            f"- LAT direction vs mean-difference direction, cosine: {', '.join(f'L{l} {cos[l]:.3f}' for l in show)}.",
            f"- Low-pass energy fraction of the mean-difference direction (cutoff {llm['lowpass_cutoff_bins']} bins ≈ 10%): "
            f"{', '.join(f'L{l} {lpf[l]:.3f} (null {nul[l]:.3f}, p={pv[l]:.2f})' for l in show)}.",
            f"- Layers where the low-frequency share beats the random-permutation null at p<0.05: {n_sig} of {len(layers)}. "
            + (
                "The CoT direction is **not** concentrated at low frequencies in this model at this scale."
                if n_sig <= max(1, len(layers) // 10)
                else "The CoT direction carries more low-frequency energy than the null."
            ),
            f"- Dispersion (trace of the covariance of per-pair differences) at layer {best}: "
            f"{_get(llm['dispersion'], best)}, after low-pass {_get(llm['dispersion_lowpass'], best)}"
            + _dispersion_refs(llm, best)
            + ".",
            "- Timings: " + ", ".join(f"{k} {fmt_number(v)} s" for k, v in llm["timings_s"].items()) + ".",
        ]
    )


def _dispersion_refs(block: Mapping[Any, Any], layer: Any, prefix: str = "dispersion_lowpass") -> str:
    """`` (isotropic expectation X, permutation null Y, p = Z)`` for a low-passed dispersion, when stored."""
    parts = []
    for key, label in (("isotropic", "isotropic low-pass expectation"), ("null_mean", "permutation null")):
        d = block.get(f"{prefix}_{key}") or {}
        if str(layer) in d or layer in d:
            parts.append(f"{label} {float(_get(d, layer)):.1f}")
    pv = block.get(f"{prefix}_p_value") or {}
    if parts and (str(layer) in pv or layer in pv):
        parts.append(f"p = {float(_get(pv, layer)):.2f}")
    return f" ({', '.join(parts)})" if parts else ""


def _crossmodel_section(cm: dict[str, Any]) -> str:
    lines = [
        f"VLM: **{cm['vlm_model']}**; layers matched by relative depth. Cutoff {cm['image']['cutoff']} of the bins.",
        "",
    ]
    for cond, what in (
        ("text", "text-only input through the VLM's language model (released L2V-CoT reading)"),
        ("image", "the same problems rendered as images"),
    ):
        if cond not in cm:
            continue
        pl = {int(k): v for k, v in cm[cond]["per_layer"].items()}
        ks = sorted(pl)
        pick = sorted({ks[0], ks[len(ks) // 2], ks[-1]})
        lines.append(
            f"- **{what}**: "
            + "; ".join(
                f"L{l}: raw cos {pl[l]['raw_cosine']:.3f}, low-pass {pl[l]['lowpass_cosine']:.3f} "
                f"(null 95% {pl[l]['lowpass_null_q95']:.3f}, p={pl[l]['lowpass_p_value']:.2f}), high-pass "
                f"{pl[l]['highpass_cosine']:.3f}; dispersion LLM {pl[l]['dispersion_llm']:.1f} / VLM "
                f"{pl[l]['dispersion_vlm']:.1f} / VLM low-pass {pl[l]['dispersion_vlm_lowpass']:.1f}"
                + (
                    f" (isotropic low-pass expectation {pl[l]['dispersion_vlm_lowpass_isotropic']:.1f}, "
                    f"permutation null {pl[l]['dispersion_vlm_lowpass_null_mean']:.1f}, "
                    f"p = {pl[l]['dispersion_vlm_lowpass_p_value']:.2f})"
                    if "dispersion_vlm_lowpass_isotropic" in pl[l]
                    else ""
                )
                for l in pick
            )
            + "."
        )
        lines.append(
            f"  Layers where the low-pass cosine beats both the raw cosine and the permutation null (p<0.05): "
            f"{cm[cond]['layers_lowpass_beats_null_and_raw']} of {cm[cond]['n_layers']}."
        )
    return "\n".join(lines)


def findings(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(title, markdown)`` per finding of a run summary: the LLM and cross-model numbers in words, then every
    stage's own ``report`` paragraph."""
    out: list[tuple[str, str]] = []
    for name, block in s.items():  # in stage order, so the released reading sits beside the cue reading
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("report"), str):
            out.append((str(block.get("title", name)), block["report"]))
        elif "probe_test_accuracy" in block:  # per-layer analyses without a paragraph (demo llm, cotscope analyse)
            title = "CoT vs direct in the LLM" if name == "llm" else f"CoT vs direct: {name}"
            out.append((title, _llm_section(block)))
        elif name == "crossmodel" and "image" in block:
            out.append(
                ("LLM ↔ VLM: is the CoT direction shared in its low-frequency part?", _crossmodel_section(block))
            )
    return out


def analysis_rows(a: Any) -> list[dict[str, Any]]:
    """Per-layer rows of a stored per-layer analysis (:class:`cotscope.figures.inputs.LayerAnalysis`)."""
    rows = []
    for l in sorted(a.data["layers"], key=int):
        r = a.data["layers"][l]
        null = r.get("lowpass_energy_null") or {}
        rows.append(
            {
                "layer": int(l),
                "probe test acc": r["probe"].get("test_accuracy"),
                "probe train acc": r["probe"].get("train_accuracy"),
                "cos(LAT, mean diff)": r.get("lat_vs_mean_diff_cosine"),
                "‖mean diff‖": r.get("mean_diff_norm"),
                "low-pass energy": r.get("lowpass_energy_fraction"),
                "null mean": null.get("null_mean"),
                "p": null.get("p_value"),
                "dispersion": r.get("dispersion"),
                "dispersion low-pass": r.get("dispersion_lowpass"),
            }
        )
    return rows


def sweep_rows(path: str | Path) -> list[dict[str, Any]]:
    """Per-cell means of a sweep table: accuracy, gold log-prob and response length per (control, layer, λ)."""
    import numpy as np

    from cotscope.analyses.sweeps import read_table

    cells: dict[str, list[dict[str, Any]]] = {}
    for r in read_table(path):
        cells.setdefault(r["cell_id"], []).append(r)
    out = []
    for cid, rs in cells.items():
        out.append(
            {
                "cell": cid,
                "control": rs[0]["control"],
                "layer": rs[0]["layer"],
                "λ": rs[0]["lam"],
                "n": len(rs),
                "accuracy": float(np.mean([bool(r["correct"]) for r in rs])),
                "log p(gold)": float(np.nanmean([r["gold_logprob"] for r in rs])),
                "tokens": float(np.mean([r["n_tokens"] for r in rs])),
            }
        )
    return sorted(
        out,
        key=lambda r: (
            r["control"] != "none",
            r["control"],
            r["layer"] if r["layer"] is not None else -1,
            r["λ"] or 0.0,
        ),
    )


def reproduce_commands(run_dir: str | Path, s: Mapping[str, Any]) -> list[str]:
    """The commands that made the run (as recorded), then the ones that redraw its figures and reports."""
    cmds = [str(c) for c in s.get("commands") or []]
    cmds += [f"cotscope figures {run_dir}", f"cotscope report {run_dir}"]
    return list(dict.fromkeys(cmds))


# ----------------------------------------------------------------------------------------- markdown
def _md_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str] | None = None) -> list[str]:
    if not rows:
        return []
    cols = list(cols or rows[0].keys())

    def cell(v: Any) -> str:
        if v is None:
            return ""
        text = ", ".join(fmt_number(x) for x in v) if isinstance(v, (list, tuple)) else fmt_number(v)
        return text.replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"] + [
        "| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows
    ]


def render_markdown(s: Mapping[str, Any], info: Any = None, skipped: Mapping[str, str] | None = None) -> str:
    """The markdown report of a run: findings, figures (with what each was drawn from), stored per-layer results,
    stages, provenance and commands. ``info`` is :func:`cotscope.run_info.collect` of the run (without it, the
    figure list comes from the summary)."""
    from cotscope.run_info import SECTIONS

    run_dir = s.get("run_dir", info.run_dir if info is not None else ".")
    lines = [
        f"# {s.get('title', 'cotscope run')}",
        "",
        f"Run `{run_dir}`; report written {_now()} by cotscope {_version()}. Every number is measured in this run "
        "(`summary.json` and the stored results); `report.html` beside this file has every figure, static and "
        "interactive, and every number of `summary.json`.",
        "",
    ]
    for title, body in findings(s):
        lines += [f"## {title}", "", body.strip(), ""]
    if info is not None and info.analyses:
        lines += ["## Stored per-layer analyses", ""]
        for a in info.analyses:
            lines += [
                f"**{a.name}** (`{_rel(info.run_dir, a.path)}`): {a.model_id}, token rule `{a.data['position']}`, "
                f"{a.data.get('n_pairs', '?')} pairs, best layer {a.data['best_layer']}.",
                "",
            ]
            lines += _md_table(analysis_rows(a)) + [""]
    lines += ["## Figures", ""]
    if info is not None:
        section = None
        for f in info.figures:
            if f.section != section:
                section = f.section
                lines += [f"### {SECTIONS.get(section, section)}", ""]
            inst = f" ({f.instance})" if f.instance else ""
            lines += [f"**{f.title}**{inst}. {f.description}", "", f"![{f.name}](figures/{f.png.name})", ""]
            extra = []
            if f.sources:
                extra.append("Drawn from " + ", ".join(f"`{x}`" for x in f.sources) + ".")
            if f.html is not None:
                extra.append(f"Interactive: [{f.html.name}](figures/{f.html.name}).")
            if extra:
                lines += [" ".join(extra), ""]
    else:
        for f in s.get("figures") or []:
            if str(f).endswith(".png"):
                name = Path(str(f)).name
                lines += [f"![{name}](figures/{name})", ""]
    skipped = skipped if skipped is not None else s.get("figures_skipped") or {}
    if skipped:
        lines += ["### Figures not drawn", ""] + [f"- `{k}`: {v}" for k, v in skipped.items()] + [""]
    if s.get("stages"):
        lines += ["## Stages", ""]
        lines += _md_table(
            [
                {"stage": n, "status": st.get("status"), "seconds": st.get("seconds"), "note": st.get("error", "")}
                for n, st in s["stages"].items()
            ]
        )
        if "total_seconds" in s:
            lines += ["", f"Total: {fmt_number(s['total_seconds'])} s."]
        lines.append("")
    if info is not None:
        lines += _md_provenance(info, s)
    lines += ["## Reproduce", "", "```bash", *reproduce_commands(run_dir, s), "```", ""]
    if s.get("config"):
        lines += ["Configuration: " + ", ".join(f"`{k}={v}`" for k, v in s["config"].items()) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_provenance(info: Any, s: Mapping[str, Any]) -> list[str]:
    lines = ["## Provenance", ""]
    models = info.models()
    if models:
        lines += ["### Models", ""] + _md_table(models) + [""]
    if info.directions:
        lines += ["### Direction files", ""]
        lines += _md_table(
            [
                {
                    "file": a.path,
                    **{
                        k: a.meta.get(k)
                        for k in (
                            "model_id",
                            "method",
                            "token_rule",
                            "pairing",
                            "layers",
                            "normalisation",
                            "n_pairs",
                            "created",
                        )
                    },
                }
                for a in info.directions
            ]
        ) + [""]
    if info.stores:
        lines += ["### Stores and runs", ""]
        lines += _md_table(
            [
                {
                    "folder": a.path,
                    **{
                        k: a.meta.get(k)
                        for k in ("format", "model_id", "n_items", "n_traces", "layers", "positions", "stimulus_hash")
                    },
                }
                for a in info.stores
            ]
        ) + [""]
    if info.tables:
        lines += ["### Sweep tables", ""]
        lines += _md_table(
            [
                {
                    "table": a.path,
                    **{k: a.meta.get(k) for k in ("rows", "direction_model", "target_model", "config_hash")},
                }
                for a in info.tables
            ]
        ) + [""]
    if info.exports:
        lines += ["### Exports", ""]
        lines += _md_table(
            [
                {
                    "file": a.path,
                    **{k: a.meta.get(k) for k in ("format", "bytes", "model_id", "method", "normalisation")},
                }
                for a in info.exports
            ]
        ) + [""]
    if info.others:
        lines += ["### Other artifacts", ""] + [f"- `{a.path}`: {a.meta.get('format')}" for a in info.others] + [""]
    env = (s.get("environment") or {}).get("libraries") or {}
    now = _libraries_now()
    names = sorted(set(env) | set(now))
    if names:
        lines += ["### Libraries", ""]
        lines += _md_table([{"library": n, "run": env.get(n, ""), "report": now.get(n, "")} for n in names]) + [""]
    return lines


# ----------------------------------------------------------------------------------------- entry points
def _rel(run_dir: Path, p: Path) -> str:
    from cotscope.run_info import rel

    return rel(run_dir, p)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    """The installed cotscope version (what artifacts record), else the package's ``__version__``."""
    import importlib.metadata as md

    try:
        return md.version("cotscope")
    except md.PackageNotFoundError:
        import cotscope

        return getattr(cotscope, "__version__", "?")


def _libraries_now() -> dict[str, str]:
    from cotscope.analyses.artifacts import library_versions

    return library_versions()


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/summary.json``, or a minimal summary for runs made without :func:`cotscope.stages.run_stages`."""
    import json

    p = Path(run_dir) / SUMMARY_FILE
    if p.is_file():
        return json.loads(p.read_text())
    return {"title": f"cotscope run: {Path(run_dir).resolve().name}", "run_dir": str(run_dir)}


def write_reports(
    run_dir: str | Path, summary: Mapping[str, Any] | None = None, skipped: Mapping[str, str] | None = None
) -> list[Path]:
    """Write ``report.md`` and ``report.html`` for ``summary`` (default: ``RUN/summary.json``) and the figures
    already drawn into ``RUN/figures``; returns the files written. ``skipped``: figure → why it was not drawn."""
    import json

    from cotscope.analyses.atomic import write_text_atomic
    from cotscope.report_html import render_html
    from cotscope.run_info import collect

    run_dir = Path(run_dir)
    # as summary.json stores it (tuples become lists, paths strings): the reports show what is on disk
    s = json.loads(json.dumps(summary, default=str)) if summary is not None else load_summary(run_dir)
    info = collect(run_dir)
    md, html = run_dir / "report.md", run_dir / "report.html"
    write_text_atomic(md, render_markdown(s, info, skipped))
    write_text_atomic(html, render_html(s, info, skipped))
    log.info("reports: %s, %s (%d figures)", md, html, len(info.figures))
    return [md, html]


def report_run(run_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """``cotscope report RUN``: draw every figure whose inputs exist (unless ``figures=False``: reuse the drawn
    ones), then write ``report.md`` and ``report.html``. Works for runs without ``summary.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        from cotscope.errors import CotscopeError

        raise CotscopeError(
            f"no run directory at {run_dir}; run `cotscope demo`, `cotscope collect` … or the stages into it first"
        )
    s = load_summary(run_dir)
    skipped = None
    if figures:
        from cotscope.figures.__main__ import render_all

        res = render_all(run_dir, verbose=False)
        s["figures"] = list(res)
        skipped = {k.figure: k.reason for k in res.skipped}
    return write_reports(run_dir, s, skipped)


def write_report(s: dict[str, Any]) -> str:
    """Deprecated name of :func:`render_markdown`."""
    return render_markdown(s)
