"""Code that runs *inside* nnsight traces: plain torch on tensors, nothing else.

A remote (NDIF) request ships the body of a ``with model.trace(...)`` block as source, together with the objects
it names. The server has torch, transformers and nnsight, but not cotscope, so everything a trace body calls lives
here: these functions import only torch, and :func:`probes.remote.register_traced` registers this module to be
pickled *by value* (their source travels with the request). Locally the same functions run unchanged, so a local
run and a remote one compute the same thing.

Each function moves the small tensors it receives (indices, masks, steering vectors) to the device of the layer
output it works on: a no-op locally, where callers already create them there (see
:meth:`probes.models.loading.LoadedModel.layer_device`), and the placement step on a server.

>>> import torch
>>> h = torch.ones(1, 3, 4)
>>> steer(h, torch.full((1, 4), 2.0), torch.tensor([[False, True, False]]), renorm=False)[0, :, 0]
tensor([1., 3., 1.])
"""

from __future__ import annotations

from typing import Any

import torch


# ----------------------------------------------------------------------------------------- collection
def block_hidden(out: Any) -> Any:
    """The hidden states ``[B, T, d]`` of a decoder block's output: the tensor itself, or the first element of the
    tuple that older-style blocks (Chameleon) still return."""
    return out[0] if isinstance(out, (tuple, list)) else out


def reduce_positions(h: Any, positions: Any, aux: dict) -> dict:
    """Per-row summaries of one block output ``h`` ``[B, T, d]`` in float32: ``{position: [B, d]}``.

    ``aux`` holds ``ar`` (``arange(B)``), ``lp_idx`` (last prompt index per row), ``eot_idx`` (end-of-turn token
    index per row, or ``None``), ``ans_mask`` ``[B, T]`` float32 and ``img`` ``[B, T]`` float32 (or ``None``).
    Summaries are taken in float32 whatever the model's dtype.
    """
    h = block_hidden(h)
    dev = h.device
    out = {}
    for p in positions:
        if p == "last_prompt":
            out[p] = h[aux["ar"].to(dev), aux["lp_idx"].to(dev)].float()
        elif p in ("last", "turn_end"):
            out[p] = h[:, -1].float()
        elif p == "eot":
            out[p] = h[aux["ar"].to(dev), aux["eot_idx"].to(dev)].float()
        elif p == "answer_mean":
            m = aux["ans_mask"].to(dev)
            out[p] = (h.float() * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        elif p == "image_mean":
            m = aux["img"].to(dev)
            out[p] = (h.float() * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        else:
            raise ValueError(f"unknown position {p!r}")
    return out


# ----------------------------------------------------------------------------------------- injection
def steer(h: Any, add: Any, mask: Any, renorm: bool = True) -> Any:
    """``h + add`` at the positions in ``mask`` (``h`` ``[B, T, d]``, ``add`` ``[B, d]`` = ``λ·v`` per row, ``mask``
    ``[B, T]`` bool); with ``renorm`` each steered token is rescaled (in float32) to its original norm.
    A tuple block output (Chameleon) is returned as a tuple with its first element steered."""
    if isinstance(h, tuple):
        return (steer(h[0], add, mask, renorm), *h[1:])
    if mask.shape[1] != h.shape[1]:
        raise RuntimeError(
            f"injection mask width {mask.shape[1]} != hidden width {h.shape[1]}; the generation ran "
            "an unexpected forward"
        )
    add = add.to(device=h.device, dtype=h.dtype)
    mask = mask.to(h.device)
    hs = h + add[:, None, :]
    if renorm:
        n0 = torch.linalg.vector_norm(h.float(), dim=-1, keepdim=True)
        n1 = torch.linalg.vector_norm(hs.float(), dim=-1, keepdim=True)
        hs = (hs.float() * (n0 / n1.clamp_min(torch.finfo(torch.float32).tiny))).to(h.dtype)
    return torch.where(mask[..., None], hs, h)


# ----------------------------------------------------------------------------------------- decoding
def decode_params(
    n_rows: int,
    budget: int,
    eos_ids: Any,
    forced_ids: Any,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Any = None,
    stop_at_eos: bool = True,
) -> dict:
    """Plain data describing the decoding (see :func:`decode_step`): budget, EOS ids, forced answers padded to
    ``[B, F]`` with their lengths, and per-row seeded generators when sampling."""
    F = max([len(f) for f in forced_ids if f is not None] + [0])
    forced = torch.zeros(n_rows, F, dtype=torch.long)
    flen = torch.zeros(n_rows, dtype=torch.long)
    for r, f in enumerate(forced_ids):
        if f is not None:
            forced[r, : len(f)] = torch.as_tensor(list(f), dtype=torch.long)
            flen[r] = len(f)
    gens = None
    if float(temperature) > 0:
        seeds = list(seeds) if seeds is not None else list(range(n_rows))
        gens = [torch.Generator().manual_seed(int(s) & 0x7FFFFFFFFFFFFFFF) for s in seeds]
    return {
        "budget": int(budget),
        "eos": torch.as_tensor([int(e) for e in eos_ids], dtype=torch.long),
        "forced": forced,
        "flen": flen,
        "has_forced": torch.tensor([f is not None for f in forced_ids]),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "gens": gens,
        "stop_at_eos": bool(stop_at_eos),
    }


def decode_init(P: dict, device: Any) -> dict:
    """Fresh per-row decoding state on ``device`` (phase 0 = free tokens, 1 = forcing the answer, 2 = done)."""
    B, F = P["forced"].shape
    return {
        "phase": torch.zeros(B, dtype=torch.long, device=device),
        "nfree": torch.zeros(B, dtype=torch.long, device=device),
        "free": torch.full((B, max(P["budget"], 1)), -1, dtype=torch.long, device=device),
        "free_lp": torch.zeros(B, dtype=torch.float64, device=device),
        "stopped": torch.zeros(B, dtype=torch.bool, device=device),
        "fidx": torch.zeros(B, dtype=torch.long, device=device),
        "forced_lp": torch.zeros(B, max(F, 1), dtype=torch.float32, device=device),
        "forced_top": torch.zeros(B, max(F, 1), dtype=torch.bool, device=device),
        "eos": P["eos"].to(device),
        "forced": P["forced"].to(device),
        "flen": P["flen"].to(device),
        "has_forced": P["has_forced"].to(device),
        "steps": 0,
    }


def _sample(logp_row: Any, temperature: float, top_p: float, gen: Any) -> int:
    """One token from ``softmax(logp / temperature)`` restricted to the top-``top_p`` mass, drawn with ``gen`` (CPU)."""
    p = torch.softmax(logp_row / temperature, -1)
    if top_p < 1.0:
        sp, si = torch.sort(p, descending=True)
        keep = torch.cumsum(sp, 0) - sp < top_p
        p = torch.zeros_like(p).scatter(0, si[keep], sp[keep])
    return int(torch.multinomial(p.float().cpu(), 1, generator=gen).item())


def decode_step(st: dict, scores: Any, P: dict) -> Any:
    """Choose every row's next token and return scores that make greedy decoding follow the choice.

    ``scores`` ``[B, V]``: the next-token logits. Per row: in phase 0 take the argmax (or a seeded sample); a row
    stops at EOS (if ``stop_at_eos``) or after ``budget`` free tokens and then, if it has a forced answer, emits its
    tokens one per step (teacher forcing) while recording their log-probabilities, and finally EOS. Updates ``st``
    in place (a dict from :func:`decode_init`, created on the first call if empty). Returns ``[B, V]`` float32 with
    0 at the chosen token and ``-inf`` elsewhere.
    """
    logp = torch.log_softmax(scores.float(), dim=-1)
    if not st:
        st.update(decode_init(P, logp.device))
    top = logp.argmax(-1)
    B = top.shape[0]
    if P["gens"] is None:
        tok0 = top
    else:
        tok0 = torch.tensor(
            [_sample(logp[r], P["temperature"], P["top_p"], P["gens"][r]) for r in range(B)],
            dtype=torch.long,
            device=logp.device,
        )
    phase, budget = st["phase"], P["budget"]
    p0 = phase == 0
    is_eos = torch.isin(tok0, st["eos"]) & P["stop_at_eos"]
    end0 = p0 & (is_eos | (st["nfree"] >= budget))
    cont0 = p0 & ~end0
    st["stopped"] |= end0 & is_eos
    phase.copy_(torch.where(end0, torch.where(st["has_forced"], 1, 2), phase))
    lp0 = logp.gather(1, tok0[:, None])[:, 0]
    pos = st["nfree"].clamp(max=st["free"].shape[1] - 1)[:, None]
    st["free"].scatter_(1, pos, torch.where(cont0[:, None], tok0[:, None], st["free"].gather(1, pos)))
    st["free_lp"] += torch.where(cont0, lp0.double(), torch.zeros_like(st["free_lp"]))
    st["nfree"] += cont0.long()
    choose = torch.where(cont0, tok0, st["eos"][0])
    p1 = phase == 1
    F = st["forced"].shape[1]
    if F > 0:
        fpos = st["fidx"].clamp(max=F - 1)[:, None]
        ftok = st["forced"].gather(1, fpos)[:, 0]
        flp = logp.gather(1, ftok[:, None])
        st["forced_lp"].scatter_(1, fpos, torch.where(p1[:, None], flp, st["forced_lp"].gather(1, fpos)))
        st["forced_top"].scatter_(
            1, fpos, torch.where(p1[:, None], (top == ftok)[:, None], st["forced_top"].gather(1, fpos))
        )
        st["fidx"] += p1.long()
        phase.copy_(torch.where(p1 & (st["fidx"] >= st["flen"]), 2, phase))
        choose = torch.where(p1, ftok, choose)
    st["steps"] += 1
    out = torch.full_like(logp, float("-inf"))
    out.scatter_(1, choose[:, None], 0.0)
    return out


# ----------------------------------------------------------------------------------------- attention rows
def last_row_mask(mask: Any, query: Any, key: Any) -> Any:
    """The additive mask of the last query row only (``[B|1, 1|H, 1, kv]``) from the mask a model built for its own
    kernel: ``None`` (the last query sees every key), a 2-D ``[B, kv]`` padding mask (1 = keep), a boolean mask
    (True = keep) or an additive float mask.

    >>> m = torch.tensor([[[[True, False], [True, True]]]])
    >>> last_row_mask(m, torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))[0, 0, 0, 0].item()
    0.0
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"the model passes a {type(mask).__name__} attention mask (flex attention?), which eager attention cannot "
            "use. Fix: load the model with attn_implementation='sdpa' or 'eager'."
        )
    neg = torch.finfo(query.dtype).min
    kv_len = key.shape[-2]
    if mask.dim() == 2:
        return torch.where(mask[:, None, None, -kv_len:].bool(), 0.0, neg).to(query.dtype)
    row = mask[..., -1:, :]
    return torch.where(row, 0.0, neg).to(query.dtype) if row.dtype == torch.bool else row


def attention_row(args: Any, kwargs: Any, head_idx: Any) -> Any:
    """The eager attention weights of the **last query row** for the heads ``head_idx``: ``[B, len(head_idx), kv]``
    float32 on the CPU.

    ``args`` / ``kwargs`` are what a transformers attention module passes to its attention interface
    (``module, query, key, value, attention_mask`` plus ``scaling``, ``dropout``, ``sliding_window`` …): nnsight's
    ``attn.source.attention_interface_<k>.inputs``. The weights come from the model file's own
    ``eager_attention_forward`` (looked up by the module's class, so grouped-query heads, scaling, soft-capping and
    sinks follow the model), applied to the last query only: rows of attention are independent, so this equals
    that row of the full eager matrix.
    """
    import importlib

    module, query, key, value, mask = args[:5]
    eager = importlib.import_module(type(module).__module__).eager_attention_forward
    _, weights = eager(module, query[:, :, -1:, :], key, value, last_row_mask(mask, query, key), **kwargs)
    return weights[:, :, -1, :].index_select(1, head_idx.to(weights.device)).detach().to("cpu", torch.float32)
