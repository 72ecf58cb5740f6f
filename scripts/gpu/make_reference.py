#!/usr/bin/env python3
"""Writes a random-init LLaMA checkpoint with transformers and reference outputs for it.

    python3 scripts/gpu/make_reference.py --out DIR --dtype float32|bfloat16 \
        --layers N --hidden H --heads nH --kv-heads nKV --intermediate I --vocab V [--tie] \
        [--tokenizer-from DIR2] [--seed 0] [--prompt-lens 5,19,48] [--max-new-tokens 16] \
        [--impls eager,sdpa] [--device cuda] [--no-reference]

DIR receives what `save_pretrained` writes (config.json, model.safetensors,
generation_config.json), tokenizer.json + tokenizer_config.json (copied from
--tokenizer-from, or a minimal byte-level one with the model's vocabulary size
written here), and reference.json:

    {
      "format": 1, "dtype": ..., "device": ..., "torch": ..., "transformers": ...,
      "config": {...config.json as saved...},
      "prompts": [[ids...], ...],                 # 3 prompts by default, ids in [3, V)
      "max_new_tokens": 16,
      "impls": ["eager", "sdpa"],
      "logits": {"eager": [ENTRY, ...], "sdpa": [...]},   # one ENTRY per prompt, each run alone
      "generated": {"eager": [[16 ids], ...], ...},       # greedy generate, new tokens only
      "gen_margins": {"eager": [[top1 - top2 logit at each step], ...], ...},
      "eager_vs_sdpa": {"max_abs": ..., "per_prompt": [...]}   # transformers' own noise floor
    }
    ENTRY = {"shape": [T, V], "data": [T*V floats]}          # small
          | {"shape": [T, V], "file": "logits_sdpa_0.f32"}  # float32 little-endian, row-major

EOS is disabled: config.json and generation_config.json have eos_token_id null
and the tokenizer written here has no eos_token, so both transformers and
@ngate/core generate exactly max_new_tokens tokens.

Weights: every matrix is re-initialised N(0, --std) (default 0.02), every norm
weight 1 + N(0, --norm-std) (default 0.1) so that the norms are not all ones,
with a seeded generator, in float32, then cast to --dtype and saved.

--no-reference only writes the checkpoint (used for the 1B benchmark model).
"""
import argparse
import inspect
import json
import os
import random
import shutil
import sys
import time

SPACE = "\u2581"
# Ids write_min_tokenizer needs before any <extra_N>: 3 specials, 256 bytes, SPACE, printable ASCII.
MIN_TOKENIZER_IDS = 3 + 256 + 1 + (0x7F - 0x21)


def write_min_tokenizer(out_dir, vocab_size):
    """Same layout as benchmarks/lib/checkpoint.js writeTokenizer (eos_token null)."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {}

    def add(t):
        if t not in vocab:
            vocab[t] = len(vocab)

    for s in specials:
        add(s)
    for b in range(256):
        add("<0x%02X>" % b)
    add(SPACE)
    for c in range(0x21, 0x7F):
        add(chr(c))
    assert len(vocab) == MIN_TOKENIZER_IDS
    if vocab_size < MIN_TOKENIZER_IDS:
        # Token ids past the model's vocabulary would index outside its embedding.
        raise SystemExit("--vocab %d: the byte-level tokenizer alone needs %d ids" % (vocab_size, MIN_TOKENIZER_IDS))
    for i in range(len(vocab), vocab_size):
        add("<extra_%d>" % i)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(specials)
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, s in enumerate(specials)},
        "bos_token": "<s>",
        "eos_token": None,
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 4096,
        "tokenizer_class": "LlamaTokenizer",
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--intermediate", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--tie", action="store_true", help="tie_word_embeddings=True (no lm_head.weight saved)")
    p.add_argument("--tokenizer-from", default=None, help="copy tokenizer.json/tokenizer_config.json from this dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--std", type=float, default=0.02)
    p.add_argument("--norm-std", type=float, default=0.1)
    p.add_argument("--max-position", type=int, default=2048)
    p.add_argument("--prompt-lens", default="5,19,48")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--impls", default="eager,sdpa", help="attention implementations to record, comma-separated")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--inline-limit", type=int, default=50000,
                   help="logits of a prompt with at most this many values go inline in reference.json, else to a .f32 file")
    p.add_argument("--no-reference", action="store_true", help="only write the checkpoint")
    return p.parse_args(argv)


def save_kwargs(model):
    params = inspect.signature(model.save_pretrained).parameters
    return {"safe_serialization": True} if "safe_serialization" in params else {}


def from_pretrained(cls, path, torch_dtype, impl):
    try:
        return cls.from_pretrained(path, dtype=torch_dtype, attn_implementation=impl)
    except TypeError:  # transformers < 4.56 knows only torch_dtype
        return cls.from_pretrained(path, torch_dtype=torch_dtype, attn_implementation=impl)


def disable_eos_in_files(out_dir):
    """eos_token_id -> null in config.json and generation_config.json (whatever the version wrote)."""
    for name in ("config.json", "generation_config.json"):
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            cfg = json.load(f)
        if cfg.get("eos_token_id") is not None:
            cfg["eos_token_id"] = None
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)
                f.write("\n")


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    kv = args.kv_heads or args.heads
    if args.hidden % args.heads or args.heads % kv:
        sys.exit("hidden must be a multiple of heads, heads a multiple of kv-heads")
    t_start = time.time()

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=kv,
        max_position_embeddings=args.max_position,
        rms_norm_eps=1e-5,
        tie_word_embeddings=args.tie,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=None,
    )

    torch.manual_seed(args.seed)
    # Build on the target device: a 1B-7B model initialises in seconds there, minutes on the CPU.
    with torch.device(device):
        model = LlamaForCausalLM(config)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    with torch.no_grad():
        # named_parameters() lists a tied embedding once.
        for name, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights
                p.copy_(1.0 + args.norm_std * torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32))
            else:
                p.copy_(args.std * torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32))
    model = model.to(torch_dtype).to("cpu")
    if args.tie:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "embeddings are not tied"
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, **save_kwargs(model))
    disable_eos_in_files(args.out)
    del model
    if args.tokenizer_from:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(args.tokenizer_from, name), os.path.join(args.out, name))
    else:
        write_min_tokenizer(args.out, args.vocab)
    t_saved = time.time()
    print(json.dumps({"wrote": args.out, "dtype": args.dtype, "seconds": round(t_saved - t_start, 2),
                      "files": sorted(os.listdir(args.out))}), flush=True)
    if args.no_reference:
        return

    rng = random.Random(args.seed + 1)
    lens = [int(x) for x in args.prompt_lens.split(",")]
    prompts = [[rng.randrange(3, args.vocab) for _ in range(n)] for n in lens]
    impls = [x for x in args.impls.split(",") if x]
    with open(os.path.join(args.out, "config.json")) as f:
        saved_config = json.load(f)

    ref = {
        "format": 1,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "seed": args.seed,
        "config": saved_config,
        "prompts": prompts,
        "max_new_tokens": args.max_new_tokens,
        "impls": impls,
        "logits": {},
        "generated": {},
        "gen_margins": {},
    }
    raw = {}
    for impl in impls:
        m = from_pretrained(LlamaForCausalLM, args.out, torch_dtype, impl).to(device).eval()
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
        entries, gens, margins, kept = [], [], [], []
        with torch.no_grad():
            for i, ids in enumerate(prompts):
                x = torch.tensor([ids], dtype=torch.long, device=device)
                logits = m(input_ids=x, use_cache=False).logits[0].float().cpu().contiguous()
                kept.append(logits)
                T, V = logits.shape
                entry = {"shape": [T, V]}
                if T * V <= args.inline_limit:
                    entry["data"] = logits.reshape(-1).tolist()
                else:
                    fname = "logits_%s_%d.f32" % (impl, i)
                    logits.numpy().astype("<f4").tofile(os.path.join(args.out, fname))
                    entry["file"] = fname
                entries.append(entry)
                out = m.generate(
                    input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                    do_sample=False, eos_token_id=None, pad_token_id=0,
                    return_dict_in_generate=True, output_logits=True)
                new = out.sequences[0, len(ids):].tolist()
                gens.append(new)
                step_margins = []
                for step_logits in out.logits:
                    top = step_logits[0].float().topk(2).values
                    step_margins.append(round(float(top[0] - top[1]), 6))
                margins.append(step_margins)
        ref["logits"][impl] = entries
        ref["generated"][impl] = gens
        ref["gen_margins"][impl] = margins
        raw[impl] = kept
        del m
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if "eager" in raw and "sdpa" in raw:
        per = [float((a - b).abs().max()) for a, b in zip(raw["eager"], raw["sdpa"])]
        ref["eager_vs_sdpa"] = {"max_abs": max(per), "per_prompt": per,
                                "generated_equal": ref["generated"]["eager"] == ref["generated"]["sdpa"]}
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(json.dumps({"reference": os.path.join(args.out, "reference.json"), "prompt_lens": lens, "impls": impls,
                      "eager_vs_sdpa": ref.get("eager_vs_sdpa"), "seconds": round(time.time() - t_saved, 2)}),
          flush=True)


if __name__ == "__main__":
    main()
