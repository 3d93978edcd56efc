#!/usr/bin/env python
"""Reading-stage pilot: time-boxed runs of stock-class image readers, scored on the held-out seed.

Each run trains only the vision part of one stock transformers design (the language model is never run) with the
reading loss of ``scripts/train_reference_vlm.py`` on fresh items of seed ``READ_SEED_BASE + step``, and scores
the held-out items (seed 424,242, n=96, bars/counting/expression) every ``--eval-every`` steps by nearest
neighbour over SmolLM2's whole input-embedding table, as ``scripts/eval_reference_vlm.py`` does. The last
evaluation uses fp16-rounded weights (as shipped). Findings: ``docs/reference-vlm-v2-pilot.md``.

Designs (the classes are the stock ones an ``AutoModelForImageTextToText`` checkpoint would hold):

* ``i2``    — Idefics2: SigLIP-style tower + gated MLP to 576 + perceiver resampler (16 learned queries);
* ``i3``    — Idefics3: SigLIP-style tower + pixel shuffle + one linear map to 576;
* ``llava`` — LLaVA: CLIP tower (24-px patches = 16 tokens) + linear-GELU-linear projector (the v1 reader);
* ``levit`` — LLaVA with a LeViT tower: convolutional stem (x16), attention, one attention subsample to 16 tokens.

Usage (one thread; the machine is shared)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/reading_pilot.py D_llava24_left --design llava --align left --minutes 6
    OMP_NUM_THREADS=1 python scripts/reading_pilot.py bench_i2 --design i2 --bench

Writes JSON lines (a header, then one record per evaluation) to ``--out-dir/NAME.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_reference_vlm import READ_SEED_BASE, Reader, lr_at  # noqa: E402

from cotscope.probes.models import reference_vlm as R  # noqa: E402
from cotscope.probes.models.embedded import smollm2_dir  # noqa: E402
from cotscope.probes.stimuli.visual import generate_visual_items  # noqa: E402

EVAL_SEED = 424_242
KINDS = ("bars", "counting", "expression")
# the Idefics2 design the pilot compared (format 2 of reference_vlm before v2 settled on LLaVA)
I2_VISION = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, patch_size=12, num_channels=3
)
I2_PERCEIVER = dict(
    resampler_n_latents=16, resampler_depth=1, resampler_n_heads=4, resampler_head_dim=64, num_key_value_heads=4
)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--design", default="i2", choices=["i2", "i3", "llava", "levit"])
    ap.add_argument("--vision", default="{}", help="JSON overrides of the vision config")
    ap.add_argument("--conn", default="{}", help="JSON overrides of the connector (perceiver config / scale_factor)")
    ap.add_argument("--align", default="right", choices=["left", "right"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--minutes", type=float, default=6.0, help="budget; steps fixed from the speed of steps 0-19")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    ap.add_argument("--decay-frac", type=float, default=0.25, help="final fraction of steps with linear lr decay")
    ap.add_argument("--tau", type=float, default=0.05, help="temperature of the cosine logits")
    ap.add_argument("--ce-w", type=float, default=1.0)
    ap.add_argument("--mse-w", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--bn-recal", type=int, default=1, help="recompute BatchNorm statistics before each evaluation")
    ap.add_argument(
        "--onehot",
        type=float,
        default=0.0,
        help="LLaVA projector: linear_2 starts with the reading vocabulary's embeddings as its first columns; "
        "weight of a cross-entropy on those hidden units (0 = off)",
    )
    ap.add_argument(
        "--kinds",
        default="expression,counting,bars",
        help="training kinds, cycled per item (repeat a kind to weight it); the evaluation keeps all three",
    )
    ap.add_argument("--side", type=int, default=96, help="input side in pixels (the 96-px images are resized)")
    ap.add_argument(
        "--stock-eval",
        type=Path,
        default=None,
        help="(llava design) load this run's .pt into the stock format-1 model and score it with "
        "scripts/eval_reference_vlm.py's reading_scores through the stock processor; prints one JSON line",
    )
    ap.add_argument("--bench", action="store_true", help="only time 6 training steps and print one JSON line")
    ap.add_argument("--out-dir", type=Path, default=Path("runs/reading_pilot"))
    return ap.parse_args(argv)


class Pilot:
    """One design's vision part, its features, the reading loss and the held-out scores."""

    def __init__(self, a: argparse.Namespace):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.a = a
        torch.manual_seed(0)
        d = smollm2_dir()
        self.tok = R.build_tokenizer(d)
        self.tcfg = AutoConfig.from_pretrained(d)
        self.E = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).get_input_embeddings().weight
        self.E = self.E.detach().clone()
        self.reader = Reader(self.tok, self.E, a.align)
        self.hid: dict[str, torch.Tensor] = {}
        self.vision_cfg, self.vis, self.con, self._feats = self._build(json.loads(a.vision), json.loads(a.conn))
        self.mods = [self.vis, self.con]
        self.params = [p for m in self.mods for p in m.parameters()]
        self.cand = F.normalize(self.E[self.reader.cand], dim=-1)
        self.En = F.normalize(self.E, dim=-1)
        ev = generate_visual_items(96, seed=EVAL_SEED)
        self.ev, self.kinds = ev, [it.kind for it in ev]
        self.ev_pv = self.pix([it.image for it in ev])
        self.ev_t = self.reader.targets([it.description for it in ev])
        self.ev_content = self.ev_t != self.reader.pad_id  # the pad never occurs inside a description

    # ------------------------------------------------------------------------------------------ designs
    def _build(self, vis_over: dict, con_over: dict):
        a, tcfg, S = self.a, self.tcfg, self.a.side
        if a.design == "i2":
            from transformers import Idefics2Config
            from transformers.models.idefics2.modeling_idefics2 import Idefics2Connector, Idefics2VisionTransformer

            v = dict(I2_VISION, image_size=S, **vis_over)
            p = dict(I2_PERCEIVER, hidden_size=tcfg.hidden_size, rms_norm_eps=tcfg.rms_norm_eps, **con_over)
            cfg = Idefics2Config(vision_config=v, perceiver_config=p, text_config=tcfg.to_dict(), image_token_id=16)
            vis, con = Idefics2VisionTransformer(cfg.vision_config), Idefics2Connector(cfg)
            with torch.no_grad():  # as stage_read does
                lat = con.perceiver_resampler.latents
                lat.copy_(torch.randn(lat.shape, generator=torch.Generator().manual_seed(0)))
                con.perceiver_resampler.norm.weight.fill_(float(self.E.pow(2).mean().sqrt()))
            g = S // v["patch_size"]

            def feats(pv):
                pm = torch.ones(pv.shape[0], g, g, dtype=torch.bool)
                h = vis(pixel_values=pv, patch_attention_mask=pm).last_hidden_state
                return con(h, attention_mask=pm.view(pv.shape[0], -1))

            return v, vis, con, feats
        if a.design == "i3":
            from transformers import Idefics3Config
            from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector, Idefics3VisionTransformer

            v = dict(I2_VISION, image_size=S, **vis_over)
            cfg = Idefics3Config(
                vision_config=v, text_config=tcfg.to_dict(), scale_factor=con_over.get("scale_factor", 3)
            )
            vis, con = Idefics3VisionTransformer(cfg.vision_config), Idefics3Connector(cfg)
            g = S // v["patch_size"]
            if (g // cfg.scale_factor) ** 2 != R.N_IMAGE_TOKENS:
                raise ValueError(f"{g}x{g} patches / scale {cfg.scale_factor} is not {R.N_IMAGE_TOKENS} tokens")

            def feats(pv):
                pm = torch.ones(pv.shape[0], g, g, dtype=torch.bool)
                return con(vis(pixel_values=pv, patch_attention_mask=pm).last_hidden_state)

            return v, vis, con, feats
        from transformers import CLIPVisionConfig, CLIPVisionModel, LevitConfig, LevitModel, LlavaConfig
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        if a.design == "llava":
            v = dict(R.VISION, image_size=S, **vis_over)
            if (S // v["patch_size"]) ** 2 != R.N_IMAGE_TOKENS:
                raise ValueError(f"{S}-px images in {v['patch_size']}-px patches are not {R.N_IMAGE_TOKENS} tokens")
            vcfg, strategy = CLIPVisionConfig(**v), "default"
        else:
            v = dict(
                image_size=S,
                hidden_sizes=[128, 192],
                num_attention_heads=[4, 4],
                depths=[2, 2],
                key_dim=[16, 16],
                attention_ratio=[2, 2],
                mlp_ratio=[2, 2],
                down_ops=[["Subsample", 16, 128 // 16, 4, 2, 2]],
            )
            v.update(vis_over)
            v["hidden_size"] = v["hidden_sizes"][-1]  # what LlavaMultiModalProjector reads
            vcfg, strategy = LevitConfig(**v), "full"
        cfg = LlavaConfig(
            vision_config=vcfg,
            text_config=tcfg,
            image_token_index=16,
            projector_hidden_act="gelu",
            vision_feature_layer=-1,
            vision_feature_select_strategy=strategy,
        )
        vis = CLIPVisionModel(cfg.vision_config) if a.design == "llava" else LevitModel(cfg.vision_config)
        con = LlavaMultiModalProjector(cfg)
        drop_cls = a.design == "llava"

        def feats(pv):  # = LlavaModel.get_image_features, keeping the projector's hidden pre-activation
            h = vis(pixel_values=pv, output_hidden_states=True).hidden_states[-1]
            z = con.linear_1(h[:, 1:] if drop_cls else h)
            self.hid["z"] = z
            return con.linear_2(con.act(z))

        if a.onehot:
            with torch.no_grad():
                nc = len(self.reader.cand)
                con.linear_2.weight.zero_()
                con.linear_2.weight[:, :nc] = self.E[self.reader.cand].T / 0.8413  # gelu(1) = 0.8413
                con.linear_2.bias.zero_()
        return v, vis, con, feats

    # ------------------------------------------------------------------------------------------ steps
    def pix(self, images) -> torch.Tensor:
        S = self.a.side
        arr = [
            np.asarray(im.convert("RGB").resize((S, S), resample=2) if S != 96 else im.convert("RGB"), np.float32)
            for im in images
        ]
        return (torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5

    def feats(self, pv: torch.Tensor) -> torch.Tensor:
        return self._feats(pv)

    def loss(self, f: torch.Tensor, tgt: torch.Tensor):
        a, E, reader = self.a, self.E, self.reader
        t = E[tgt]
        rel = ((f - t) ** 2).sum(-1) / (t**2).sum(-1)
        cos = F.cosine_similarity(f, t, dim=-1)
        logits = F.normalize(f, dim=-1) @ self.cand.T / a.tau
        labels = torch.tensor([reader.cand_index[int(i)] for i in tgt.flatten()]).view_as(tgt)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        if a.onehot:
            z = self.hid["z"][..., : len(reader.cand)]
            ce = ce + a.onehot * F.cross_entropy(z.flatten(0, 1), labels.flatten())
        acc = (logits.argmax(-1) == labels).float().mean().item()
        return a.mse_w * (rel.mean() + (1 - cos).mean()) + a.ce_w * ce, acc

    def recalibrate_bn(self, n_batches: int = 4) -> None:
        """BatchNorm running statistics recomputed (cumulative mean) on fresh training images at the current weights."""
        bns = [m for m in self.vis.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        with torch.no_grad():
            for k in range(n_batches):
                items = generate_visual_items(64, seed=3_000_000 + k)
                self.feats(self.pix([it.image for it in items]))
        for m in bns:
            m.momentum = 0.1

    def evaluate(self, step: int, t: float, half: bool = False) -> dict:
        if self.a.bn_recal:
            self.recalibrate_bn()
        for m in self.mods:
            m.eval()
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params] if half else []
            for p in self.params if half else []:
                p.copy_(p.half().float())
            dec = (F.normalize(self.feats(self.ev_pv), dim=-1) @ self.En.T).argmax(-1)
            for p, s in zip(self.params, saved):
                p.copy_(s)
        for m in self.mods:
            m.train()
        eq, content = dec == self.ev_t, self.ev_content
        rec = dict(
            step=step,
            t=round(t, 1),
            exact=round(eq.all(1).float().mean().item(), 4),
            token=round(eq[content].float().mean().item(), 4),
            fp16=half,
        )
        for k in KINDS:
            idx = [i for i, kk in enumerate(self.kinds) if kk == k]
            rec[k] = [
                round(eq[idx].all(1).float().mean().item(), 3),
                round(eq[idx][content[idx]].float().mean().item(), 3),
            ]
        bad = [i for i in range(len(self.ev)) if not eq[i].all() and self.kinds[i] == "expression"][:2]
        rec["wrong"] = [(self.ev[i].description, self.tok.decode(dec[i][content[i]].tolist())) for i in bad]
        return rec


def bench(pl: Pilot) -> dict:
    """Median seconds of one training step (forward, loss, backward, AdamW) and of rendering one batch."""
    a = pl.a
    opt = torch.optim.AdamW(pl.params, lr=1e-4)
    times, rt = [], []
    for k in range(7):
        t0 = time.perf_counter()
        items = generate_visual_items(a.batch, seed=READ_SEED_BASE + k)
        pv, tgt = pl.pix([it.image for it in items]), pl.reader.targets([it.description for it in items])
        t1 = time.perf_counter()
        loss, _ = pl.loss(pl.feats(pv), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k:  # step 0 warms up
            times.append(time.perf_counter() - t1)
            rt.append(t1 - t0)
    n = sum(p.numel() for p in pl.params)
    return dict(
        name=a.name,
        design=a.design,
        params=n,
        fp16_MB=round(2 * n / 1e6, 2),
        batch=a.batch,
        train_step_s=round(statistics.median(times), 3),
        render_s=round(statistics.median(rt), 3),
        load1=round(os.getloadavg()[0], 2),
    )


def stock_eval(a: argparse.Namespace) -> dict:
    """Held-out reading of a pilot LLaVA-CLIP checkpoint as the stock ``LlavaForConditionalGeneration`` (fp16 as
    shipped), scored by the evaluation script through the stock processor."""
    import importlib.util

    if a.design != "llava":
        raise ValueError("--stock-eval needs --design llava (the format-1 class reference_vlm.py assembles)")
    spec = importlib.util.spec_from_file_location("eval_reference_vlm", Path(__file__).parent / "eval_reference_vlm.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    ck = torch.load(a.stock_eval, weights_only=False)
    model = R.build_model(smollm2_dir())
    params = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    if [tuple(p.shape) for p in params] != [tuple(q.shape) for q in ck["params"]]:
        raise ValueError(f"{a.stock_eval} does not hold the format-1 vision tower + projector")
    with torch.no_grad():
        for p, q in zip(params, ck["params"]):
            p.copy_(q.half().float())
    items = generate_visual_items(96, seed=EVAL_SEED)
    r = ev.reading_scores(model.eval(), R.build_processor(smollm2_dir(), 1), items, a.align)
    return {k: v for k, v in r.items() if k != "examples_wrong"}


def main(argv=None) -> int:
    a = parse(argv)
    torch.set_num_threads(1)
    if a.stock_eval:
        print(json.dumps(stock_eval(a)), flush=True)
        return 0
    pl = Pilot(a)
    if a.bench:
        print(json.dumps(bench(pl)), flush=True)
        return 0
    a.out_dir.mkdir(parents=True, exist_ok=True)
    out = a.out_dir / f"{a.name}.jsonl"
    n_par = sum(p.numel() for p in pl.params)
    hdr = dict(
        name=a.name,
        design=a.design,
        vision=pl.vision_cfg,
        conn=json.loads(a.conn),
        align=a.align,
        batch=a.batch,
        lr=a.lr,
        tau=a.tau,
        ce_w=a.ce_w,
        mse_w=a.mse_w,
        onehot=a.onehot,
        kinds=a.kinds,
        side=a.side,
        params=n_par,
        fp16_MB=round(2 * n_par / 1e6, 2),
    )
    out.write_text(json.dumps(hdr) + "\n")
    print(json.dumps(hdr), flush=True)
    opt = torch.optim.AdamW(pl.params, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.98))
    total, step, tr_acc, t0 = a.steps or 10**9, 0, [], time.time()
    while step < total:
        if step == 20 and not a.steps:  # fix the step budget from the measured speed
            total = int(a.minutes * 60 / ((time.time() - t0) / 20))
            print(f"# {(time.time() - t0) / 20:.3f} s/step -> {total} steps", flush=True)
        items = generate_visual_items(a.batch, seed=READ_SEED_BASE + step, kinds=a.kinds.split(","))
        pv, tgt = pl.pix([it.image for it in items]), pl.reader.targets([it.description for it in items])
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, total, a.lr, 50, int(a.decay_frac * total) if total < 10**9 else 0)
        loss, acc = pl.loss(pl.feats(pv), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pl.params, 1.0)
        opt.step()
        tr_acc.append(acc)
        step += 1
        if step % a.eval_every == 0 or step == total:
            el = time.time() - t0
            rec = pl.evaluate(step, el, half=step == total)
            rec.update(s_per_step=round(el / step, 3), loss=round(loss.item(), 4))
            rec["train_acc"] = round(sum(tr_acc[-20:]) / len(tr_acc[-20:]), 4)
            print(json.dumps(rec), flush=True)
            with open(out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
    torch.save({"params": [p.detach() for p in pl.params], "hdr": hdr}, out.with_suffix(".pt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
