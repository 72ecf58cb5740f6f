"""Logits of a tiny MiniGPT-4 computed by the MiniGPT-4 repository's own code.

Run by test/minigpt4-original.test.ts with Debian's /usr/bin/python3 (torch
1.13) when MINIGPT4_REPO names a checkout of github.com/Vision-CAIR/MiniGPT-4;
nothing of that repository is part of this one. What runs is the checkout's:
eva_vit.py (create_eva_vit_g: VisionTransformer, torch.load,
interpolate_pos_embed, load_state_dict), base_model.py (init_vision_encoder,
the fp32 LayerNorm ln_vision), minigpt4.py (from_config, encode_img with
has_qformer False, llama_proj loaded from ckpt['model']), minigpt_base.py
(get_context_emb, prompt_wrap, preparing_embedding, forward), modeling_llama.py
(the LlamaForCausalLM forward and its loss) and conversation.py (Chat,
CONV_VISION_LLama2).

Stand-ins, and why:
- imports the path never uses: omegaconf, peft, the Q-Former module,
  minigpt4.common.utils, timm's registry and init helpers, transformers'
  StoppingCriteria/streamer classes and docstring decorators;
- timm's to_2tuple (used by PatchEmbed): the same two lines of behaviour;
- create_eva_vit_g hard-codes ViT-g's sizes and downloads the file: its own
  body runs, with VisionTransformer given the tiny sizes and
  download_cached_file answering the fixture's eva_vit_g.pth;
- transformers' LlamaTokenizer: a table of the token ids our library gives
  for each piece of text the original asks to tokenize (an unknown piece is
  an error), so that the prompt's assembly is the original's and the
  tokenizer is the same on both sides;
- transformers' LlamaForCausalLM base class (transformers cannot be
  installed here: Debian 12 has no package and torch is 1.13): a plain
  PyTorch LLaMA with transformers' eager semantics (RMSNorm in float32,
  rotate-half RoPE, causal softmax attention, SiLU MLP), weights read from the
  fixture's safetensors. The library's decoder is checked against real
  transformers separately (benchmarks/RESULTS.md).

argv: repo fixture_dir spec.json out.json
"""
import json
import math
import os
import struct
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

repo, fixture, spec_file, out_file = sys.argv[1:5]
spec = json.load(open(spec_file))
torch.manual_seed(0)


def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


class Unused:
    def __init__(self, *a, **k):
        raise RuntimeError(f"{type(self).__name__} is not on the compared path")


# Package shells over the checkout: its __init__ files import datasets, tasks and more.
for pkg in ["minigpt4", "minigpt4.models", "minigpt4.common", "minigpt4.conversation"]:
    module(pkg, __path__=[os.path.join(repo, *pkg.split("."))])

module("omegaconf", OmegaConf=Unused)
module("peft", LoraConfig=Unused, get_peft_model=Unused, prepare_model_for_int8_training=Unused)
module("minigpt4.models.Qformer", BertConfig=Unused, BertLMHeadModel=Unused)
module("minigpt4.common.utils", get_abs_path=Unused, is_url=lambda s: False)
module("timm")
module("timm.models")
module("timm.models.layers", drop_path=Unused, trunc_normal_=lambda t, **k: t,
       to_2tuple=lambda x: tuple(x) if isinstance(x, (list, tuple)) else (x, x))
module("timm.models.registry", register_model=lambda f: f)
module("minigpt4.common.dist_utils", download_cached_file=lambda url, **k: os.path.join(fixture, "eva_vit_g.pth"))

# --- transformers stand-ins -------------------------------------------------
table = {tuple(json.loads(k)): v for k, v in spec["tokens"].items()}


class TokenBatch(dict):
    __getattr__ = dict.__getitem__

    def to(self, device):
        return TokenBatch({k: v.to(device) for k, v in self.items()})


class TableTokenizer:
    bos_token = "<s>"

    def __init__(self):
        self.bos_token_id = spec["bos"]
        self.pad_token_id = spec["pad"]
        self.padding_side = "right"

    @classmethod
    def from_pretrained(cls, path, use_fast=False):
        return cls()

    @property
    def pad_token(self):
        return "$$"

    @pad_token.setter
    def pad_token(self, v):
        assert v == "$$"

    def __call__(self, text, return_tensors=None, add_special_tokens=True, padding=None, truncation=False, max_length=None):
        texts = [text] if isinstance(text, str) else list(text)
        rows = []
        for t in texts:
            key = (t, bool(add_special_tokens))
            if key not in table:
                raise KeyError(f"the original asked to tokenize {key!r}, which the test did not foresee")
            ids = table[key]
            rows.append(ids[:max_length] if truncation and max_length else ids)
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask)


class Output:
    def __init__(self, **k):
        self.__dict__.update(k)

    def __getitem__(self, i):
        return self.last_hidden_state if i == 0 else None


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", "the reference reads float32 fixtures"
        b, end = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:end], dtype="<f4").copy()).reshape(e["shape"])
    return out


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-b, a), dim=-1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, I = c.hidden_size, c.intermediate_size
        self.nh, self.hd = c.num_attention_heads, H // c.num_attention_heads
        self.theta = c.rope_theta
        self.input_layernorm = RMSNorm(H, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(H, c.rms_norm_eps)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(H, H, bias=False) for _ in range(4))
        self.gate_proj, self.up_proj = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x, bias, pos):
        B, T, H = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(B, T, self.nh, self.hd).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        inv = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2).float() / self.hd))
        freqs = pos[:, None].float() * inv[None, :]
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.hd) + bias, dim=-1, dtype=torch.float32).to(q.dtype)
        x = x + self.o_proj((a @ v).transpose(1, 2).reshape(B, T, H))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        keep = torch.ones(B, T, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        bias = torch.zeros(B, 1, T, T).masked_fill(~(causal[None, None] & keep[:, None, None, :]), torch.finfo(torch.float32).min)
        pos = torch.arange(T)
        for layer in self.layers:
            x = layer(x, bias, pos)
        return Output(last_hidden_state=self.norm(x), past_key_values=None, hidden_states=None, attentions=None)


class LlamaForCausalLMBase(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.vocab_size = c.vocab_size
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    @property
    def base_model(self):
        return self.model

    @classmethod
    def from_pretrained(cls, path, torch_dtype=None, **_):
        raw = json.load(open(os.path.join(path, "config.json")))
        c = types.SimpleNamespace(rope_theta=10000.0, output_attentions=False, output_hidden_states=False,
                                  use_return_dict=True, pretraining_tp=1)
        c.__dict__.update(raw)
        m = cls(c)
        weights = read_safetensors(os.path.join(path, "model.safetensors"))
        own = {}
        for name, t in weights.items():
            key = name.replace(".self_attn.", ".").replace(".mlp.", ".")
            own[key] = t
        missing, unexpected = m.load_state_dict(own, strict=False)
        assert not unexpected and not missing, (missing, unexpected)
        return m  # float32 on the CPU: torch_dtype float16 has no CPU matmul in torch 1.13


passthrough = lambda *a, **k: (lambda f: f)
module("transformers", LlamaTokenizer=TableTokenizer, StoppingCriteria=object, StoppingCriteriaList=list,
       TextIteratorStreamer=Unused, AutoTokenizer=Unused, AutoModelForCausalLM=Unused)
module("transformers.utils", add_start_docstrings_to_model_forward=passthrough, replace_return_docstrings=passthrough)
module("transformers.modeling_outputs", CausalLMOutputWithPast=Output)
module("transformers.models")
module("transformers.models.llama")
module("transformers.models.llama.modeling_llama", LlamaForCausalLM=LlamaForCausalLMBase,
       LLAMA_INPUTS_DOCSTRING="", _CONFIG_FOR_DOC="LlamaConfig")

# --- the original code --------------------------------------------------------
import minigpt4.models.eva_vit as eva_vit  # noqa: E402

RealViT = eva_vit.VisionTransformer
tiny = spec["vit"]


def tiny_vit(**kw):
    kw.update(embed_dim=tiny["embed_dim"], depth=tiny["depth"], num_heads=tiny["num_heads"], mlp_ratio=tiny["mlp_ratio"])
    return RealViT(**kw)


eva_vit.VisionTransformer = tiny_vit

import minigpt4.models.base_model as base_model  # noqa: E402

# The registry's decorator checks the class against minigpt4.models.BaseModel (normally set by that package's __init__).
sys.modules["minigpt4.models"].BaseModel = base_model.BaseModel
from minigpt4.models.minigpt4 import MiniGPT4  # noqa: E402
from minigpt4.conversation.conversation import Chat, CONV_VISION_LLama2  # noqa: E402

cfg = {
    "arch": "minigpt4", "model_type": "pretrain_llama2", "image_size": spec["image_size"], "drop_path_rate": 0,
    "use_grad_checkpoint": False, "vit_precision": "fp32", "freeze_vit": True, "has_qformer": False,
    "llama_model": os.path.join(fixture, spec["llama_dir"]), "ckpt": os.path.join(fixture, "pretrained_minigpt4_llama2_7b.pth"),
    "max_txt_len": 160, "end_sym": "</s>", "low_resource": False, "prompt_template": "[INST] {} [/INST] ",
}
model = MiniGPT4.from_config(cfg).eval()
S = spec["image_size"]
pixels = torch.tensor(spec["pixels"], dtype=torch.float32).view(1, 3, S, S)
out = {}
with torch.no_grad():
    # 1. Chat with an image: upload_img, encode_img, ask, answer_prepare (get_prompt, get_context_emb).
    chat = Chat(model, vis_processor=None, device="cpu")
    conv = CONV_VISION_LLama2.copy()
    img_list = []
    chat.upload_img(pixels, conv, img_list)
    chat.encode_img(img_list)
    chat.ask(spec["question"], conv)
    kw = chat.answer_prepare(conv, img_list)
    out["chat_prompt"] = conv.get_prompt()
    out["chat"] = model.llama_model(inputs_embeds=kw["inputs_embeds"]).logits[0].tolist()

    # 2. The training sequence: MiniGPTBase.forward with the instruction and answer; logits taken at the LLM.
    seen = {}
    hook = model.llama_model.register_forward_hook(lambda mod, args, res: seen.__setitem__("logits", res.logits))
    loss = model.forward({"image": pixels, "instruction_input": [spec["instruction"]], "answer": [spec["answer"]]})["loss"]
    hook.remove()
    out["train"] = seen["logits"][0].tolist()
    out["train_loss"] = float(loss)

    # 3. Text only: the chat prompt without an image (get_context_emb needs an image, so the prompt is
    #    tokenized whole, BOS added, as its first segment would be).
    conv = CONV_VISION_LLama2.copy()
    chat.ask(spec["question"], conv)
    conv.append_message(conv.roles[1], None)
    out["text_prompt"] = conv.get_prompt()
    ids = model.llama_tokenizer(out["text_prompt"], return_tensors="pt", add_special_tokens=True).input_ids
    out["text"] = model.llama_model(inputs_embeds=model.embed_tokens(ids)).logits[0].tolist()
json.dump(out, open(out_file, "w"))
