#!/usr/bin/env python
"""Train cotscope-smolvlm on CPU: deterministic for a seed, resumable, with progress bars.

Stages (run all with ``--stage all``; each resumes from its last checkpoint in ``--ckpt-dir``):

1. ``read``    — the LLaVA vision tower (CLIP-style, 24-px patches) + projector learn to put, in each of the
                 ``N_IMAGE_TOKENS`` image-token slots, SmolLM2's input embedding of the depicted text's tokens
                 (left-aligned by default; empty slots -> ``READ_PAD_TOKEN``). Loss: relative MSE + (1 - cosine) +
                 cross-entropy over the reading vocabulary with cosine logits, plus ("one-hot" projector) a
                 cross-entropy on the projector's first hidden units, which start as class scores: ``linear_2``'s
                 first columns are the reading vocabulary's embeddings / GELU(1). The language model is not run.
                 Recipe and its measurements: docs/reference-vlm-v2-pilot.md.
2. ``teacher`` — SmolLM2 answers the training items *from text* (greedy; direct and truncated CoT); cached.
3. ``adapt``   — the language model is adapted with LoRA (vision pathway frozen, fp16-rounded as shipped) so that
                 from the image it reproduces SmolLM2's own text-input answers (token cross-entropy on the teacher's
                 greedy continuation). This is the multimodal shift of the LM, merged at assembly.
4. ``export``  — fp16 vision tower/connector + LoRA factors, metadata, per-layer ‖Δ‖ and SHA256SUMS into ``--out``.

Checkpoints live outside the repo (default ``~/.cache/cotscope/train/cotscope-smolvlm``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotscope.analyses.atomic import atomic_path, write_json_atomic  # noqa: E402
from cotscope.probes.models import reference_vlm as R  # noqa: E402
from cotscope.probes.models.embedded import GGUF_SHA256, cache_root, file_sha256, smollm2_dir  # noqa: E402
from cotscope.probes.stimuli.visual import DEFAULT_KINDS, generate_visual_items, text_prompt  # noqa: E402

READ_SEED_BASE = 1_000_000  # training items of step s: generate_visual_items(B, READ_SEED_BASE + s)
TEACHER_SEED = 2_000_000  # the adaptation pool
EVAL_SEED = 424_242  # held out (used by scripts/eval_reference_vlm.py and the tests)


def log(msg: str, logf: Path | None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if logf:
        with open(logf, "a") as fh:
            fh.write(line + "\n")


def save_ckpt(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def lr_at(step: int, total: int, peak: float, warmup: int, decay: int = 0) -> float:
    """Linear warm-up, constant, then a linear decay to 10% over the last ``decay`` steps.

    Before the decay starts the schedule does not depend on ``total``, so a run can be extended (or cut at a
    checkpoint taken before the decay) and still be reproduced exactly by one command with that ``total``.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    start = total - decay
    if decay and step >= start:
        return peak * (1.0 - 0.9 * (step - start + 1) / decay)
    return peak


# ----------------------------------------------------------------------------------------------- reading targets
class Reader:
    """Token targets for the reading stage."""

    def __init__(self, tok, embed: torch.Tensor, align: str = "left"):
        self.tok = tok
        self.align = align
        self.E = embed  # [V, d] frozen input embeddings
        pad = tok(R.READ_PAD_TOKEN, add_special_tokens=False).input_ids
        if len(pad) != 1:
            raise ValueError(f"READ_PAD_TOKEN {R.READ_PAD_TOKEN!r} is not a single token: {pad}")
        self.pad_id = pad[0]
        pool = generate_visual_items(3000, seed=7, kinds=DEFAULT_KINDS)
        ids = sorted({i for it in pool for i in self.ids(it.description)} | {self.pad_id})
        self.cand = torch.tensor(ids)  # reading vocabulary for the cross-entropy
        self.cand_index = {t: k for k, t in enumerate(ids)}

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def targets(self, descriptions) -> torch.Tensor:
        out = []
        for d in descriptions:
            ids = self.ids(d)
            if len(ids) > R.N_IMAGE_TOKENS:
                raise ValueError(f"description has {len(ids)} tokens > {R.N_IMAGE_TOKENS} slots: {d!r}")
            pads = [self.pad_id] * (R.N_IMAGE_TOKENS - len(ids))
            out.append(ids + pads if self.align == "left" else pads + ids)
        return torch.tensor(out)


def reading_loss(
    feat: torch.Tensor,
    tgt: torch.Tensor,
    reader: Reader,
    tau: float = 0.05,
    ce_w: float = 1.0,
    hidden: torch.Tensor | None = None,
    onehot_w: float = 1.0,
):
    """Reading loss of image features ``feat`` [B, N, d] against token targets ``tgt`` [B, N].

    ``hidden``: the projector's hidden pre-activations [B, N, h]; its first ``len(reader.cand)`` units get a
    cross-entropy with weight ``onehot_w`` (the one-hot projector's class scores).
    """
    t = reader.E[tgt]
    rel_mse = ((feat - t) ** 2).sum(-1) / (t**2).sum(-1)
    cos = F.cosine_similarity(feat, t, dim=-1)
    cand = reader.E[reader.cand]
    logits = F.normalize(feat, dim=-1) @ F.normalize(cand, dim=-1).T / tau
    labels = torch.tensor([reader.cand_index.get(int(i), 0) for i in tgt.flatten()]).view_as(tgt)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    if hidden is not None and onehot_w:
        ce = ce + onehot_w * F.cross_entropy(hidden[..., : len(reader.cand)].flatten(0, 1), labels.flatten())
    acc = (logits.argmax(-1) == labels).float().mean()
    return rel_mse.mean() + (1 - cos).mean() + ce_w * ce, dict(
        mse=rel_mse.mean().item(), cos=cos.mean().item(), ce=ce.item(), acc=acc.item()
    )


def vision_params(model):
    return [(n, p) for n, p in model.named_parameters() if n.startswith(R.VISION_PREFIXES)]


GELU_1 = 0.8413447460685429  # GELU(1): a hidden unit at 1 passes its column of linear_2 unchanged


def init_onehot_projector(model, reader: Reader) -> None:
    """``linear_2`` starts as a lookup table: column k = embedding of reading-vocabulary token k / GELU(1), rest 0.

    The projector's first ``len(reader.cand)`` hidden units then act as class scores, so digits are separated in
    orthogonal hidden units rather than in SmolLM2's nearly parallel digit embeddings.
    """
    lin2 = model.model.multi_modal_projector.linear_2
    with torch.no_grad():
        lin2.weight.zero_()
        lin2.weight[:, : len(reader.cand)] = reader.E[reader.cand].T / GELU_1
        lin2.bias.zero_()


class HiddenCapture:
    """Keeps the projector's hidden pre-activation (output of ``linear_1``) of the last forward."""

    def __init__(self, model):
        self.z: torch.Tensor | None = None
        self._h = model.model.multi_modal_projector.linear_1.register_forward_hook(self._keep)

    def _keep(self, _mod, _inp, out) -> None:
        self.z = out

    def remove(self) -> None:
        self._h.remove()


def read_kinds(spec: str) -> list[str]:
    """The training mix, e.g. ``expression,expression,counting,counting,bars`` (items cycle through the list)."""
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = sorted(set(kinds) - set(DEFAULT_KINDS))
    if not kinds or bad:
        raise SystemExit(f"--read-kinds {spec!r}: unknown kinds {bad}; use a comma list of {list(DEFAULT_KINDS)}")
    return kinds


def stage_read(args, model, tok, logf) -> None:
    ck = args.ckpt_dir / "read.pt"
    done = args.ckpt_dir / "read.done.pt"
    if done.is_file():
        model.load_state_dict(torch.load(done, weights_only=False)["vision"], strict=False)
        log("read: already finished, loaded", logf)
        return
    reader = Reader(tok, R.text_model(model).embed_tokens.weight.detach().clone(), args.read_align)
    params = vision_params(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(R.VISION_PREFIXES))
    opt = torch.optim.AdamW([p for _, p in params], lr=args.lr_read, weight_decay=0.0, betas=(0.9, 0.98))
    start, curve = 0, []
    if args.read_onehot:
        init_onehot_projector(model, reader)  # fresh start (a checkpoint below overwrites it)
    hidden = HiddenCapture(model)
    kinds = read_kinds(args.read_kinds)
    decay = int(round(args.read_decay_frac * args.read_steps))
    if ck.is_file():
        st = torch.load(ck, weights_only=False)
        model.load_state_dict(st["vision"], strict=False)
        opt.load_state_dict(st["opt"])
        start, curve = st["step"], st["curve"]
        log(f"read: resumed at step {start}", logf)
    model.train()
    t0 = time.time()
    bar = tqdm(range(start, args.read_steps), desc="read", initial=start, total=args.read_steps, dynamic_ncols=True)
    for step in bar:
        items = generate_visual_items(args.read_batch, seed=READ_SEED_BASE + args.seed * 100_000 + step, kinds=kinds)
        pv = R.pixel_tensor([it.image for it in items])
        tgt = reader.targets([it.description for it in items])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.read_steps, args.lr_read, 50, decay)
        feat = R.image_features(model, pv)
        loss, m = reading_loss(feat, tgt, reader, hidden=hidden.z, onehot_w=args.read_onehot)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        opt.step()
        m["loss"] = loss.item()
        bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['acc']:.3f}", cos=f"{m['cos']:.3f}")
        if step % 25 == 0 or step == args.read_steps - 1:
            curve.append(dict(step=step, t=round(time.time() - t0, 1), **{k: round(v, 4) for k, v in m.items()}))
            log(f"read step {step} {curve[-1]}", logf)
        if (step + 1) % args.ckpt_every == 0 or step == args.read_steps - 1:
            save_ckpt(
                ck,
                dict(
                    step=step + 1, vision={n: p.detach().clone() for n, p in params}, opt=opt.state_dict(), curve=curve
                ),
            )
    hidden.remove()
    model.eval()
    save_ckpt(done, dict(vision={n: p.detach().clone() for n, p in params}, curve=curve))
    log("read: finished", logf)


# ----------------------------------------------------------------------------------------------- teacher
def chat_ids(tok, user: str) -> list[int]:
    return tok.apply_chat_template(R.text_messages(user), tokenize=True, add_generation_prompt=True, return_dict=False)


@torch.no_grad()
def greedy(lm, tok, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """Greedy continuations of pre-tokenised prompts (left padded), cut after <|im_end|>."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), tok.pad_token_id)
    att = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p) :] = torch.tensor(p)
        att[i, L - len(p) :] = 1
    out = lm.generate(
        input_ids=ids,
        attention_mask=att,
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    res = []
    for row in out[:, L:].tolist():
        cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        res.append(row[:cut])
    return res


def stage_teacher(args, tok, logf) -> list[dict]:
    path = args.ckpt_dir / "teacher.json"
    pool = json.loads(path.read_text()) if path.is_file() else []
    items = generate_visual_items(args.n_teacher, seed=TEACHER_SEED + args.seed)
    n_cot = int(len(items) * args.cot_frac)
    jobs = [(k, False) for k in range(len(items))] + [(k, True) for k in range(n_cot)]
    if len(pool) >= len(jobs):
        log(f"teacher: {len(pool)} cached", logf)
        return pool
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).eval()
    bs = 32
    bar = tqdm(total=len(jobs), initial=len(pool), desc="teacher", dynamic_ncols=True)
    for s in range(len(pool), len(jobs), bs):
        chunk = jobs[s : s + bs]
        for cot in (False, True):
            sub = [(k, c) for k, c in chunk if c == cot]
            if not sub:
                continue
            prompts = [chat_ids(tok, text_prompt(items[k], cot)) for k, _ in sub]
            outs = greedy(lm, tok, prompts, args.cot_tokens if cot else args.direct_tokens)
            pool += [dict(k=k, cot=c, target=o) for (k, c), o in zip(sub, outs)]
        bar.update(len(chunk))
        write_json_atomic(path, pool)
    bar.close()
    log(f"teacher: {len(pool)} continuations", logf)
    return pool


# ----------------------------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=gen)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def add_lora(model, seed: int) -> dict[str, LoRALinear]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i, layer in enumerate(R.text_model(model).layers):
        for t in R.LORA_TARGETS:
            parent_name, attr = t.rsplit(".", 1)
            parent = layer.get_submodule(parent_name)
            lin = getattr(parent, attr)
            wrapped = LoRALinear(lin, R.LORA_RANK, R.LORA_ALPHA, gen)
            setattr(parent, attr, wrapped)
            out[f"layers.{i}.{t}"] = wrapped
    return out


def lora_state(loras: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    sd = {}
    for k, m in loras.items():
        sd[f"{k}.lora_A"] = m.lora_A.detach().clone()
        sd[f"{k}.lora_B"] = m.lora_B.detach().clone()
    return sd


def load_lora_state(loras, sd) -> None:
    with torch.no_grad():
        for k, m in loras.items():
            m.lora_A.copy_(sd[f"{k}.lora_A"])
            m.lora_B.copy_(sd[f"{k}.lora_B"])


def build_batch(tok, items, recs, image_token_ids: list[int]):
    """Left-padded VLM sequences prompt+target; returns ids, attention, position ids, labels over the last K."""
    seqs, ans_len = [], []
    for r in recs:
        it = items[r["k"]]
        prompt = it.cot_prompt if r["cot"] else it.direct_prompt
        p = tok.apply_chat_template(
            R.vlm_messages(prompt),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=False,
            chat_template=R.CHAT_TEMPLATE,
        )
        p = _expand_image(p, image_token_ids)
        seqs.append(p + r["target"])
        ans_len.append(len(r["target"]))
    L = max(len(s) for s in seqs)
    K = max(ans_len) + 1
    ids = torch.full((len(seqs), L), tok.pad_token_id)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), K), -100)
    for i, (s, a) in enumerate(zip(seqs, ans_len)):
        ids[i, L - len(s) :] = torch.tensor(s)
        att[i, L - len(s) :] = 1
        # logits at positions L-K .. L-1 predict tokens at L-K+1 .. L; the answer is the last a tokens
        labels[i, K - a - 1 : K - 1] = torch.tensor(s[-a:])
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return ids, att, pos, labels, K


def _expand_image(ids: list[int], image_ids: list[int]) -> list[int]:
    """Replace the single image placeholder by the processor's expansion (N image tokens)."""
    k = ids.index(R.IMAGE_TOKEN_ID)
    return ids[:k] + image_ids + ids[k + 1 :]


def image_expansion(tok) -> list[int]:
    """Token ids one image placeholder expands to in :func:`R.build_processor`'s LLaVA layout (no boundaries)."""
    return [R.IMAGE_TOKEN_ID] * R.N_IMAGE_TOKENS


def stage_adapt(args, model, tok, pool, logf) -> dict[str, LoRALinear]:
    ck = args.ckpt_dir / "adapt.pt"
    items = generate_visual_items(args.n_teacher, seed=TEACHER_SEED + args.seed)
    reader = (
        Reader(tok, R.text_model(model).embed_tokens.weight.detach().clone(), args.read_align)
        if args.adapt_oracle
        else None
    )
    # the reader is frozen exactly as shipped (fp16)
    with torch.no_grad():
        for _, p in vision_params(model):
            p.copy_(p.half().float())
    for p in model.parameters():
        p.requires_grad_(False)
    loras = add_lora(model, args.seed)
    lparams = [p for m in loras.values() for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.AdamW(lparams, lr=args.lr_adapt, weight_decay=0.0)
    start, curve = 0, []
    if ck.is_file():
        st = torch.load(ck, weights_only=False)
        load_lora_state(loras, st["lora"])
        opt.load_state_dict(st["opt"])
        start, curve = st["step"], st["curve"]
        log(f"adapt: resumed at step {start}", logf)
    image_ids = image_expansion(tok)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(pool), generator=g).tolist()
    pix_cache: dict[int, torch.Tensor] = {}
    model.train()
    t0 = time.time()
    bar = tqdm(range(start, args.adapt_steps), desc="adapt", initial=start, total=args.adapt_steps, dynamic_ncols=True)
    for step in bar:
        sel = [(step * args.adapt_batch + j) % len(order) for j in range(args.adapt_batch)]
        recs = [pool[order[j]] for j in sel]
        ids, att, pos, labels, K = build_batch(tok, items, recs, image_ids)
        with torch.no_grad():
            if reader is not None:  # oracle reading: the exact input embeddings of the depicted text (+ pad slots)
                feats = reader.E[reader.targets([items[r["k"]].description for r in recs])]
            else:
                for r in recs:
                    if r["k"] not in pix_cache:
                        pix_cache[r["k"]] = R.pixel_tensor([items[r["k"]].image])[0]
                pv = torch.stack([pix_cache[r["k"]] for r in recs])
                feats = R.image_features(model, pv).detach()
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, args.adapt_steps, args.lr_adapt, 20)
        embeds = R.text_model(model).embed_tokens(ids)
        embeds = embeds.masked_scatter((ids == R.IMAGE_TOKEN_ID).unsqueeze(-1), feats.to(embeds.dtype))
        out = model(inputs_embeds=embeds, attention_mask=att, position_ids=pos, logits_to_keep=K, use_cache=False)
        logits = out.logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lparams, 1.0)
        opt.step()
        with torch.no_grad():
            m = labels != -100
            tacc = (logits.argmax(-1)[m] == labels[m]).float().mean().item()
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_acc=f"{tacc:.3f}")
        if step % 10 == 0 or step == args.adapt_steps - 1:
            curve.append(
                dict(step=step, t=round(time.time() - t0, 1), loss=round(loss.item(), 4), tok_acc=round(tacc, 4))
            )
            log(f"adapt step {step} {curve[-1]}", logf)
        if (step + 1) % max(1, args.ckpt_every // 5) == 0 or step == args.adapt_steps - 1:
            save_ckpt(ck, dict(step=step + 1, lora=lora_state(loras), opt=opt.state_dict(), curve=curve))
    model.eval()
    return loras


# ----------------------------------------------------------------------------------------------- export
def stage_export(args, model, loras, base_sd, logf, timings: dict) -> None:
    from safetensors.torch import save_file

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    vis = {n: p.detach().half().contiguous() for n, p in vision_params(model)}
    lora = {k: v.half().contiguous() for k, v in lora_state(loras).items()}
    with atomic_path(out / R.VISION_FILE) as tmp:
        save_file(vis, str(tmp), metadata={"format": "pt"})
    with atomic_path(out / R.LORA_FILE) as tmp:
        save_file(lora, str(tmp), metadata={"format": "pt"})
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(smollm2_dir())
    base_cfg = {
        k: getattr(cfg, k)
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "vocab_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
        )
    }
    fp_keys = sorted(base_sd)[:3]
    meta = dict(
        format_version=R.FORMAT_VERSION,
        name=R.NAME,
        architecture=R.ARCHITECTURE,
        base_gguf_sha256=GGUF_SHA256,
        base_config=base_cfg,
        base_fingerprint=R._fingerprint({k: base_sd[k] for k in fp_keys}),
        model_version=R.MODEL_VERSION,
        architecture_detail=dict(
            vision=R.VISION,
            projector=dict(hidden_act="gelu", hidden_size=base_cfg["hidden_size"]),
            n_image_tokens=R.N_IMAGE_TOKENS,
            image_side=R.IMAGE_SIDE,
        ),
        image_token=R.IMAGE_TOKEN,
        read_pad_token=R.READ_PAD_TOKEN,
        read_align=args.read_align,
        lora=dict(
            rank=R.LORA_RANK, alpha=R.LORA_ALPHA, targets=list(R.LORA_TARGETS), n_layers=len(R.text_model(model).layers)
        ),
        training=dict(
            seed=args.seed,
            read_steps=args.read_steps,
            read_batch=args.read_batch,
            lr_read=args.lr_read,
            read_decay_frac=args.read_decay_frac,
            read_kinds=args.read_kinds,
            read_onehot=args.read_onehot,
            lr_adapt=args.lr_adapt,
            threads=args.threads,
            adapt_steps=args.adapt_steps,
            adapt_batch=args.adapt_batch,
            n_teacher=args.n_teacher,
            cot_frac=args.cot_frac,
            adapt_oracle=args.adapt_oracle,
            timings_s=timings,
        ),
        floors=dict(
            reading_exact_match=args.floor_exact,
            reading_token_accuracy=args.floor_token,
            note="reading floors on 50 held-out images, checked by tests/test_reference_vlm.py",
        ),
    )
    write_json_atomic(out / R.META_FILE, meta)
    # per-layer language-model difference vs SmolLM2 (from the fp16 factors, as assembled)
    deltas = R.lm_deltas(out)
    per_layer = []
    for i in range(len(R.text_model(model).layers)):
        row = {"layer": i}
        tot_d = tot_w = 0.0
        for t in R.LORA_TARGETS:
            name = f"layers.{i}.{t}.weight"
            d = deltas[name].norm().item()
            w = base_sd[name].norm().item()
            row[t] = dict(delta_fro=round(d, 5), rel=round(d / w, 6))
            tot_d += d**2
            tot_w += w**2
        row["delta_fro"] = round(math.sqrt(tot_d), 5)
        row["rel"] = round(math.sqrt(tot_d / tot_w), 6)
        per_layer.append(row)
    write_json_atomic(
        out / "lm_delta.json",
        dict(
            note="Frobenius norm of (VLM language-model weight - SmolLM2 weight) per layer and projection; "
            "all other language-model weights (embeddings, norms, gate/up projections) are identical.",
            per_layer=per_layer,
        ),
    )
    for f in (*R.SHIPPED_FILES, "lm_delta.json"):
        os.chmod(out / f, 0o644)  # temp files are created 0600
    sums = "".join(f"{file_sha256(out / n)}  {n}\n" for n in R.SHIPPED_FILES)
    with atomic_path(out / R.SUMS_FILE) as tmp:
        tmp.write_text(sums)
    os.chmod(out / R.SUMS_FILE, 0o644)
    size = sum((out / n).stat().st_size for n in R.SHIPPED_FILES)
    log(f"export: {out} ({size / 1e6:.2f} MB shipped)", logf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=["read", "teacher", "adapt", "export", "all"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=R.WEIGHTS_DIR)
    ap.add_argument("--ckpt-dir", type=Path, default=cache_root() / "train" / R.NAME)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 or 2)")
    ap.add_argument("--read-steps", type=int, default=30000)
    ap.add_argument(
        "--read-kinds",
        default="expression,expression,counting,counting,bars",
        help="training mix: items cycle through this comma list",
    )
    ap.add_argument(
        "--read-onehot", type=float, default=1.0, help="one-hot projector: init + weight of its hidden-unit CE (0: off)"
    )
    ap.add_argument("--read-batch", type=int, default=32)
    ap.add_argument("--lr-read", type=float, default=1.5e-3)
    ap.add_argument(
        "--read-align",
        default="left",
        choices=["left", "right"],
        help="where the depicted tokens sit among the image slots",
    )
    ap.add_argument(
        "--read-decay-frac", type=float, default=0.6, help="final fraction of read steps with linear lr decay"
    )
    ap.add_argument("--n-teacher", type=int, default=400)
    ap.add_argument("--cot-frac", type=float, default=0.25)
    ap.add_argument("--direct-tokens", type=int, default=12)
    ap.add_argument("--cot-tokens", type=int, default=40)
    ap.add_argument("--adapt-steps", type=int, default=120)
    ap.add_argument("--adapt-batch", type=int, default=8)
    ap.add_argument("--lr-adapt", type=float, default=1e-3)
    ap.add_argument(
        "--adapt-oracle",
        action="store_true",
        help="adapt the LM on exact text embeddings in the image slots (independent of the reader, so it "
        "can run in parallel with stage read)",
    )
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--floor-exact", type=float, default=0.0, help="reading exact-match floor stated in the card")
    ap.add_argument("--floor-token", type=float, default=0.0, help="reading token-accuracy floor stated in the card")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.threads > 2:
        raise SystemExit("--threads must be 1 or 2 on this shared machine")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    args.ckpt_dir = args.ckpt_dir / f"seed{args.seed}"
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    logf = args.ckpt_dir / "train.log"
    timings_path = args.ckpt_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    def timed(name, fn):
        t, load0, cpu0 = time.time(), os.getloadavg()[0], time.process_time()
        log(f"{name}: start, load average {os.getloadavg()}", logf)
        r = fn()
        timings.update(
            json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        )  # stages may run in parallel
        timings[name] = round(timings.get(name, 0.0) + time.time() - t, 1)
        timings[f"{name}_load1_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        # CPU seconds of this process (all threads): what the stage costs whatever else shares the machine
        timings[f"{name}_cpu_s"] = round(timings.get(f"{name}_cpu_s", 0.0) + time.process_time() - cpu0, 1)
        write_json_atomic(timings_path, timings)
        log(f"{name}: {timings[name]} s, load average {os.getloadavg()}", logf)
        return r

    t0 = time.time()
    smol = smollm2_dir()
    tok = R.build_tokenizer(smol)
    model = R.build_model(smol)
    t_setup = time.time() - t0
    base_sd = {
        k: v.detach().clone()
        for k, v in R.text_model(model).state_dict().items()
        if any(t in k for t in R.LORA_TARGETS)
    }
    stages = ["read", "teacher", "adapt", "export"] if args.stage == "all" else [args.stage]
    t_all = time.time()
    if "read" in stages:
        timed("read", lambda: stage_read(args, model, tok, logf))
    if "teacher" in stages:
        timed("teacher", lambda: stage_teacher(args, tok, logf))
    if "adapt" in stages or "export" in stages:
        if "read" not in stages and (not args.adapt_oracle or "export" in stages):
            stage_read(args, model, tok, logf)  # loads the finished reader
        pool = (
            stage_teacher(args, tok, logf)
            if "teacher" not in stages
            else json.loads((args.ckpt_dir / "teacher.json").read_text())
        )
        loras = timed("adapt", lambda: stage_adapt(args, model, tok, pool, logf)) if "adapt" in stages else None
        if "export" in stages:
            if loras is None:  # resumes from adapt.pt (the loop is empty when adaptation has finished)
                loras = stage_adapt(args, model, tok, pool, logf)
            if args.stage == "all":  # wall time of this invocation up to export (model build included)
                timings["all_wall_s_this_run"] = round(time.time() - t_all + t_setup, 1)
                write_json_atomic(timings_path, timings)  # a later `--stage export` (e.g. new floors) keeps it
            stage_export(args, model, loras, base_sd, logf, timings)
    log(f"done; timings {timings}; wall {time.time() - t_all + t_setup:.0f} s", logf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
