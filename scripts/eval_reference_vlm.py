#!/usr/bin/env python
"""Measure cotscope-smolvlm on held-out rendered images (fixed seed) and write the figures as JSON.

Figures:
* reading — each image token decoded to its nearest vocabulary embedding (cosine, all 49,152 tokens):
  exact match of the whole depicted text (and of every empty slot), token accuracy over the depicted tokens;
* agreement — the VLM's greedy answer from the image vs SmolLM2's greedy answer to the same problem as text,
  with the direct and the CoT prompt; both models' raw accuracies beside it;
* ceiling — frozen SmolLM2 fed the *exact* text embeddings of the depicted tokens (plus the pad embeddings) in
  the image slots of the same template, agreeing with SmolLM2's own text answer: what a perfect reader with an
  unchanged LM could reach. ``lm_oracle`` is the same with the VLM's (adapted) LM: it isolates the LM shift;
* log p(gold) — teacher-forced log-probability of "The answer is <gold>" after the direct prompt under
  VLM(image), SmolLM2(text) and the ceiling, and Pearson r across problems against SmolLM2(text);
* ablations — the same VLM prompt with a blank image, and with the image of a different item of the same kind;
  "unrelated" is SmolLM2's agreement with itself across those two different items (the chance level).

    python scripts/eval_reference_vlm.py --n 96 --n-cot 48 --out weights/cotscope-smolvlm/eval.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cotscope.analyses.atomic import write_json_atomic  # noqa: E402
from cotscope.probes.models import reference_vlm as R  # noqa: E402
from cotscope.probes.stimuli.visual import VisualItem, generate_visual_items, text_prompt  # noqa: E402

EVAL_SEED = 424_242
ANSWER_PREFIX = "The answer is "
TARGETS = {
    "reading_exact_match": 0.95,
    "reading_token_accuracy": 0.99,
    "direct_agreement_vs_ceiling": 0.9,
    "logp_gold_pearson_r": 0.8,
}
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)")
_IS = re.compile(r"answer is\s*:?\s*\$?\\?\(?\s*(-?\d+)", re.I)
_INT = re.compile(r"-?\d+")


def extract_answer(text: str) -> str | None:
    """``\\boxed{n}``, else "answer is n", else the last integer in the text."""
    for rx in (_BOXED, _IS):
        m = rx.findall(text)
        if m:
            return m[-1]
    m = _INT.findall(text)
    return m[-1] if m else None


# ----------------------------------------------------------------------------------------------- reading
def read_targets(tok, items, align: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Target token per slot and a mask of the slots holding depicted tokens."""
    pad = tok(R.READ_PAD_TOKEN, add_special_tokens=False).input_ids[0]
    tgt = torch.full((len(items), R.N_IMAGE_TOKENS), pad)
    content = torch.zeros_like(tgt, dtype=torch.bool)
    for i, it in enumerate(items):
        ids = tok(it.description, add_special_tokens=False).input_ids
        if len(ids) > R.N_IMAGE_TOKENS:
            raise ValueError(f"{it.id}: description has {len(ids)} tokens > {R.N_IMAGE_TOKENS} image tokens")
        sl = R.read_slots(len(ids), align)
        tgt[i, sl] = torch.tensor(ids)
        content[i, sl] = True
    return tgt, content


@torch.no_grad()
def decode_image_tokens(model, processor, images, batch: int = 64) -> torch.Tensor:
    """Nearest vocabulary token (cosine) of every image token: [n, N_IMAGE_TOKENS]."""
    E = F.normalize(model.get_input_embeddings().weight.float(), dim=-1)
    out = []
    for s in range(0, len(images), batch):
        chunk = images[s : s + batch]
        pv = R.vlm_batch(processor, chunk, [""] * len(chunk))["pixel_values"]  # the stock processor path
        f = F.normalize(R.image_features(model, pv.to(model.dtype)).float(), dim=-1)
        out.append((f @ E.T).argmax(-1))
    return torch.cat(out)


def reading_scores(model, processor, items, align: str | None = None) -> dict:
    tok = processor.tokenizer
    tgt, content = read_targets(tok, items, align or R.read_alignment())
    dec = decode_image_tokens(model, processor, [it.image for it in items])
    eq = dec == tgt
    res = {
        "n": len(items),
        "exact_match": eq.all(1).float().mean().item(),
        "exact_match_content": torch.stack([eq[i][content[i]].all() for i in range(len(items))]).float().mean().item(),
        "token_accuracy": eq[content].float().mean().item(),
        "slot_accuracy": eq.float().mean().item(),
        "by_kind": {},
    }
    for kind in sorted({it.kind for it in items}):
        idx = [i for i, it in enumerate(items) if it.kind == kind]
        res["by_kind"][kind] = {
            "n": len(idx),
            "exact_match": eq[idx].all(1).float().mean().item(),
            "token_accuracy": eq[idx][content[idx]].float().mean().item(),
        }
    bad = [i for i in range(len(items)) if not eq[i].all()][:5]
    res["examples_wrong"] = [
        {"id": items[i].id, "target": items[i].description, "decoded": tok.decode(dec[i][content[i]].tolist())}
        for i in bad
    ]
    return res


# ----------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate_text(lm, tok, prompts: list[str], max_new: int, batch: int, desc: str) -> list[str]:
    tok.padding_side = "left"
    outs = []
    for s in tqdm(range(0, len(prompts), batch), desc=desc, leave=False):
        chats = [
            tok.apply_chat_template(R.text_messages(p), tokenize=False, add_generation_prompt=True)
            for p in prompts[s : s + batch]
        ]
        enc = tok(chats, return_tensors="pt", padding=True)
        g = lm.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        outs += tok.batch_decode(g[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return outs


@torch.no_grad()
def generate_vlm(model, processor, images, prompts: list[str], max_new: int, batch: int, desc: str) -> list[str]:
    outs = []
    tok = processor.tokenizer
    for s in tqdm(range(0, len(prompts), batch), desc=desc, leave=False):
        enc = R.vlm_batch(processor, images[s : s + batch], prompts[s : s + batch])
        g = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        outs += tok.batch_decode(g[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs


def oracle_slots(tok, embed: torch.Tensor, items, align: str | None = None) -> torch.Tensor:
    """The exact input embeddings a perfect reader would put in the image slots: [n, N_IMAGE_TOKENS, hidden]."""
    tgt, _ = read_targets(tok, items, align or R.read_alignment())
    return embed[tgt]


def slot_embeds(embed_layer, input_ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Token embeddings of ``input_ids`` with the image-token positions replaced by ``slots`` (row-major)."""
    emb = embed_layer(input_ids)
    mask = (input_ids == R.IMAGE_TOKEN_ID).unsqueeze(-1)
    if int(mask.sum()) != slots.shape[0] * slots.shape[1]:
        raise ValueError(f"{int(mask.sum())} image-token positions for {slots.shape[0] * slots.shape[1]} slot vectors")
    return emb.masked_scatter(mask, slots.to(emb.dtype))


@torch.no_grad()
def generate_slots(
    lm, processor, slots: torch.Tensor, prompts: list[str], max_new: int, batch: int, desc: str
) -> list[str]:
    """Greedy text of a causal LM fed the VLM's template with ``slots`` in place of the image features.

    ``lm`` is SmolLM2 (the ceiling) or the VLM itself (its own adapted language model, no vision).
    """
    from PIL import Image

    tok = processor.tokenizer
    dummy = Image.new("RGB", (R.IMAGE_SIDE, R.IMAGE_SIDE), "white")
    outs = []
    for s in tqdm(range(0, len(prompts), batch), desc=desc, leave=False):
        enc = R.vlm_batch(processor, [dummy] * len(prompts[s : s + batch]), prompts[s : s + batch])
        emb = slot_embeds(lm.get_input_embeddings(), enc["input_ids"], slots[s : s + batch])
        g = lm.generate(
            inputs_embeds=emb,
            attention_mask=enc["attention_mask"],
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        outs += tok.batch_decode(g, skip_special_tokens=True)  # inputs_embeds only: g holds the new tokens only
    return outs


def answer_ids(tok, gold: int) -> tuple[list[int], int]:
    """Ids of ``ANSWER_PREFIX + gold`` and where the scored (answer) part starts."""
    full = tok(ANSWER_PREFIX + str(gold), add_special_tokens=False).input_ids
    pre = tok(ANSWER_PREFIX, add_special_tokens=False).input_ids
    k = 0
    while k < min(len(pre), len(full)) and pre[k] == full[k]:
        k += 1
    return full, k


def _sum_logp(logits: torch.Tensor, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t]) for t >= start, where logits[-len(ids)-1+t] predicts ids[t]."""
    lp = torch.log_softmax(logits[0, -len(ids) - 1 : -1].float(), dim=-1)
    return float(sum(lp[t, ids[t]] for t in range(start, len(ids))))


@torch.no_grad()
def logp_gold(
    model, processor, lm, items, desc: str = "log p(gold)", align: str | None = None
) -> dict[str, list[float]]:
    """Teacher-forced log p(gold answer) after the direct prompt, per item, under four inputs.

    ``vlm_image``: the VLM with the image; ``llm_text``: SmolLM2 with the problem as text; ``ceiling``: SmolLM2
    with the exact embeddings in the VLM's image slots; ``lm_oracle``: the VLM's LM with the exact embeddings;
    ``vlm_blank`` / ``vlm_other_image``: the VLM with a blank image / another item's image. Much of log p(gold)
    depends on the answer alone (its number of digits), so the last two show how much r needs no reading.
    """
    tok = processor.tokenizer
    E_smol = lm.get_input_embeddings().weight
    E_vlm = model.get_input_embeddings().weight
    from PIL import Image

    blank = Image.new("RGB", items[0].image.size, "white")
    oth = other_index(items)
    out: dict[str, list[float]] = {
        "vlm_image": [],
        "llm_text": [],
        "ceiling": [],
        "lm_oracle": [],
        "vlm_blank": [],
        "vlm_other_image": [],
    }
    for i, it in enumerate(tqdm(items, desc=desc, leave=False)):
        ans, k = answer_ids(tok, it.answer)
        a = torch.tensor([ans])
        text = tok.apply_chat_template(
            R.text_messages(text_prompt(it, False)), tokenize=True, add_generation_prompt=True, return_dict=False
        )
        out["llm_text"].append(_sum_logp(lm(input_ids=torch.tensor([text + ans])).logits, ans, k))
        for name, img in (("vlm_image", it.image), ("vlm_blank", blank), ("vlm_other_image", items[oth[i]].image)):
            enc = R.vlm_batch(processor, [img], [it.direct_prompt])
            ids = torch.cat([enc["input_ids"], a], 1)
            att = torch.ones_like(ids)
            lo = model(
                input_ids=ids,
                attention_mask=att,
                pixel_values=enc["pixel_values"],
                pixel_attention_mask=enc.get("pixel_attention_mask"),
            ).logits
            out[name].append(_sum_logp(lo, ans, k))
        for name, net, E in (("ceiling", lm, E_smol), ("lm_oracle", model, E_vlm)):
            emb = slot_embeds(net.get_input_embeddings(), ids, oracle_slots(tok, E, [it], align))
            out[name].append(_sum_logp(net(inputs_embeds=emb, attention_mask=att).logits, ans, k))
    return out


def pearson(a: list[float], b: list[float]) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def other_index(items: list[VisualItem]) -> list[int]:
    """For each item, a different item of the same kind (the next one, cyclically)."""
    by_kind: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_kind.setdefault(it.kind, []).append(i)
    out = [0] * len(items)
    for idx in by_kind.values():
        for a, b in zip(idx, idx[1:] + idx[:1]):
            out[a] = b
    return out


def agreement_block(
    model, processor, lm, tok, items, cot: bool, max_new: int, batch: int, align: str | None = None
) -> dict:
    from PIL import Image

    prompts = [it.cot_prompt if cot else it.direct_prompt for it in items]
    name = "cot" if cot else "direct"
    llm = [
        extract_answer(t)
        for t in generate_text(lm, tok, [text_prompt(it, cot) for it in items], max_new, batch, f"SmolLM2 text {name}")
    ]
    vlm_raw = generate_vlm(model, processor, [it.image for it in items], prompts, max_new, batch, f"VLM image {name}")
    vlm = [extract_answer(t) for t in vlm_raw]
    blank_img = Image.new("RGB", items[0].image.size, "white")
    blank = [
        extract_answer(t)
        for t in generate_vlm(model, processor, [blank_img] * len(items), prompts, max_new, batch, f"VLM blank {name}")
    ]
    oth = other_index(items)
    swapped = [
        extract_answer(t)
        for t in generate_vlm(
            model, processor, [items[j].image for j in oth], prompts, max_new, batch, f"VLM other image {name}"
        )
    ]
    tok_v = processor.tokenizer
    ceil = [
        extract_answer(t)
        for t in generate_slots(
            lm,
            processor,
            oracle_slots(tok_v, lm.get_input_embeddings().weight, items, align),
            prompts,
            max_new,
            batch,
            f"SmolLM2 exact slots {name}",
        )
    ]
    orac = [
        extract_answer(t)
        for t in generate_slots(
            model,
            processor,
            oracle_slots(tok_v, model.get_input_embeddings().weight, items, align),
            prompts,
            max_new,
            batch,
            f"VLM-LM exact slots {name}",
        )
    ]
    gold = [str(it.answer) for it in items]
    n = len(items)

    def agree(a, b):
        return sum(x == y for x, y in zip(a, b)) / n

    res = {
        "n": n,
        "agreement": agree(vlm, llm),
        "ceiling": agree(ceil, llm),
        "lm_oracle_agreement": agree(orac, llm),
        "vlm_accuracy": agree(vlm, gold),
        "llm_accuracy": agree(llm, gold),
        "blank_image_agreement": agree(blank, llm),
        "other_image_agreement": agree(swapped, llm),
        "unrelated_problem_agreement": agree([llm[j] for j in oth], llm),
        "other_image_agrees_with_llm_on_that_image": agree(swapped, [llm[j] for j in oth]),
        "by_kind": {},
        "examples": [
            {"id": items[i].id, "llm": llm[i], "vlm": vlm[i], "ceiling": ceil[i], "vlm_text": vlm_raw[i][:200]}
            for i in range(min(4, n))
        ],
    }
    for kind in sorted({it.kind for it in items}):
        idx = [i for i, it in enumerate(items) if it.kind == kind]
        res["by_kind"][kind] = {
            "n": len(idx),
            "agreement": sum(vlm[i] == llm[i] for i in idx) / len(idx),
            "ceiling": sum(ceil[i] == llm[i] for i in idx) / len(idx),
            "blank_image_agreement": sum(blank[i] == llm[i] for i in idx) / len(idx),
        }
    res["agreement_vs_ceiling"] = res["agreement"] / res["ceiling"] if res["ceiling"] else None
    return res


def evaluate(
    model,
    processor,
    n: int = 96,
    n_cot: int = 48,
    seed: int = EVAL_SEED,
    cot_tokens: int = 96,
    direct_tokens: int = 12,
    batch: int = 16,
    lm=None,
    kinds=None,
    parts: tuple[str, ...] = ("reading", "direct", "cot"),
    align: str | None = None,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotscope.probes.models.embedded import smollm2_dir

    t0 = time.time()
    items = generate_visual_items(n, seed=seed, **({"kinds": kinds} if kinds else {}))
    res = {"seed": seed, "settings": {"n": n, "n_cot": n_cot, "cot_tokens": cot_tokens, "direct_tokens": direct_tokens}}
    if "reading" in parts:
        res["reading"] = reading_scores(model, processor, items, align)
    if "direct" in parts or "cot" in parts:
        d = smollm2_dir()
        tok = AutoTokenizer.from_pretrained(d)
        lm = lm or AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        if "direct" in parts:
            res["direct"] = agreement_block(model, processor, lm, tok, items, False, direct_tokens, batch, align)
            lp = logp_gold(model, processor, lm, items, align=align)
            res["logp_gold"] = {
                "n": len(items),
                "prefix": ANSWER_PREFIX,
                "mean": {k: sum(v) / len(v) for k, v in lp.items()},
                "pearson_r_vs_llm_text": {k: pearson(v, lp["llm_text"]) for k, v in lp.items() if k != "llm_text"},
                "per_item": {k: [round(x, 4) for x in v] for k, v in lp.items()},
            }
        if "cot" in parts and n_cot:
            res["cot"] = agreement_block(model, processor, lm, tok, items[:n_cot], True, cot_tokens, batch, align)
    res[f"seconds_{'_'.join(parts)}"] = round(time.time() - t0, 1)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None, help="an assembled model folder (default: the shipped one)")
    ap.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="a release folder in the shipped layout (e.g. train_reference_vlm.py --out); alignment from its metadata",
    )
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--n-cot", type=int, default=48)
    ap.add_argument("--cot-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--read-align",
        choices=["left", "right"],
        default=None,
        help="slot alignment of the reader (default: from the shipped cotscope_vlm.json)",
    )
    ap.add_argument("--parts", nargs="+", default=["reading", "direct", "cot"], choices=["reading", "direct", "cot"])
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="only merge these partial JSON results into --out and print them",
    )
    ap.add_argument("--out", type=Path, default=R.WEIGHTS_DIR / "eval.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.merge:
        res = {}
        for f in args.merge:
            part = json.loads(f.read_text())
            res.update(part)
        write_json_atomic(args.out, res)
        report(res, args.out)
        return 0
    if args.model_dir:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(args.model_dir, dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(args.model_dir)
    else:
        model, processor = R.load_reference_vlm(weights_dir=args.weights_dir)
        if args.read_align is None:
            args.read_align = R.read_alignment(args.weights_dir)
    res = evaluate(
        model,
        processor,
        n=args.n,
        n_cot=args.n_cot,
        seed=args.seed,
        cot_tokens=args.cot_tokens,
        batch=args.batch,
        parts=tuple(args.parts),
        align=args.read_align,
    )
    write_json_atomic(args.out, res)
    report(res, args.out)
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report(res: dict, out: Path) -> None:
    """Print the figures next to the issue's targets."""
    rows = []
    if "reading" in res:
        r = res["reading"]
        rows.append(
            (
                "reading exact match",
                _fmt(r["exact_match"]),
                f">= {TARGETS['reading_exact_match']}",
                r["exact_match"] >= TARGETS["reading_exact_match"],
            )
        )
        rows.append(
            (
                "reading token accuracy",
                _fmt(r["token_accuracy"]),
                f">= {TARGETS['reading_token_accuracy']}",
                r["token_accuracy"] >= TARGETS["reading_token_accuracy"],
            )
        )
        for k, v in r["by_kind"].items():
            rows.append(
                (f"  {k} (n={v['n']}) exact / token", f"{v['exact_match']:.3f} / {v['token_accuracy']:.3f}", "", None)
            )
    for name in ("direct", "cot"):
        if name in res:
            b = res[name]
            ratio = b.get("agreement_vs_ceiling")
            tgt = TARGETS["direct_agreement_vs_ceiling"]
            rows.append(
                (
                    f"{name} agreement VLM(image)=SmolLM2(text) (n={b['n']})",
                    _fmt(b["agreement"]),
                    f">= {tgt} x ceiling = {_fmt(b['ceiling'] * tgt if b.get('ceiling') is not None else None)}"
                    if name == "direct"
                    else "report vs its ceiling",
                    (ratio is not None and ratio >= tgt) if name == "direct" else None,
                )
            )
            rows.append(
                (
                    f"  {name} ceiling: SmolLM2(exact slots)=SmolLM2(text)",
                    _fmt(b.get("ceiling")),
                    f"ratio {_fmt(ratio)}",
                    None,
                )
            )
            rows.append((f"  {name} VLM-LM(exact slots)=SmolLM2(text)", _fmt(b.get("lm_oracle_agreement")), "", None))
            rows.append(
                (
                    f"  {name} blank / other image / unrelated",
                    f"{_fmt(b['blank_image_agreement'])} / {_fmt(b['other_image_agreement'])} / "
                    f"{_fmt(b['unrelated_problem_agreement'])}",
                    "drop to unrelated level",
                    None,
                )
            )
            rows.append(
                (f"  {name} accuracy VLM / SmolLM2", f"{_fmt(b['vlm_accuracy'])} / {_fmt(b['llm_accuracy'])}", "", None)
            )
    if "logp_gold" in res:
        rr = res["logp_gold"]["pearson_r_vs_llm_text"]
        rows.append(
            (
                "log p(gold) Pearson r VLM(image) vs SmolLM2(text)",
                _fmt(rr["vlm_image"]),
                f">= {TARGETS['logp_gold_pearson_r']}",
                rr["vlm_image"] >= TARGETS["logp_gold_pearson_r"],
            )
        )
        rows.append(("  r ceiling / VLM-LM exact slots", f"{_fmt(rr['ceiling'])} / {_fmt(rr['lm_oracle'])}", "", None))
        rows.append(
            (
                "  r blank image / other image (no reading)",
                f"{_fmt(rr['vlm_blank'])} / {_fmt(rr['vlm_other_image'])}",
                "",
                None,
            )
        )
    w = max(len(r[0]) for r in rows) if rows else 0
    for name, val, tgt, ok in rows:
        mark = "" if ok is None else ("  MET" if ok else "  NOT MET")
        print(f"{name:<{w}}  {val:>15}  {tgt}{mark}")
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
