"""Turn a run's ``summary.json`` into ``report.md``: the measured numbers in words, with figure links."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt_layers(d: dict, layers: list) -> str:
    return ", ".join(f"L{l}: {d[str(l)] if str(l) in d else d.get(l)}" for l in layers)


def _llm_section(llm: dict[str, Any]) -> list[str]:
    acc = {int(k): v for k, v in llm["probe_test_accuracy"].items()}
    layers = sorted(acc)
    show = layers[:: max(1, len(layers) // 6)] + ([layers[-1]] if layers[-1] not in layers[:: max(1, len(layers) // 6)] else [])
    lpf = {int(k): v for k, v in llm["lowpass_energy_fraction"].items()}
    nul = {int(k): v for k, v in llm["lowpass_energy_null_mean"].items()}
    pv = {int(k): v for k, v in llm["lowpass_energy_p_value"].items()}
    cos = {int(k): v for k, v in llm["lat_vs_mean_diff_cosine"].items()}
    n_sig = sum(1 for l in layers if pv[l] < 0.05)
    best = llm["best_layer"]
    return [
        f"Model: **{llm['model']}**, {llm['n_pairs']} CoT/direct pairs ({llm['pairing']} pairing), "
        f"token rule `{llm['position']}`.", "",
        "## CoT vs direct in the LLM", "",
        f"- Held-out logistic-probe accuracy per layer: {', '.join(f'L{l} {acc[l]:.2f}' for l in show)}. "
        f"Best layer: {best}.",
        f"- LAT direction vs mean-difference direction, cosine: {', '.join(f'L{l} {cos[l]:.3f}' for l in show)}.",
        f"- Low-pass energy fraction of the mean-difference direction (cutoff {llm['lowpass_cutoff_bins']} bins ≈ 10%): "
        f"{', '.join(f'L{l} {lpf[l]:.3f} (null {nul[l]:.3f}, p={pv[l]:.2f})' for l in show)}.",
        f"- Layers where the low-frequency share beats the random-permutation null at p<0.05: {n_sig} of {len(layers)}. "
        + ("The CoT direction is **not** concentrated at low frequencies in this model at this scale."
           if n_sig <= max(1, len(layers) // 10) else "The CoT direction carries more low-frequency energy than the null."),
        f"- Dispersion (trace of the covariance of per-pair differences) at layer {best}: "
        f"{llm['dispersion'][str(best)] if str(best) in llm['dispersion'] else llm['dispersion'][best]}, after low-pass "
        f"{llm['dispersion_lowpass'][str(best)] if str(best) in llm['dispersion_lowpass'] else llm['dispersion_lowpass'][best]}.",
        f"- Timings (s): {llm['timings_s']}.", "",
    ]


def render_markdown(s: dict[str, Any]) -> str:
    """The markdown report of a run summary (sections for the stages that ran)."""
    lines = [f"# {s.get('title', 'cotscope run')}", "",
             "All numbers below are measured in this run (`summary.json`).", ""]
    if isinstance(s.get("llm"), dict) and "probe_test_accuracy" in s["llm"]:
        lines += _llm_section(s["llm"])
    cm = s.get("crossmodel")
    if isinstance(cm, dict) and "image" in cm:
        lines += ["## LLM ↔ VLM: is the CoT direction shared in its low-frequency part?", "",
                  f"VLM: **{cm['vlm_model']}**; layers matched by relative depth. Cutoff {cm['image']['cutoff']} of the bins.", ""]
        for cond, what in (("text", "text-only input through the VLM's language model (released L2V-CoT reading)"),
                           ("image", "the same problems rendered as images")):
            pl = {int(k): v for k, v in cm[cond]["per_layer"].items()}
            ks = sorted(pl)
            pick = sorted({ks[0], ks[len(ks) // 2], ks[-1]})
            lines.append(f"- **{what}**: " + "; ".join(
                f"L{l}: raw cos {pl[l]['raw_cosine']:.3f}, low-pass {pl[l]['lowpass_cosine']:.3f} "
                f"(null 95% {pl[l]['lowpass_null_q95']:.3f}, p={pl[l]['lowpass_p_value']:.2f}), high-pass "
                f"{pl[l]['highpass_cosine']:.3f}; dispersion LLM {pl[l]['dispersion_llm']:.1f} / VLM "
                f"{pl[l]['dispersion_vlm']:.1f} / VLM low-pass {pl[l]['dispersion_vlm_lowpass']:.1f}" for l in pick) + ".")
            lines.append(f"  Layers where the low-pass cosine beats both the raw cosine and the permutation null (p<0.05): "
                         f"{cm[cond]['layers_lowpass_beats_null_and_raw']} of {cm[cond]['n_layers']}.")
        lines.append("")
    for name, block in s.items():
        if isinstance(block, dict) and "report" in block:
            lines += [f"## {block.get('title', name)}", "", block["report"], ""]
    lines += ["## Stages", ""]
    for name, st in s["stages"].items():
        lines.append(f"- {name}: {st['status']}" + (f" ({st['seconds']} s)" if "seconds" in st else f" — {st.get('error')}"))
    lines += ["", "## Figures", ""]
    for f in s.get("figures") or []:
        if str(f).endswith(".png"):
            rel = str(f).split("figures/", 1)[-1]
            lines.append(f"![{rel}](figures/{rel})")
    return "\n".join(lines) + "\n"


def write_reports(run_dir: str | Path, summary: dict[str, Any]) -> list[Path]:
    """Write ``report.md`` for ``summary`` into ``run_dir``; returns the files written."""
    from cotscope.analyses.atomic import write_text_atomic

    path = Path(run_dir) / "report.md"
    write_text_atomic(path, render_markdown(summary))
    return [path]


def write_report(s: dict[str, Any]) -> str:
    """Deprecated name of :func:`render_markdown`."""
    return render_markdown(s)
