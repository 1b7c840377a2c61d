# Reference side of `tprun bench generate`: the same model in PyTorch on the CPU, same prompt ids, prefill
# time and greedy decode ms/token with a KV cache, median over reps. transformers' own eager LlamaForCausalLM
# where it is installed; otherwise a plain PyTorch LLaMA (Debian ships python3-torch but not transformers)
# written straight from the HF weights, llama2.c style, and checked against the engine's greedy tokens.
# Usage: python3 generate-reference.py MODEL_DIR '[ids...]' NEW_TOKENS REPS THREADS  → one JSON line.
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch

model_dir, ids, new_tokens, reps, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)


def load_safetensors(d):
    """HF safetensors (single or sharded) as float32 torch tensors; bf16 widened exactly."""
    files = sorted(f for f in os.listdir(d) if f.endswith('.safetensors'))
    out = {}
    for f in files:
        raw = open(os.path.join(d, f), 'rb').read()
        n = struct.unpack('<Q', raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, m in header.items():
            if name == '__metadata__':
                continue
            a, b = m['data_offsets']
            buf = raw[base + a:base + b]
            if m['dtype'] == 'BF16':
                x = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif m['dtype'] == 'F16':
                x = np.frombuffer(buf, np.float16).astype(np.float32)
            else:
                x = np.frombuffer(buf, np.float32)
            out[name] = torch.from_numpy(x.copy()).reshape(m['shape'])
    return out


class PlainLlama:
    """LLaMA forward with a KV cache, rotate-half rotary (HF order), GQA, RMSNorm, SwiGLU."""

    def __init__(self, d):
        c = json.load(open(os.path.join(d, 'config.json')))
        self.w = load_safetensors(d)
        self.L, self.h = c['num_hidden_layers'], c['hidden_size']
        self.nh, self.nkv = c['num_attention_heads'], c['num_key_value_heads']
        self.hd = c.get('head_dim') or self.h // self.nh
        self.eps = c['rms_norm_eps']
        theta = (c.get('rope_parameters') or {}).get('rope_theta', c.get('rope_theta', 10000.0))
        inv = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        pos = torch.arange(c.get('max_position_embeddings', 2048), dtype=torch.float32)
        f = torch.outer(pos, inv)
        self.cos, self.sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)
        self.lm_head = self.w['lm_head.weight'] if 'lm_head.weight' in self.w else self.w['model.embed_tokens.weight']

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, p0):
        s = x.shape[-2]
        cos, sin = self.cos[p0:p0 + s], self.sin[p0:p0 + s]
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, tokens, cache):
        p0 = cache[0][0].shape[-2] if cache else 0
        x = self.w['model.embed_tokens.weight'][tokens]
        s = tokens.shape[-1]
        new = []
        for l in range(self.L):
            p = f'model.layers.{l}.'
            hn = self.norm(x, self.w[p + 'input_layernorm.weight'])
            q = (hn @ self.w[p + 'self_attn.q_proj.weight'].T).view(s, self.nh, self.hd).transpose(0, 1)
            k = (hn @ self.w[p + 'self_attn.k_proj.weight'].T).view(s, self.nkv, self.hd).transpose(0, 1)
            v = (hn @ self.w[p + 'self_attn.v_proj.weight'].T).view(s, self.nkv, self.hd).transpose(0, 1)
            q, k = self.rope(q, p0), self.rope(k, p0)
            if cache:
                k, v = torch.cat([cache[l][0], k], -2), torch.cat([cache[l][1], v], -2)
            new.append((k, v))
            rep = self.nh // self.nkv
            kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
            att = (q @ kk.transpose(-1, -2)) / math.sqrt(self.hd)
            t = kk.shape[-2]
            mask = torch.full((s, t), float('-inf')).triu(t - s + 1)
            o = (att + mask).softmax(-1) @ vv
            x = x + o.transpose(0, 1).reshape(s, self.nh * self.hd) @ self.w[p + 'self_attn.o_proj.weight'].T
            hn = self.norm(x, self.w[p + 'post_attention_layernorm.weight'])
            g = torch.nn.functional.silu(hn @ self.w[p + 'mlp.gate_proj.weight'].T) * (hn @ self.w[p + 'mlp.up_proj.weight'].T)
            x = x + g @ self.w[p + 'mlp.down_proj.weight'].T
        x = self.norm(x[-1:], self.w['model.norm.weight'])
        return x @ self.lm_head.T, new


try:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tool = f'transformers eager float32, torch {torch.__version__}, {threads} threads'

    def step(tokens, past):
        out = hf(tokens[None], past_key_values=past, use_cache=True)
        return out.logits[0, -1:], out.past_key_values
except ImportError:
    plain = PlainLlama(model_dir)
    tool = f'plain PyTorch LLaMA (no transformers here), float32, torch {torch.__version__}, {threads} threads'

    def step(tokens, past):
        return plain.forward(tokens, past)

x = torch.tensor(ids)


@torch.no_grad()
def run():
    t0 = time.perf_counter()
    logits, past = step(x, None)
    prefill = time.perf_counter() - t0
    tok = logits[-1:].argmax(-1)
    got = [int(tok)]
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        logits, past = step(tok, past)
        tok = logits[-1:].argmax(-1)
        got.append(int(tok))
    return prefill, (time.perf_counter() - t1) / max(1, new_tokens - 1), got


run()  # warm-up
results = [run() for _ in range(reps)]
prefill = statistics.median(r[0] for r in results)
decode = statistics.median(r[1] for r in results)
print(json.dumps({
    "bench": "generate-reference",
    "tool": tool,
    "prompt_tokens": len(ids),
    "prefill_ms": round(prefill * 1000, 3),
    "prefill_tokens_per_s": round(len(ids) / prefill, 3),
    "decode_ms_per_token": round(decode * 1000, 3),
    "greedy_ids": results[0][2],
}))
