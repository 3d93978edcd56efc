"""DRIFT gradient guidance: bias fine-tuning gradients with the reasoning prior Δ (METHODS.md §6).

Sign convention. ``Δ = θ_reason − θ_VL`` (see :mod:`analyses.prior`). The paper writes the guided
gradient as ``g̃ = g + α·(…)Δ`` with **α = −1**, so the three rules are

* ``absolute``:  ``g̃ = g − Δ``
* ``grad_norm``: ``g̃ = g − ‖g‖·Δ/‖Δ‖``
* ``adaptive``:  ``α' = (1 + cos(g, Δ))/2``, ``g̃ = g − α'‖g‖·Δ/‖Δ‖``

Because an optimizer steps along ``−g̃``, α = −1 adds a step along ``+Δ``: towards the reasoning
model. The adaptive rule injects nothing when the descent direction ``−g`` already points along
``Δ`` (cos = −1) and cancels the gradient's component fully when ``g`` points along ``Δ`` (cos = 1).
All norms and cosines are per tensor; ``eps = 1e-12`` guards every division
(``Δ/(‖Δ‖+eps)``, ``cos = g·Δ/(‖g‖‖Δ‖+eps)``). ``alpha`` is a parameter for ablations.

``normalize_delta_to_param`` (default ``True``, as released: ``DeltaDirectionPrior`` in ``WikiChao/DRIFT``)
first rescales every Δ tensor to the norm of the parameter being fine-tuned, ``Δ ← Δ·‖θ‖/‖Δ‖``
(:func:`normalize_deltas`). Only the ``absolute`` rule changes with it: ``grad_norm`` and ``adaptive`` use
``Δ/‖Δ‖`` and a cosine, which ignore Δ's scale.

Sign conventions, released code vs cotscope (both move the weights towards θ_reason):

=============  ====================================  ==========================================
               released (``scale=``, ``alpha=+1``)    cotscope (``rule=``, ``alpha=-1``)
=============  ====================================  ==========================================
Δ              ``prior − sft`` = θ_reason − θ_VL      ``θ_reason − θ_VL`` (:mod:`analyses.prior`)
absolute       ``g − α·Δ``                            ``g + alpha·Δ``
grad-norm      ``g − α‖g‖·Δ/‖Δ‖`` (``gradnorm``)      ``g + alpha‖g‖·Δ/‖Δ‖`` (``grad_norm``)
adaptive       ``α' = α(cos+1)/2; g − α'‖g‖Δ/‖Δ‖``    ``alpha' = alpha(1+cos)/2; g + alpha'‖g‖Δ/‖Δ‖``
               (``adaptive_cosine``)                  (``adaptive``)
=============  ====================================  ==========================================

>>> g, d = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
>>> guide_gradient(g, d, "grad_norm")
tensor([ 1., -1.])
>>> hooks = register_drift_hooks(model, "out/prior.safetensors", "adaptive")   # doctest: +SKIP
>>> ...; hooks.remove()                                                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from cotscope.analyses.prior import PriorArtifact, PriorFitError, canonical_name, layer_and_module
from cotscope.errors import CotscopeError

RULES = ("absolute", "grad_norm", "adaptive")
EPS = 1e-12


class DriftError(CotscopeError):
    """Bad input to the DRIFT gradient rules or the alignment logger."""


def cosine(g: torch.Tensor, delta: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-tensor cosine ``g·Δ / (‖g‖‖Δ‖ + eps)`` (a 0-d tensor), computed in float32 or wider.

    >>> round(float(cosine(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0]))), 6)
    0.8
    """
    wd = torch.promote_types(g.dtype, torch.float32)
    gf, df = g.to(wd).flatten(), delta.to(device=g.device, dtype=wd).flatten()
    return (gf @ df) / (gf.norm() * df.norm() + eps)


def guide_gradient(
    g: torch.Tensor, delta: torch.Tensor, rule: str, alpha: float = -1.0, eps: float = EPS
) -> torch.Tensor:
    """Apply one DRIFT rule to gradient ``g`` of one tensor with prior ``delta`` (same shape).

    Returns a new tensor of ``g``'s dtype; see the module docstring for the formulas.
    """
    if rule not in RULES:
        raise DriftError(f"unknown DRIFT rule {rule!r}; use one of {RULES}")
    if g.shape != delta.shape:
        raise DriftError(
            f"gradient shape {tuple(g.shape)} differs from Δ shape {tuple(delta.shape)}; the prior "
            "does not belong to this parameter"
        )
    wd = torch.promote_types(g.dtype, torch.float32)  # float32 or wider (float64 stays float64)
    gf, df = g.to(wd), delta.to(device=g.device, dtype=wd)
    if rule == "absolute":
        out = gf + alpha * df
    else:
        unit = df / (df.norm() + eps)
        scale = gf.norm()
        if rule == "adaptive":
            scale = scale * (1.0 + cosine(gf, df, eps)) / 2.0
        out = gf + alpha * scale * unit
    return out.to(g.dtype)


def normalize_deltas(
    model: torch.nn.Module, deltas: Mapping[str, torch.Tensor], eps: float = EPS
) -> dict[str, torch.Tensor]:
    """``Δ·‖θ‖/‖Δ‖`` per tensor, ``θ`` the model's current value of that parameter (the released
    ``normalize_delta_to_param=True``; both norms clamped below at ``eps`` as released). Norms in float32 or wider.

    >>> m = torch.nn.Linear(2, 2, bias=False); _ = m.weight.data.copy_(torch.tensor([[3.0, 0], [0, 4]]))
    >>> normalize_deltas(m, {"weight": torch.tensor([[0.0, 1], [0, 0]])})["weight"]
    tensor([[0., 5.],
            [0., 0.]])
    """
    params = dict(model.named_parameters())
    out = {}
    for n, d in deltas.items():
        p = params[n].detach()
        wd = torch.promote_types(d.dtype, torch.float32)
        nd = d.to(wd).norm().clamp_min(eps)
        npar = p.to(device=d.device, dtype=wd).norm().clamp_min(eps)
        out[n] = (d.to(wd) * (npar / nd)).to(d.dtype)
    return out


def prior_tensors(
    model: torch.nn.Module, prior: PriorArtifact | str | Path | Mapping[str, Any], allow_partial: bool = False
) -> dict[str, torch.Tensor]:
    """``{parameter name: Δ tensor}`` on the parameters' devices and dtypes.

    ``prior`` is a :class:`~analyses.prior.PriorArtifact`, its path, or a mapping from parameter
    names (or canonical names such as ``layers.0.self_attn.q_proj.weight``) to arrays/tensors.
    Raises :class:`~analyses.prior.PriorFitError` if it does not fit.
    """
    params = dict(model.named_parameters())
    if isinstance(prior, (str, Path)):
        prior = PriorArtifact.load(prior)
    if isinstance(prior, PriorArtifact):
        mapping = prior.fit({n: tuple(p.shape) for n, p in params.items()}, allow_partial=allow_partial)
        raw = {pn: prior.get(c) for pn, c in mapping.items()}
    else:
        by_canon = {}
        for pn in params:
            c = canonical_name(pn)
            if c is not None:
                by_canon.setdefault(c[0], pn)
        raw, missing = {}, []
        for k, v in prior.items():
            pn = k if k in params else by_canon.get(k)  # parameter names or canonical names
            if pn is None:
                missing.append(k)
            else:
                raw[pn] = v
        if missing:
            raise PriorFitError(
                f"{len(missing)} Δ tensors name no parameter of this model, e.g. {missing[:4]}; "
                f"parameters look like {list(params)[:3]}"
            )
    out = {}
    for n, d in raw.items():
        p = params[n]
        t = torch.as_tensor(d)
        if tuple(t.shape) != tuple(p.shape):
            raise PriorFitError(f"Δ for {n} has shape {tuple(t.shape)}, the parameter {tuple(p.shape)}")
        out[n] = t.to(device=p.device, dtype=p.dtype)
    return out


@dataclasses.dataclass
class DriftHooks:
    """Handles of the registered gradient hooks; call :meth:`remove` to detach them."""

    handles: list
    deltas: dict[str, torch.Tensor]
    rule: str

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> DriftHooks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register_drift_hooks(
    model: torch.nn.Module,
    prior: PriorArtifact | str | Path | Mapping[str, Any],
    rule: str = "adaptive",
    alpha: float = -1.0,
    allow_partial: bool = False,
    normalize_delta_to_param: bool = True,
) -> DriftHooks:
    """Register a tensor hook on every parameter the prior covers that rewrites its gradient.

    The hook runs on each backward pass, before accumulation into ``.grad`` — with gradient
    accumulation the rule is applied per micro-batch. Use :func:`apply_drift_` instead to apply it
    once to the accumulated ``.grad`` right before ``optimizer.step()``. ``normalize_delta_to_param``
    rescales Δ to the parameters' norms at registration time (as released; see :func:`normalize_deltas`).
    """
    if rule not in RULES:
        raise DriftError(f"unknown DRIFT rule {rule!r}; use one of {RULES}")
    deltas = prior_tensors(model, prior, allow_partial)
    if normalize_delta_to_param:
        deltas = normalize_deltas(model, deltas)
    params = dict(model.named_parameters())
    handles = []
    for n, d in deltas.items():
        if not params[n].requires_grad:
            continue
        handles.append(params[n].register_hook(lambda g, d=d: guide_gradient(g, d, rule, alpha)))
    if not handles:
        raise DriftError(
            "no parameter covered by the prior requires grad; unfreeze the language-model weights "
            "the prior covers (e.g. attention and MLP projections)"
        )
    return DriftHooks(handles, deltas, rule)


@torch.no_grad()
def apply_drift_(
    model: torch.nn.Module,
    deltas: Mapping[str, torch.Tensor],
    rule: str,
    alpha: float = -1.0,
    normalize_delta_to_param: bool = False,
) -> int:
    """Rewrite ``.grad`` in place for every parameter in ``deltas``; returns how many were changed.

    ``deltas`` are used as given (pass ``normalize_deltas(model, deltas)`` once, or ``normalize_delta_to_param=True``
    to rescale them to the parameters' *current* norms at this call)."""
    params = dict(model.named_parameters())
    if normalize_delta_to_param:
        deltas = normalize_deltas(model, deltas)
    n = 0
    for name, d in deltas.items():
        p = params[name]
        if p.grad is not None:
            p.grad.copy_(guide_gradient(p.grad, d, rule, alpha))
            n += 1
    return n


def _default_loss(model: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    out = model(**batch)
    loss = getattr(out, "loss", None)
    if loss is None:
        raise DriftError(
            "the model returned no loss; put 'labels' in each batch or pass loss_fn=(model, batch) -> loss"
        )
    return loss


def log_gradient_alignment(
    model: torch.nn.Module,
    prior: PriorArtifact | str | Path | Mapping[str, Any],
    batches: Iterable[Mapping[str, Any]],
    n_steps: int,
    *,
    rule: str | None = None,
    alpha: float = -1.0,
    lr: float = 1e-4,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable[[torch.nn.Module, Mapping[str, Any]], torch.Tensor] | None = None,
    allow_partial: bool = False,
    out_path: str | Path | None = None,
    progress: bool = True,
    normalize_delta_to_param: bool = True,
) -> list[dict]:
    """Run ``n_steps`` optimizer steps and log ``cos(g, Δ)`` per tensor per step (a tidy table).

    Each row: ``step, loss, param, layer, module, cos, grad_norm, delta_norm`` (raw ‖Δ‖),
    ``delta_norm_used`` (after ``normalize_delta_to_param``, default on as released) and, with a ``rule``,
    ``cos_guided`` (cosine of the guided gradient that was actually applied). Tensors whose Δ is
    exactly zero are trained but not logged (their cosine is undefined). ``batches`` are
    cycled if shorter than ``n_steps``; each is passed as ``model(**batch)`` (include ``labels``) or
    to ``loss_fn``. The default optimizer is AdamW(lr) over parameters that require grad.
    ``out_path`` (``.csv`` or ``.json``) receives the table atomically.
    """
    if n_steps < 1:
        raise DriftError(f"n_steps must be at least 1, got {n_steps}")
    if rule is not None and rule not in RULES:
        raise DriftError(f"unknown DRIFT rule {rule!r}; use one of {RULES} or None (plain fine-tuning)")
    deltas = prior_tensors(model, prior, allow_partial)
    raw_norms = {n: float(d.float().norm()) for n, d in deltas.items()}
    if normalize_delta_to_param:
        deltas = normalize_deltas(model, {n: d for n, d in deltas.items() if raw_norms[n] > 0}) | {
            n: d for n, d in deltas.items() if raw_norms[n] == 0
        }
    params = dict(model.named_parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not any(params[n].requires_grad for n in deltas):
        raise DriftError("no parameter covered by the prior requires grad; nothing to log")
    opt = optimizer or torch.optim.AdamW(trainable, lr=lr)
    loss_fn = loss_fn or _default_loss
    batch_list = list(batches)
    if not batch_list:
        raise DriftError("no batches given")
    steps = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="DRIFT cos(g, Δ)", unit="step")
    rows: list[dict] = []
    model.train()
    delta_norms = raw_norms
    used_norms = {n: float(d.float().norm()) for n, d in deltas.items()}
    if not any(delta_norms.values()):
        raise DriftError("Δ is zero on every tensor (identical backbones): cos(g, Δ) is undefined")
    logged = {n: d for n, d in deltas.items() if delta_norms[n] > 0}  # cos(g, 0) is undefined: not logged
    for step, batch in zip(steps, itertools.cycle(batch_list)):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        with torch.no_grad():
            for n, d in logged.items():
                g = params[n].grad
                if g is None:
                    continue
                layer, module = layer_and_module(_canon(n))
                row = {
                    "step": step,
                    "loss": float(loss),
                    "param": n,
                    "layer": layer,
                    "module": module,
                    "cos": float(cosine(g, d)),
                    "grad_norm": float(g.float().norm()),
                    "delta_norm": delta_norms[n],
                    "delta_norm_used": used_norms[n],
                }
                if rule is not None:
                    gg = guide_gradient(g, d, rule, alpha)
                    row["cos_guided"] = float(cosine(gg, d))
                    g.copy_(gg)
                rows.append(row)
        opt.step()
    if not rows:
        raise DriftError("no parameter covered by the prior received a gradient; check that the loss depends on them")
    if out_path is not None:
        write_table(rows, out_path)
    return rows


def _canon(name: str) -> str:
    c = canonical_name(name)
    return c[0] if c else name


def write_table(rows: list[dict], path: str | Path) -> Path:
    """Write a tidy table as CSV (``.csv``) or JSON (anything else), atomically."""
    import csv
    import io

    from cotscope.analyses.atomic import write_json_atomic, write_text_atomic

    path = Path(path)
    if path.suffix == ".csv":
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(path, buf.getvalue())
    else:
        write_json_atomic(path, rows)
    return path


def _sft_example(processor: Any, image: Any, prompt: str, answer: str) -> dict:
    """One supervised example: the answer tokens are the only labels (prompt and image tokens are -100)."""
    tok = getattr(processor, "tokenizer", processor)
    eos = tok.eos_token or ""
    full = processor(text=prompt + answer + eos, images=[image], return_tensors="pt")
    n_prompt = processor(text=prompt, images=[image], return_tensors="pt")["input_ids"].shape[1]
    labels = full["input_ids"].clone()
    labels[:, :n_prompt] = -100
    if not bool((labels != -100).any()):
        raise DriftError("the answer adds no tokens after the prompt; cannot build a supervised example")
    return {**full, "labels": labels}


def _load_vlm(vlm_dir: str | Path, dtype: Any, device: str | None, device_map: Any) -> tuple[torch.nn.Module, Any, Any]:
    """``(model, processor, input device)`` through :func:`probes.models.loading.load_model`."""
    from cotscope.probes.models.loading import load_model

    lm = load_model(vlm_dir, dtype=dtype, device=device, device_map=device_map)
    if not lm.is_vlm:
        raise DriftError(f"{vlm_dir} is a text-only model ({lm.model_type}); drift alignment fine-tunes a VLM")
    return lm.hf, lm.processor, lm.device


def _on(batch: Mapping[str, Any], device: Any) -> dict:
    if device is None:
        return dict(batch)
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def run_drift_alignment(
    vlm_dir: str | Path,
    prior: PriorArtifact | str | Path,
    out_dir: str | Path,
    *,
    n_steps: int = 6,
    batch_size: int = 2,
    lr: float = 1e-5,
    rule: str | None = None,
    seed: int = 0,
    kinds: tuple[str, ...] = ("expression", "counting", "bars"),
    dtype: Any = "float32",
    device: str | None = "cpu",
    device_map: Any = None,
) -> dict:
    """cos(g, Δ) during a few fine-tuning steps of a saved VLM on the bundled visual problems (for ``make demo``).

    Only the parameters the prior covers are trained (AdamW, ``lr``); each step averages the
    answer-token loss of ``batch_size`` rendered items (:func:`probes.stimuli.visual.generate_visual_items`,
    direct question, the exact number as target). Writes ``drift_cos.csv`` into ``out_dir`` (drawn by
    ``cotscope figures``)
    and returns summary numbers. A negative cosine means plain descent already moves towards θ_reason.
    """
    import numpy as np

    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.probes.vision_latents import chat_prompt

    torch.manual_seed(seed)
    model, processor, in_dev = _load_vlm(vlm_dir, dtype, device, device_map)
    deltas = prior_tensors(model, prior)
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for n in deltas:
        params[n].requires_grad_(True)
    items = generate_visual_items(n_steps * batch_size, seed=seed, kinds=kinds)
    examples = [
        _sft_example(processor, it.image, chat_prompt(processor, it.direct_prompt), str(it.answer)) for it in items
    ]
    batches = [{"examples": examples[i : i + batch_size]} for i in range(0, len(examples), batch_size)]

    def loss_fn(m: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        return torch.stack([m(**_on(ex, in_dev)).loss.float() for ex in batch["examples"]]).mean()

    out_dir = Path(out_dir)
    rows = log_gradient_alignment(
        model, deltas, batches, n_steps, rule=rule, lr=lr, loss_fn=loss_fn, out_path=out_dir / "drift_cos.csv"
    )
    cos = np.array([r["cos"] for r in rows])
    by_mod: dict[str, list[float]] = {}
    for r in rows:
        by_mod.setdefault(r["module"], []).append(r["cos"])
    losses = [r["loss"] for r in rows if r["param"] == rows[0]["param"]]
    return {
        "drift_rule": rule or "none",
        "drift_n_steps": n_steps,
        "drift_n_tensors": len({r["param"] for r in rows}),
        "drift_cos_mean": float(cos.mean()),
        "drift_cos_abs_mean": float(np.abs(cos).mean()),
        "drift_frac_negative": float((cos < 0).mean()),
        "drift_cos_by_module": {m: float(np.mean(v)) for m, v in sorted(by_mod.items())},
        "drift_loss_first": losses[0],
        "drift_loss_last": losses[-1],
    }


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module, processor: Any, items: list, prompts: list[str], examples: list[dict], device: Any = None
) -> dict:
    """Held-out answer-token loss (teacher forced) and greedy exact-match accuracy (inputs go to ``device``)."""
    losses = [float(model(**_on(ex, device)).loss) for ex in examples]
    correct = 0
    tok = getattr(processor, "tokenizer", processor)
    for it, prompt in zip(items, prompts):
        enc = processor(text=prompt, images=[it.image], return_tensors="pt")
        out = model.generate(**_on(enc, device), max_new_tokens=6, do_sample=False).cpu()
        text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        correct += text.split()[0].rstrip(".,") == str(it.answer) if text else 0
    return {"eval_loss": float(sum(losses) / len(losses)), "eval_accuracy": correct / len(items)}


def compare_finetuning(
    vlm_dir: str | Path,
    prior: PriorArtifact | str | Path,
    out_dir: str | Path,
    *,
    rules: tuple[str | None, ...] = (None, "adaptive"),
    n_steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-5,
    n_eval: int = 32,
    seed: int = 0,
    kinds: tuple[str, ...] = ("expression", "counting", "bars"),
    dtype: Any = "float32",
    device: str | None = "cpu",
    device_map: Any = None,
) -> list[dict]:
    """Does the rule help? Fine-tune from the same start, data and order with each rule; score held-out items.

    For every entry of ``rules`` (``None`` = plain SFT) the VLM is reloaded from ``vlm_dir``, the
    parameters the prior covers are trained for ``n_steps`` AdamW steps on rendered visual problems,
    and ``n_eval`` other rendered items are scored (answer loss, greedy exact match) before and after.
    Writes ``finetune_compare.json`` into ``out_dir``; returns one row per rule.
    """
    from cotscope.analyses.atomic import write_json_atomic
    from cotscope.probes.models.loading import load_processor
    from cotscope.probes.stimuli.visual import generate_visual_items
    from cotscope.probes.vision_latents import chat_prompt

    processor = load_processor(vlm_dir)
    train = generate_visual_items(n_steps * batch_size, seed=seed, kinds=kinds)
    held = generate_visual_items(n_eval, seed=seed + 10_000, kinds=kinds)
    train_ex = [
        _sft_example(processor, it.image, chat_prompt(processor, it.direct_prompt), str(it.answer)) for it in train
    ]
    held_prompts = [chat_prompt(processor, it.direct_prompt) for it in held]
    held_ex = [_sft_example(processor, it.image, p, str(it.answer)) for it, p in zip(held, held_prompts)]
    batches = [{"examples": train_ex[i : i + batch_size]} for i in range(0, len(train_ex), batch_size)]

    in_dev: Any = None

    def loss_fn(m: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        return torch.stack([m(**_on(ex, in_dev)).loss.float() for ex in batch["examples"]]).mean()

    rows: list[dict] = []
    before: dict | None = None
    for rule in rules:
        torch.manual_seed(seed)
        model, _, in_dev = _load_vlm(vlm_dir, dtype, device, device_map)
        deltas = prior_tensors(model, prior)
        model.requires_grad_(False)
        params = dict(model.named_parameters())
        for n in deltas:
            params[n].requires_grad_(True)
        if before is None:
            before = _evaluate(model.eval(), processor, held, held_prompts, held_ex, in_dev)
        init = {n: params[n].detach().clone() for n in deltas}
        log = log_gradient_alignment(model, deltas, batches, n_steps, rule=rule, lr=lr, loss_fn=loss_fn, progress=True)
        after = _evaluate(model.eval(), processor, held, held_prompts, held_ex, in_dev)
        dot = upd2 = d2 = 0.0
        for n, d in deltas.items():
            u = (params[n].detach() - init[n]).double()
            dot += float((u * d.double()).sum())
            upd2 += float((u * u).sum())
            d2 += float((d.double() ** 2).sum())
        toward = {
            "update_along_delta": dot / d2 if d2 else None,  # fraction of Δ travelled
            "cos_update_delta": dot / (upd2 * d2) ** 0.5 if upd2 and d2 else None,
        }
        rows.append(
            {
                "rule": rule or "none",
                "n_steps": n_steps,
                "batch_size": batch_size,
                "lr": lr,
                "train_loss_first": log[0]["loss"],
                "train_loss_last": log[-1]["loss"],
                "eval_loss_before": before["eval_loss"],
                "eval_accuracy_before": before["eval_accuracy"],
                **after,
                **toward,
            }
        )
        del model
    write_json_atomic(Path(out_dir) / "finetune_compare.json", rows)
    return rows


# Moved to the orchestration layer (cotscope.stages); the old names warn for one release.
from cotscope._compat import forward as _forward  # noqa: E402

__getattr__ = _forward("probes.drift", {"prior_stage": "cotscope.stages.prior"})
