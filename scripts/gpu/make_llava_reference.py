#!/usr/bin/env python3
"""Writes a random-init LLaVA checkpoint with transformers and reference outputs for it.

    python3 scripts/gpu/make_llava_reference.py --out DIR [--dtype float32|bfloat16] [--device cuda]
        [--seed 0] [--layers 2] [--hidden 64] [--heads 4] [--intermediate 128] [--vocab 384]
        [--vision-layers 3] [--vision-hidden 64] [--vision-heads 4] [--image-size 56] [--patch 14]
        [--feature-layer -2] [--strategy default|full] [--max-new-tokens 8]

DIR receives what `LlavaForConditionalGeneration.save_pretrained` writes (so
with transformers 5.x the key layout it writes today), the
preprocessor_config.json of a CLIPImageProcessor, a tokenizer with "<image>"
and "<pad>" added past a byte-level vocabulary, two test images and
reference.json:

    {
      "format": 1, "kind": "llava", "dtype": ..., "device": ..., "torch": ..., "transformers": ...,
      "config": {...config.json as saved...}, "image_token_id": N, "image_tokens": P,
      "impls": ["eager", "sdpa"], "max_new_tokens": 8,
      "cases": [
        {"name": "exact_size", "image": "image_exact.png", "prompt": [ids, one image token],
         "pixel_values": "pixels_exact_size.f32",            # CLIPImageProcessor's, float32 [3, S, S]
         "logits": {"eager": ENTRY, "sdpa": ENTRY},          # [T, V] with the image run expanded
         "generated": {"eager": [ids], "sdpa": [ids]}},
        {"name": "resized", "image": "image_resized.png", ...},   # needs a resize: PIL bicubic vs ours
        {"name": "text_only", "image": null, ...}
      ],
      "eager_vs_sdpa": max |logit difference| between transformers' own attentions
    }
    ENTRY = {"shape": [T, V], "file": "logits_<case>_<impl>.f32"}   # float32 little-endian, row-major

EOS is disabled (eos_token_id null everywhere) so both sides generate exactly
max_new_tokens tokens. Weights: every matrix N(0, --std), norm weights
1 + N(0, 0.1), biases N(0, 0.02), with a seeded generator, then cast.
"""
import argparse
import inspect
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import (MIN_TOKENIZER_IDS, disable_eos_in_files, from_pretrained, save_kwargs,  # noqa: E402
                            write_min_tokenizer)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=128)
    p.add_argument("--vocab", type=int, default=384,
                   help="tokenizer vocabulary (at least 354, the byte-level base); <image> and <pad> follow it")
    p.add_argument("--vision-layers", type=int, default=3)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-heads", type=int, default=4)
    p.add_argument("--vision-intermediate", type=int, default=128)
    p.add_argument("--image-size", type=int, default=56)
    p.add_argument("--patch", type=int, default=14)
    p.add_argument("--feature-layer", type=int, default=-2)
    p.add_argument("--strategy", choices=["default", "full"], default="default")
    p.add_argument("--std", type=float, default=0.05)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--impls", default="eager,sdpa")
    args = p.parse_args(argv)
    if args.vocab < MIN_TOKENIZER_IDS:
        p.error("--vocab %d: the byte-level tokenizer alone needs %d ids" % (args.vocab, MIN_TOKENIZER_IDS))
    return args


def add_image_tokens(out_dir, image_id, pad_id):
    """"<image>" and "<pad>" as added special tokens, as llava-hf's tokenizer has them."""
    with open(os.path.join(out_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    with open(os.path.join(out_dir, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    for i, s in ((image_id, "<image>"), (pad_id, "<pad>")):
        tok["added_tokens"].append({"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                                    "normalized": False, "special": True})
        cfg["added_tokens_decoder"][str(i)] = {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                               "single_word": False, "special": True}
    cfg["pad_token"] = "<pad>"
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def test_images(size, seed):
    """A smooth-plus-noise RGB image at the tower's size (no resampling) and a larger one that needs a resize."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)

    def make(h, w):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([127 + 100 * np.sin(x / 5.0), 127 + 100 * np.cos(y / 7.0), (x * 3 + y * 5) % 256], -1)
        return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype("uint8"), "RGB")

    return make(size, size), make(size * 3 // 2, size * 2)


def write_logits(out_dir, name, logits):
    logits.numpy().astype("<f4").tofile(os.path.join(out_dir, name))
    return {"shape": list(logits.shape), "file": name}


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    transformers.logging.set_verbosity_error()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    image_id, pad_id = args.vocab, args.vocab + 1
    V = args.vocab + 8  # padded past the tokenizer, as LLaVA-1.5's 32064 is
    t0 = time.time()
    text = LlamaConfig(vocab_size=V, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                       rms_norm_eps=1e-5, max_position_embeddings=2048, bos_token_id=1, eos_token_id=None,
                       pad_token_id=None)
    vision = CLIPVisionConfig(hidden_size=args.vision_hidden, intermediate_size=args.vision_intermediate,
                              num_hidden_layers=args.vision_layers, num_attention_heads=args.vision_heads,
                              image_size=args.image_size, patch_size=args.patch, projection_dim=32)
    patches = (args.image_size // args.patch) ** 2 + (1 if args.strategy == "full" else 0)
    extra = {}
    if "image_seq_length" in inspect.signature(LlavaConfig.__init__).parameters:
        # transformers 4.44-4.46 take a prompt with fewer image tokens than this
        # for the legacy one-token layout; ours arrive expanded to the patch count.
        extra["image_seq_length"] = patches
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                         vision_feature_layer=args.feature_layer, vision_feature_select_strategy=args.strategy,
                         projector_hidden_act="gelu", pad_token_id=pad_id, **extra)
    torch.manual_seed(args.seed)
    model = LlavaForConditionalGeneration(config)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(args.std * torch.randn(p.shape, generator=gen))
    model = model.to(torch_dtype)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, **save_kwargs(model))
    del model
    disable_eos_in_files(args.out)
    write_min_tokenizer(args.out, args.vocab)
    add_image_tokens(args.out, image_id, pad_id)
    S = args.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": S}, crop_size={"height": S, "width": S})
    processor.save_pretrained(args.out)
    exact, resized = test_images(S, args.seed)
    exact.save(os.path.join(args.out, "image_exact.png"))
    resized.save(os.path.join(args.out, "image_resized.png"))
    with open(os.path.join(args.out, "config.json")) as f:
        saved_config = json.load(f)

    rng = random.Random(args.seed + 1)
    words = lambda n: [rng.randrange(3, args.vocab) for _ in range(n)]  # noqa: E731
    cases = [
        {"name": "exact_size", "image": "image_exact.png", "prompt": [1] + words(3) + [image_id] + words(9)},
        {"name": "resized", "image": "image_resized.png", "prompt": [1] + words(2) + [image_id] + words(6)},
        {"name": "text_only", "image": None, "prompt": [1] + words(12)},
    ]
    impls = [x for x in args.impls.split(",") if x]
    pixels = {}
    for c in cases:
        if c["image"]:
            from PIL import Image
            pv = processor(images=Image.open(os.path.join(args.out, c["image"])).convert("RGB"), return_tensors="pt")["pixel_values"]
            pixels[c["name"]] = pv
            c["pixel_values"] = "pixels_%s.f32" % c["name"]
            pv[0].float().numpy().astype("<f4").tofile(os.path.join(args.out, c["pixel_values"]))
        c["logits"], c["generated"] = {}, {}
    raw = {}
    for impl in impls:
        m = from_pretrained(LlavaForConditionalGeneration, args.out, torch_dtype, impl).to(device).eval()
        for c in cases:
            ids = c["prompt"]
            if c["image"]:
                at = ids.index(image_id)
                ids = ids[:at] + [image_id] * patches + ids[at + 1:]
            x = torch.tensor([ids], device=device)
            kw = {"pixel_values": pixels[c["name"]].to(device, torch_dtype)} if c["image"] else {}
            with torch.no_grad():
                logits = m(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, **kw).logits[0].float().cpu()
                out = m.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, eos_token_id=None, pad_token_id=pad_id, **kw)
            c["logits"][impl] = write_logits(args.out, "logits_%s_%s.f32" % (c["name"], impl), logits)
            c["generated"][impl] = out[0, len(ids):].tolist()
            raw[(impl, c["name"])] = logits
        del m
    ref = {
        "format": 1, "kind": "llava", "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "torch": torch.__version__, "transformers": transformers.__version__, "seed": args.seed,
        "config": saved_config, "image_token_id": image_id, "image_tokens": patches, "impls": impls,
        "max_new_tokens": args.max_new_tokens, "cases": cases,
    }
    if "eager" in impls and "sdpa" in impls:
        ref["eager_vs_sdpa"] = max(float((raw[("eager", c["name"])] - raw[("sdpa", c["name"])]).abs().max()) for c in cases)
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(json.dumps({"wrote": args.out, "seconds": round(time.time() - t0, 2), "image_tokens": patches,
                      "eager_vs_sdpa": ref.get("eager_vs_sdpa"), "files": sorted(os.listdir(args.out))}), flush=True)


if __name__ == "__main__":
    main()
