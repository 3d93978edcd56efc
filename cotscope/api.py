"""The few calls a notebook needs, as plain functions over the three layers (re-exported by ``cotscope``).

>>> import cotscope as cs
>>> len(cs.pairs(4)), cs.pairs(4)[0].cot.messages[0]["role"]
(4, 'user')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotscope.errors import CotscopeError


def pairs(
    source: int | str | Path | Sequence[Any] = 128, *, pairing: str = "cue", seed: int = 0, with_answers: bool = True
) -> list[Any]:
    """CoT / direct prompt pairs from ``source``: a number of seeded arithmetic problems, a JSONL file of your
    own problems, or a list of :class:`~cotscope.probes.stimuli.Problem`. ``pairing``: ``"cue"`` (CoT vs direct
    instruction) or ``"answer"`` (same question, worked vs short answer)."""
    from cotscope.probes.stimuli import generate_problems, load_problems_jsonl, make_pairs

    if isinstance(source, bool):
        raise CotscopeError(f"pairs(source={source!r}): pass a number of problems, a JSONL path or a list of problems")
    if isinstance(source, int):
        problems = generate_problems(source, seed=seed)
    elif isinstance(source, (str, Path)):
        problems = load_problems_jsonl(source)
    else:
        problems = list(source)
    return make_pairs(problems, pairing=pairing, with_answers=with_answers)


def collect(
    model: Any,
    pairs: Sequence[Any],
    out: str | Path,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[str] = ("last_prompt", "last", "answer_mean"),
    batch_size: int = 16,
    progress: bool = True,
    workers: int = 1,
    ray_address: str | None = None,
    **kw: Any,
) -> Any:
    """Paired activations of ``model`` (a LoadedModel or a spec for :func:`cotscope.load`) into the store ``out``.

    ``workers=N > 1`` spreads the batches over N Ray actors (one model replica each; ``ray_address`` joins an
    existing cluster) and merges their parts into ``out``, bit-identical to one process (:mod:`cotscope.workers`).
    """
    from cotscope.probes.collect import collect_pairs
    from cotscope.probes.models.loading import LoadedModel, load_model

    if workers != 1 or ray_address is not None:
        from cotscope.workers import collect_distributed

        return collect_distributed(
            model,
            pairs,
            out,
            workers=workers,
            ray_address=ray_address,
            layers=layers,
            positions=positions,
            batch_size=batch_size,
            progress=progress,
            **kw,
        )
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    return collect_pairs(
        lm, pairs, out, layers=layers, positions=positions, batch_size=batch_size, progress=progress, **kw
    )


def sweep(
    model: Any,
    direction: Any,
    prompts: Sequence[Any],
    table: str | Path,
    cfg: Any = None,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    **kw: Any,
) -> Any:
    """:func:`cotscope.probes.sweep.run_sweep` of ``model`` (a LoadedModel or a spec); returns its SweepResult.

    ``workers=N > 1`` spreads the sweep's batches over N Ray actors (:func:`cotscope.workers.sweep_distributed`);
    the merged table equals the one-process table row for row and byte for byte.
    """
    from cotscope.probes.models.loading import LoadedModel, load_model
    from cotscope.probes.sweep import SweepConfig, run_sweep

    cfg = cfg if cfg is not None else SweepConfig()
    if workers != 1 or ray_address is not None:
        from cotscope.workers import sweep_distributed

        run_kw = {k: v for k, v in kw.items() if k in ("own", "overwrite")}
        sweep_distributed(model, direction, prompts, table, cfg, workers=workers, ray_address=ray_address, **run_kw)
        kw = {k: v for k, v in kw.items() if k != "overwrite"}
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    return run_sweep(lm, direction, prompts, table, cfg, **kw)


def analyse(
    store: Any,
    position: str = "last_prompt",
    *,
    layers: Sequence[int] | None = None,
    cutoff: float = 0.1,
    n_perm: int = 200,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Per-layer mean difference, LAT, probe, spectrum and nulls of a store (a path or an ActivationStore).

    The result's ``.directions`` holds one DirectionSet per method (``"mean_diff"``, ``"lat"``). With ``out``,
    the directions and ``analysis.json`` are written there (``out/directions``, ``out/analysis``).
    """
    from cotscope.analyses.layer_sweep import analyse_store
    from cotscope.analyses.store import ActivationStore

    st = store if isinstance(store, ActivationStore) else ActivationStore(store)
    res = analyse_store(st, position, layers=layers, cutoff=cutoff, n_perm=n_perm, seed=seed, progress=progress)
    if out is not None:
        from cotscope.analyses.atomic import write_json_atomic

        out = Path(out)
        name = Path(st.path).name
        for method, ds in res.directions.items():
            ds.save(out / "directions" / f"{name}_{method}.safetensors")
        write_json_atomic(out / "analysis" / f"{name}.json", res.to_dict())
    return res


def generate(
    model: Any, prompts: str | Sequence[str], *, max_new_tokens: int = 64, chat: bool = True, **kw: Any
) -> str | list[str]:
    """Greedy continuations of ``prompts`` (chat-templated when ``chat``); steered when called inside
    :func:`cotscope.steer`. Returns one string per prompt (a string for a string)."""
    import torch

    single = isinstance(prompts, str)
    texts = [prompts] if single else list(prompts)
    tok = model.tokenizer
    if chat:
        texts = [
            tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(model.device)
    finally:
        tok.padding_side = side
    with torch.no_grad():
        ids = model.hf.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
            **kw,
        )
    outs = tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs[0] if single else outs


def report(run_dir: str | Path, *, figures: bool = True) -> list[Path]:
    """(Re)draw a run's figures from its stored results and write ``report.md`` and ``report.html``; works for runs
    made with CLI commands or this API alone (no ``summary.json``). ``figures=False`` reuses the drawn figures."""
    from cotscope.report import report_run

    return report_run(run_dir, figures=figures)
