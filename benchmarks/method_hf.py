#!/usr/bin/env python3
"""The baseline a researcher would write today, in Python with transformers,
for the Neural Gate method — the other side of benchmarks/method.js.

It reads the exact token ids, subject positions and answer starts that
`node benchmarks/method.js --export data.json` used, and runs on the same
checkpoint:

  learnMask   one pair at a time; a forward hook on the FFN (mlp) of the
              masked layer multiplies the subject positions' output by m; the
              whole model is recomputed at every Adam step; loss
              L_sen + alpha * L_benign + l1 * |m - 1|_1, m clamped to [-1, 1]
              after every step (eq. 2-5), the same steps and learning rate;
  gatedEdit   the same batches as ours; a forward hook routes the FFN output
              k*y + (1-k)*y.detach() at subject positions (eq. 7); Adam on the
              layer's gate/up/down projections in the model's dtype; the whole
              model recomputed every epoch;
  generate    transformers' generate, greedy, batched, left padding.

Writes a JSON document with the masks (for method.js --compare), timings and
torch.cuda.max_memory_allocated. L_LM is the mean cross-entropy of the answer
tokens (answer then EOS), as in the library.

  python3 benchmarks/method_hf.py --data data.json --model DIR --out hf.json
      [--device cuda] [--dtype bfloat16] [--pairs N] [--tasks mask,edit,eval]
"""
import argparse
import json
import os
import time

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--pairs", type=int, default=0, help="learn masks for the first N pairs only (0: all); the edit takes all")
    p.add_argument("--tasks", default="mask,edit,eval")
    p.add_argument("--attn", default="auto", help="sdpa, eager, or auto: sdpa where this torch has it, else eager")
    return p.parse_args()


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load(model_dir, dtype, device, attn):
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(model_dir)
    if cfg.model_type == "llava":
        from transformers import LlavaForConditionalGeneration as Cls
    else:
        from transformers import AutoModelForCausalLM as Cls
    if attn == "auto":
        # transformers refuses sdpa on torch < 2.1.1 (Debian 12's python3-torch is 1.13).
        try:
            return load(model_dir, dtype, device, "sdpa")
        except (ImportError, ValueError):
            return load(model_dir, dtype, device, "eager")
    model = Cls.from_pretrained(model_dir, torch_dtype=dtype, attn_implementation=attn).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.ngate_attn = attn
    return model, cfg


def text_config(cfg):
    """The language model's config: LLaVA's text_config (get_text_config() exists only from 4.46), else cfg."""
    return getattr(cfg, "text_config", None) or cfg


def decoder_layers(model):
    # LlamaForCausalLM: model.model.layers; LlavaForConditionalGeneration: the
    # language model's layers (under model.language_model in transformers >= 4.52).
    for path in ("model.language_model.layers", "language_model.model.layers", "model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise RuntimeError("cannot find the decoder layers")


def pixel_values_for(model_dir, image, device, dtype, cache):
    if image is None:
        return None
    if image not in cache:
        from PIL import Image
        from transformers import CLIPImageProcessor
        proc = CLIPImageProcessor.from_pretrained(model_dir)
        cache[image] = proc(images=Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"].to(device, dtype)
    return cache[image]


def batch_inputs(seqs, device):
    """Right-padded ids, attention mask, answer targets (-100 elsewhere), subject mask."""
    T = max(len(s["ids"]) for s in seqs)
    B = len(seqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    attn = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), -100, dtype=torch.long)
    subject = torch.zeros(B, T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        n = len(s["ids"])
        ids[b, :n] = torch.tensor(s["ids"])
        attn[b, :n] = 1
        for t in range(s["answerStart"], n):
            targets[b, t - 1] = s["ids"][t]
        subject[b, s["subjectPositions"]] = True
    return ids.to(device), attn.to(device), targets.to(device), subject.to(device)


def answer_losses(logits, targets):
    """Mean cross-entropy of each row's answer tokens."""
    B, T, V = logits.shape
    ce = torch.nn.functional.cross_entropy(logits.float().reshape(B * T, V), targets.reshape(B * T),
                                           ignore_index=-100, reduction="none").view(B, T)
    counted = targets.ne(-100).float()
    return (ce * counted).sum(1) / counted.sum(1).clamp_min(1)


def forward(model, ids, attn, pixel_values):
    kwargs = {"input_ids": ids, "attention_mask": attn}
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values.expand(ids.shape[0], -1, -1, -1)
    return model(**kwargs).logits


def learn_masks(model, data, pairs, args, device, dtype, pixels):
    layer = decoder_layers(model)[data["layer"]]
    H = text_config(model.config).hidden_size
    state = {}

    def hook(_module, _inputs, output):
        # Eq. 2: the FFN output at subject positions times m, elsewhere unchanged
        # (in float32, then back to the model's dtype, as the library does).
        m = state["m"]
        scale = torch.where(state["subject"].unsqueeze(-1), m, torch.ones_like(m))
        return (output.float() * scale).to(output.dtype)

    handle = layer.mlp.register_forward_hook(hook)
    masks, losses = [], []
    try:
        for pair in pairs:
            m = torch.ones(H, device=device, dtype=torch.float32, requires_grad=True)
            opt = torch.optim.Adam([m], lr=data["lr"])
            seqs = [pair["sensitive"], pair["benign"]]
            for _ in range(data["steps"]):
                opt.zero_grad()
                total = 0
                for k, s in enumerate(seqs):
                    ids, attn, targets, subject = batch_inputs([s], device)
                    state["subject"], state["m"] = subject, m
                    loss = answer_losses(forward(model, ids, attn, pixels(s["image"])), targets)[0]
                    total = total + (1.0 if k == 0 else data["alpha"]) * loss
                total = total + data["l1"] * (m - 1).abs().sum()
                total.backward()
                opt.step()
                with torch.no_grad():
                    m.clamp_(-1, 1)
            masks.append(m.detach().float().cpu())
            losses.append(float(total))
    finally:
        handle.remove()
    return torch.stack(masks), losses


def gated_edit(model, data, pairs, keep, device, pixels):
    layer = decoder_layers(model)[data["layer"]]
    params = [layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=data["editLr"])
    state = {}
    k_vec = keep.to(device)

    def hook(_module, _inputs, y):
        # Eq. 7: the gradient from subject positions passes only through kept dimensions.
        k = torch.where(state["subject"].unsqueeze(-1), k_vec.to(y.dtype), torch.ones_like(k_vec, dtype=y.dtype))
        return k * y + (1 - k) * y.detach()

    handle = layer.mlp.register_forward_hook(hook)
    bs = data["editBatch"]
    epoch_losses = []
    try:
        for _ in range(data["epochs"]):
            total = 0.0
            for first in range(0, len(pairs), bs):
                chunk = pairs[first:first + bs]
                seqs = [p["sensitive"] for p in chunk] + [p["benign"] for p in chunk]
                ids, attn, targets, subject = batch_inputs(seqs, device)
                state["subject"] = subject
                image = seqs[0]["image"]
                per_row = answer_losses(forward(model, ids, attn, pixels(image)), targets)
                P = len(chunk)
                loss = (per_row[:P] + data["alpha"] * per_row[P:]).sum() / P
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss) * P
            epoch_losses.append(total / len(pairs))
    finally:
        handle.remove()
        for p in params:
            p.requires_grad_(False)
    return epoch_losses


def generate(model, data, pairs, device, pixels, eos_id, pad_id):
    seqs = []
    for p in pairs[: data["evalPairs"]]:
        for kind in ("sensitive", "benign"):
            s = p[kind]
            seqs.append({"ids": s["ids"][: s["answerStart"]], "image": s["image"]})
    generated = 0
    for first in range(0, len(seqs), 16):
        chunk = seqs[first:first + 16]
        T = max(len(s["ids"]) for s in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        attn = torch.zeros(len(chunk), T, dtype=torch.long)
        for b, s in enumerate(chunk):
            n = len(s["ids"])
            ids[b, T - n:] = torch.tensor(s["ids"])  # left padding
            attn[b, T - n:] = 1
        kwargs = {"input_ids": ids.to(device), "attention_mask": attn.to(device), "max_new_tokens": data["newTokens"],
                  "do_sample": False, "eos_token_id": eos_id, "pad_token_id": pad_id}
        pv = pixels(chunk[0]["image"])
        if pv is not None:
            kwargs["pixel_values"] = pv.expand(len(chunk), -1, -1, -1)
        with torch.no_grad():
            out = model.generate(**kwargs)[:, T:]
        for row in out.tolist():
            n = 0
            for tok in row:
                if tok == eos_id:
                    break
                n += 1
            generated += n
    return generated, len(seqs)


def main():
    args = parse_args()
    device = args.device
    dtype = getattr(torch, args.dtype)
    with open(args.data) as f:
        data = json.load(f)
    all_pairs = data["pairs"]
    pairs = all_pairs[: args.pairs or None]
    tasks = set(args.tasks.split(","))
    t0 = time.time()
    model, cfg = load(args.model, dtype, device, args.attn)
    sync(device)
    out = {"side": "transformers", "model": args.model, "device": device, "dtype": args.dtype, "load_s": time.time() - t0,
           "torch": torch.__version__, "attn": model.ngate_attn}
    import transformers
    out["transformers"] = transformers.__version__
    cache = {}
    pixels = lambda image: pixel_values_for(args.model, image, device, dtype, cache)  # noqa: E731
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    if "mask" in tasks:
        sync(device)
        t = time.time()
        masks, _ = learn_masks(model, data, pairs, args, device, dtype, pixels)
        sync(device)
        sec = time.time() - t
        out["learnMask"] = {"pairs": len(pairs), "steps": data["steps"], "seconds": sec, "masksPerSecond": len(pairs) / sec}
        out["masks"] = masks.flatten().tolist()
        print(json.dumps({"kind": "learnMask", **out["learnMask"]}), flush=True)
    if "edit" in tasks:
        if "mask" in tasks:
            share = (masks < 0).float().mean(0)
        else:
            share = torch.zeros(text_config(model.config).hidden_size)
        keep = share > 0.3
        sync(device)
        t = time.time()
        losses = gated_edit(model, data, all_pairs, keep, device, pixels)
        sync(device)
        sec = time.time() - t
        out["gatedEdit"] = {"pairs": len(all_pairs), "epochs": data["epochs"], "seconds": sec, "secondsPerEpoch": sec / data["epochs"],
                            "epochLosses": losses}
        print(json.dumps({"kind": "gatedEdit", **out["gatedEdit"]}), flush=True)
    if "eval" in tasks:
        text_cfg = text_config(cfg)
        eos = text_cfg.eos_token_id if text_cfg.eos_token_id is not None else 2
        eos = eos[0] if isinstance(eos, list) else eos
        pad = cfg.pad_token_id if getattr(cfg, "pad_token_id", None) is not None else 0
        sync(device)
        t = time.time()
        n, queries = generate(model, data, all_pairs, device, pixels, eos, pad)
        sync(device)
        sec = time.time() - t
        out["evaluate"] = {"queries": queries, "seconds": sec, "generatedTokens": n, "tokensPerSecond": n / sec}
        print(json.dumps({"kind": "evaluate", **out["evaluate"]}), flush=True)
    if device.startswith("cuda"):
        out["peakAllocatedBytes"] = torch.cuda.max_memory_allocated()
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps({"kind": "done", "out": args.out, "peakAllocatedBytes": out.get("peakAllocatedBytes")}), flush=True)


if __name__ == "__main__":
    main()
