"""Collect paired CoT / direct residual-stream activations through nnsight into a sharded store.

Residual = output of decoder block ``i`` (0-based; HF ``hidden_states[i+1]``). Token rules
(``positions=``, :class:`probes.positions.TokenRule`; a list or a ``","``-separated string):

* ``last_prompt`` — last token of the chat-templated prompt (after the generation prompt);
* ``last``        — last token of the full text (prompt + answer; the released L2V-CoT rule);
* ``answer_mean`` — mean over the assistant-answer tokens;
* ``image_mean``  — mean over image-placeholder tokens (VLM inputs only);
* ``eot``         — the end-of-turn token the model's chat template writes after the assistant's answer
  (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, …; found from the template, see
  :mod:`probes.stimuli.turns`);
* ``turn_end``    — the last token of ``apply_chat_template([user, assistant])``: exactly what the released
  L2V-CoT code reads (``\n`` after ``<|im_end|>`` for ChatML templates, ``<|eot_id|>`` for Llama 3);
* ``all_tokens=True`` additionally keeps every token (ragged, per item).

Batches are left-padded, run under ``torch.no_grad``, and the trace stops after the deepest
requested layer. Each batch becomes one shard, so an interrupted run resumes exactly.

>>> from cotscope.probes.models.loading import load_model                       # doctest: +SKIP
>>> from cotscope.probes.stimuli import generate_problems, make_pairs           # doctest: +SKIP
>>> lm = load_model("embedded:smollm2")                                 # doctest: +SKIP
>>> store = collect_pairs(lm, make_pairs(generate_problems(64)), "runs/x/store")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotscope.analyses.artifacts import library_versions
from cotscope.analyses.io.store import ActivationStore, StoreWriter
from cotscope.errors import CotscopeError
from cotscope.probes.models.context import check_context
from cotscope.probes.models.loading import LoadedModel
from cotscope.probes.positions import TokenRuleError, parse_token_rules
from cotscope.probes.remote import backend_for, resolve_remote
from cotscope.probes.stimuli.pairs import PromptPair
from cotscope.probes.traced import block_hidden, reduce_positions

POSITIONS = ("last_prompt", "last", "answer_mean", "image_mean", "eot", "turn_end")  # the TokenRule values read here
TURN_POSITIONS = ("eot", "turn_end")


class CollectionError(CotscopeError):
    """Bad collection request (positions, layers, stimuli)."""


def load_image(source: Any) -> Any:
    """An image from its source: a PIL image (returned as is), a path to an image file, or a zero-argument callable.

    Paths and callables let image stimuli stream: collection opens each image for its own batch only.
    """
    if source is None or hasattr(source, "tobytes"):
        return source
    if isinstance(source, (list, tuple)):
        return [load_image(s) for s in source]
    if isinstance(source, (str, Path)):
        from PIL import Image

        with Image.open(source) as im:
            im.load()
            return im.copy()
    if callable(source):
        return source()
    raise CollectionError(
        f"an image must be a PIL image, a path or a callable returning one; got {type(source).__name__}"
    )


def image_sha256(image: Any) -> str | None:
    image = load_image(image)
    if image is None:
        return None
    h = hashlib.sha256()
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _encoder(loaded: LoadedModel):
    return loaded.processor if loaded.processor is not None else loaded.tokenizer


def _count_tokens(loaded: LoadedModel, text: str) -> int:
    return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def _item_name(item: dict[str, Any]) -> str:
    return (
        f"item {item['row']} (pair {item['pair_id']}, {'CoT' if item['label'] else 'direct'}, "
        f"problem {item['problem_id']!r})"
    )


def plan_items(
    loaded: LoadedModel, pairs: Sequence[PromptPair], positions: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Flatten pairs into rows (CoT then direct for each pair) with token bookkeeping.

    With a turn position (``eot``/``turn_end``) each row's text is the whole templated conversation including the
    template's end-of-turn suffix, and the row records ``n_suffix_tokens`` and ``eot_from_end``.
    Returns the items and each item's image *source* (see :func:`load_image`); images given as paths or callables
    are opened here only to hash them, and again per batch by :func:`collect_pairs`.
    """
    if len(pairs) == 0:
        raise CollectionError("empty stimulus set: pass at least one PromptPair")
    has_img = [prompt.image is not None for pair in pairs for _, prompt in pair.members()]
    if any(has_img) and not all(has_img):
        raise CollectionError("some items have images and some do not; collect image and text-only sets separately")
    if any(has_img) and not loaded.is_vlm:
        raise CollectionError(
            f"{loaded.model_id} is a text-only model but the stimuli carry images; collect them "
            "with a VLM, or build text pairs (make_visual_pairs(items, with_image=False))"
        )
    items, images, n_tokens = [], [], []
    enc = _encoder(loaded)
    turns = any(p in TURN_POSITIONS for p in positions)
    for pair in pairs:
        question = getattr(pair.problem, "question", None)
        if isinstance(question, str) and not question.strip():
            raise CollectionError(
                f"pair {pair.pair_id} (problem {pair.problem.id!r}) has an empty question "
                f"({question!r}); its CoT and direct prompts would hold only the cues. Fix: drop "
                "the problem or give it a question"
            )
        for label, prompt in pair.members():
            extra: dict[str, Any] = {}
            if turns:
                from cotscope.probes.stimuli.turns import TemplateLayoutError, turn_layout

                try:
                    lay = turn_layout(enc, prompt.messages, prompt.answer, require_eot="eot" in positions)
                except TemplateLayoutError as e:
                    raise CollectionError(f"pair {pair.pair_id}: {e}") from None
                full_text, n_ans = lay.text, lay.n_answer_tokens
                n_full = _count_tokens(loaded, full_text)
                extra = {"n_suffix_tokens": lay.n_suffix_tokens}
                if lay.eot_from_end is not None:
                    extra.update({"eot_from_end": lay.eot_from_end, "eot_token": lay.eot_token})
            else:
                prompt_text, full_text = prompt.render(enc)
                n_full = _count_tokens(loaded, full_text)
                n_ans = 0
                suffix = loaded.adapter.processor_suffix if prompt.image is not None else ""
                if suffix:  # text the processor appends (PaliGemma's newline) sits after the answer
                    extra = {"n_suffix_tokens": _count_tokens(loaded, full_text + suffix) - n_full}
                if full_text != prompt_text:
                    n_ans = n_full - _count_tokens(loaded, prompt_text)
                    if n_ans <= 0:
                        raise CollectionError(f"pair {pair.pair_id}: the answer adds no tokens after the prompt")
            n_tokens.append(n_full)
            items.append(
                {
                    "row": len(items),
                    "pair_id": int(pair.pair_id),
                    "label": int(label),
                    "problem_id": pair.problem.id,
                    "gold": pair.problem.answer,
                    "pairing": pair.pairing,
                    "text": full_text,
                    "n_answer_tokens": int(n_ans),
                    "image_sha256": image_sha256(prompt.image),
                    **extra,
                }
            )
            images.append(prompt.image)
    # text tokens only (image tokens are added by the processor and checked per batch before the forward)
    check_context(
        loaded,
        n_tokens,
        name=lambda i: _item_name(items[i]),
        fix="shorten the question or answer of that pair, or drop it",
    )
    return items, images


def encode_batch(loaded: LoadedModel, texts: list[str], images: list[Any] | None = None):
    """Left-padded batch encoding; VLMs go through their processor with the adapter's extra kwargs."""
    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    from cotscope.probes.models.processors import validate_batch

    # refuses placeholder/image mismatches (also stray placeholders in text-only rows) and converts images to RGB
    fixed = validate_batch(loaded, texts, list(images) if images is not None else None)
    if fixed is not None:
        return loaded.processor(
            text=texts,
            images=[im if isinstance(im, (list, tuple)) else [im] for im in fixed],
            padding=True,
            return_tensors="pt",
            **loaded.adapter.processor_kwargs,
        )
    return tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so batch after batch of differently shaped
    activations does not ratchet the process's peak memory up with the number of batches. A no-op elsewhere."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _aux(
    loaded: LoadedModel, layers: list[int], n_ans, img_mask, T: int, mode: bool | str, n_suffix=None, eot_from_end=None
) -> list[dict]:
    """Index and mask tensors for each requested layer, created on that layer's own device (one set per device).

    ``n_suffix`` (tokens after the answer) and ``eot_from_end`` (offset of the end-of-turn token from the end) are
    per-row tensors for texts that end with the template's end-of-turn suffix (``None``: no suffix). Remotely the
    server decides placement, so the tensors stay on the CPU and :func:`probes.traced.reduce_positions` moves them
    next to the layer output.
    """
    import torch

    by_dev: dict[str, dict] = {}
    out = []
    for i in layers:
        dev = None if mode else loaded.layer_device(i)
        dev = dev if dev is not None else torch.device("cpu")
        if str(dev) not in by_dev:
            n = n_ans.to(dev)
            suf = torch.zeros_like(n) if n_suffix is None else n_suffix.to(dev)
            tpos = torch.arange(T, device=dev)[None, :]
            by_dev[str(dev)] = {
                "ar": torch.arange(len(n_ans), device=dev),
                "lp_idx": T - 1 - suf - n,
                "eot_idx": (T - 1 - eot_from_end.to(dev)) if eot_from_end is not None else None,
                "ans_mask": ((tpos >= (T - suf - n)[:, None]) & (tpos < (T - suf)[:, None])).float(),
                "img": img_mask.float().to(dev) if img_mask is not None else None,
            }
        out.append(by_dev[str(dev)])
    return out


def _batch_request(
    loaded: LoadedModel, enc, layers: list[int], n_ans, img_mask, mode: bool | str, n_suffix=None, eot_from_end=None
) -> tuple[dict, list]:
    """Model inputs (on the input device) and per-layer auxiliary tensors for one batch."""
    B, T = enc["input_ids"].shape
    dev = loaded.device if not mode else "cpu"
    inputs = {k: (v.to(dev) if hasattr(v, "to") else v) for k, v in dict(enc).items()}
    inputs["use_cache"] = False  # one forward: a KV cache would only cost memory (about 0.7 GB at 32 x 156 tokens)
    return inputs, _aux(loaded, layers, n_ans, img_mask, T, mode, n_suffix, eot_from_end)


def _finish(out: dict, full: list, all_tokens: bool):
    import torch

    res = {p: torch.stack(list(v), 1).cpu().numpy().astype(np.float32) for p, v in out.items()}
    full_np = torch.stack(list(full), 1).cpu().numpy().astype(np.float32) if all_tokens else None
    return res, full_np


def _reduce_batch(
    loaded: LoadedModel,
    enc,
    layers: list[int],
    positions: Sequence[str],
    n_ans,
    img_mask,
    all_tokens: bool,
    n_suffix=None,
    eot_from_end=None,
    remote: bool | str = False,
):
    """One traced forward pass; returns {position: [B, L, d]} and optional full hidden states.

    ``n_suffix`` / ``eot_from_end``: see :func:`_aux`.
    """
    return _reduce_batches(
        loaded, [(enc, n_ans, img_mask, n_suffix, eot_from_end)], layers, positions, all_tokens, remote
    )[0]


def _reduce_batches(
    loaded: LoadedModel,
    batches: Sequence[tuple],
    layers: list[int],
    positions: Sequence[str],
    all_tokens: bool,
    remote: bool | str = False,
) -> list[tuple]:
    """Traced forward passes for ``batches`` (``(enc, n_ans, img_mask[, n_suffix, eot_from_end])`` each): one trace
    per batch here, or one request (an nnsight session holding one trace per batch) remotely. The trace bodies
    only use tensors and :mod:`probes.traced`, so they run on a server without cotscope."""
    import nnsight
    import torch

    model = loaded.nnsight
    envs = [loaded.adapter.layers(model)[i] for i in layers]
    positions = list(positions)
    reqs = [_batch_request(loaded, b[0], layers, b[1], b[2], remote, *b[3:]) for b in batches]
    backend = backend_for(model, remote, "collect")
    with torch.no_grad():
        if len(reqs) == 1:
            inputs, auxs = reqs[0]
            with model.trace(inputs, backend=backend) as tracer:
                out = nnsight.save({p: [] for p in positions})
                full = nnsight.save([])
                for env, aux in zip(envs, auxs):
                    h = env.output
                    red = reduce_positions(h, positions, aux)
                    for p in positions:
                        out[p].append(red[p])
                    if all_tokens:
                        full.append(block_hidden(h).float())
                tracer.stop()
            return [_finish(out, full, all_tokens)]
        with model.session(backend=backend):
            results = nnsight.save([])
            for inputs, auxs in reqs:
                with model.trace(inputs) as tracer:
                    out = {p: [] for p in positions}
                    full = []
                    for env, aux in zip(envs, auxs):
                        h = env.output
                        red = reduce_positions(h, positions, aux)
                        for p in positions:
                            out[p].append(red[p])
                        if all_tokens:
                            full.append(block_hidden(h).float())
                    results.append((out, full))
                    tracer.stop()
    return [_finish(out, full, all_tokens) for out, full in results]


def collect_pairs(
    loaded: LoadedModel,
    pairs: Sequence[PromptPair],
    store_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[str] = ("last_prompt", "answer_mean"),
    batch_size: int = 16,
    all_tokens: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_batches: int | None = None,
    store_dtype: str = "float32",
    part: tuple[int, int] | None = None,
    remote: bool | str | None = None,
    batches_per_request: int | None = None,
) -> ActivationStore | None:
    """Collect residuals for every member of ``pairs`` into ``store_dir`` and return the store.

    Resumes an interrupted collection of the same configuration; refuses a directory written by a
    different one. ``max_batches`` stops early (for tests of resume); then ``None`` is returned.
    ``store_dtype`` (``"float32"``, ``"float16"``, ``"bfloat16"``) is the dtype activations are stored in.
    ``part=(i, n)`` collects only batches ``i, i+n, …`` (worker ``i`` of ``n``) and returns ``None``; merge the
    parts with ``cotscope store merge`` (the merged store equals a one-process run bit for bit).
    ``remote``: ``False`` (here), ``True`` (NDIF through nnsight) or ``"local"`` (nnsight's local simulation
    of the remote path); ``None`` = the model's default. Remotely, ``batches_per_request`` batches (default 4)
    travel as one request (an nnsight session), saving round trips; the store is the same either way.
    """
    import torch
    from tqdm.auto import tqdm

    mode = resolve_remote(loaded, remote)
    try:  # token rules: one vocabulary (probes.positions.TokenRule)
        positions = [r.value for r in parse_token_rules(positions, allowed=POSITIONS)]
    except TokenRuleError as e:
        raise CollectionError(f"unknown positions: {e}") from None
    layers = loaded.check_layers(range(loaded.n_layers) if layers is None else layers)
    if batch_size < 1:
        raise CollectionError(f"batch_size must be >= 1, got {batch_size}")
    items, images = plan_items(loaded, pairs, positions)
    has_images = images[0] is not None
    if "image_mean" in positions and not has_images:
        raise CollectionError("position 'image_mean' needs image stimuli")
    if "image_mean" in positions:
        loaded.adapter.require_image_tokens("position 'image_mean'")
    if "answer_mean" in positions and any(it["n_answer_tokens"] == 0 for it in items):
        raise CollectionError("position 'answer_mean' needs answers; build pairs with with_answers=True")
    config = {
        "model": loaded.provenance(),
        "layers": layers,
        "positions": positions,
        "batch_size": batch_size,
        "all_tokens": all_tokens,
        "layer_convention": "block_output",
        "has_images": has_images,
        "pairings": sorted({it["pairing"] for it in items}),
    }
    stim_hash = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
    config["stimulus_hash"] = stim_hash
    writer = StoreWriter(
        store_dir,
        config,
        items,
        overwrite=overwrite,
        extra={"library": library_versions()},
        dtype=store_dtype,
        part=part,
    )
    n_assigned = len(writer.assigned())
    todo = writer.todo()
    if batches_per_request is not None and int(batches_per_request) < 1:
        raise CollectionError(f"batches_per_request must be >= 1, got {batches_per_request}")
    per_req = 1 if not mode else int(batches_per_request or 4)
    stop_early = max_batches is not None and len(todo) > max(int(max_batches), 0)
    if max_batches is not None:
        todo = todo[: max(int(max_batches), 0)]
    bar = tqdm(
        total=n_assigned,
        initial=n_assigned - len(writer.todo()),
        desc=f"collect {loaded.model_id[:30]}",
        unit="batch",
        disable=not progress,
    )
    for g in range(0, len(todo), per_req):
        prepared = []
        for b in todo[g : g + per_req]:
            sl = slice(*writer.batch_rows(b))
            batch_items = items[sl]
            texts = [it["text"] for it in batch_items]
            enc = encode_batch(loaded, texts, [load_image(im) for im in images[sl]] if has_images else None)
            check_context(
                loaded,
                enc["attention_mask"].sum(1).tolist(),
                name=lambda i, bi=batch_items: _item_name(bi[i]),
                fix="shorten the question or answer of that pair, use smaller images, or drop it",
            )
            n_ans = torch.tensor([it["n_answer_tokens"] for it in batch_items])
            in_seq = has_images and loaded.adapter.image_tokens_in_sequence  # cross-attention families: no mask
            img_mask = loaded.adapter.image_token_mask(enc["input_ids"], loaded.config) if in_seq else None
            turns = "n_suffix_tokens" in batch_items[0]
            n_suf = torch.tensor([it["n_suffix_tokens"] for it in batch_items]) if turns else None
            eot_off = torch.tensor([it["eot_from_end"] for it in batch_items]) if "eot" in positions else None
            prepared.append((b, sl, enc, img_mask, (enc, n_ans, img_mask, n_suf, eot_off)))
        outs = _reduce_batches(loaded, [req for *_, req in prepared], layers, positions, all_tokens, mode)
        for (b, sl, enc, img_mask, _), (res, full) in zip(prepared, outs):
            batch_items = items[sl]
            tensors = dict(res)
            seq_len = enc["attention_mask"].sum(1)
            tensors["seq_len"] = seq_len.numpy().astype(np.int64)
            if img_mask is not None:
                # store the unpadded (left-aligned) mask of each row
                T = img_mask.shape[1]
                m = np.zeros((len(batch_items), T), dtype=np.uint8)
                for r in range(len(batch_items)):
                    n = int(seq_len[r])
                    m[r, :n] = img_mask[r, T - n :].numpy()
                tensors["image_mask"] = m
            if full is not None:
                for r, it in enumerate(batch_items):
                    n = int(seq_len[r])
                    tensors[f"all.{it['row']}"] = np.ascontiguousarray(full[r][:, -n:])
            writer.write_shard(b, np.arange(sl.start, sl.stop), tensors)
            bar.update(1)
        del prepared, outs
        trim_heap()
    bar.close()
    if stop_early:
        writer.close()
        return None
    return writer.finish()
