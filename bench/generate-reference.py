# Reference side of `tprun bench generate`: transformers' own float32 LLaMA on the CPU, same prompt ids,
# prefill time and greedy decode ms/token with its KV cache (DynamicCache), best-of/median over reps.
# Usage: python3 generate-reference.py MODEL_DIR '[ids...]' NEW_TOKENS REPS THREADS  → one JSON line.
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

model_dir, ids, new_tokens, reps, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
x = torch.tensor([ids])


@torch.no_grad()
def run():
    t0 = time.perf_counter()
    out = model(x, use_cache=True)
    prefill = time.perf_counter() - t0
    past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(tok, past_key_values=past, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return prefill, (time.perf_counter() - t1) / max(1, new_tokens - 1)


run()  # warm-up
results = [run() for _ in range(reps)]
prefill = statistics.median(r[0] for r in results)
decode = statistics.median(r[1] for r in results)
print(json.dumps({
    "bench": "generate-reference",
    "tool": f"transformers eager float32, torch {torch.__version__}, {threads} threads",
    "prompt_tokens": len(ids),
    "prefill_ms": round(prefill * 1000, 3),
    "prefill_tokens_per_s": round(len(ids) / prefill, 3),
    "decode_ms_per_token": round(decode * 1000, 3),
}))
