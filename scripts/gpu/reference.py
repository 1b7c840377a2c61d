# The transformers side of scripts/gpu/run.sh, on the same GPU (one JSON line per command):
#   make-model DIR              TinyLlama-1.1B-shaped LLaMA, random weights, float16, save_pretrained
#   bandwidth                   device-to-device copy bandwidth (GB/s, read + written bytes)
#   bench MODEL PROMPT_LEN NEW REPS
#                               transformers eager float16, batch 1: prefill tokens/s, greedy `generate`
#                               of NEW tokens (tokens/s and decode ms/token), and a forward loop with
#                               DynamicCache; medians after a warm-up
#   table RESULTS.jsonl         prints the markdown table from run.sh's collected JSON lines
import json
import statistics
import sys
import time


def emit(**o):
    print(json.dumps(o), flush=True)


def make_model(out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device('cuda'):
        model = LlamaForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(out)
    emit(step='make-model', dir=out, params=sum(p.numel() for p in model.parameters()))


def bandwidth():
    import torch
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device='cuda')
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(10):
        t0 = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        best = max(best, 2 * n / (time.perf_counter() - t0) / 1e9)
    emit(step='bandwidth', copy_gb_per_s=round(best, 1), device=torch.cuda.get_device_name())


def bench(model_dir, prompt_len, new, reps):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, DynamicCache
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16, attn_implementation='eager').cuda().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (1, prompt_len), generator=g).cuda()
    sync = torch.cuda.synchronize

    @torch.no_grad()
    def prefill():
        sync(); t0 = time.perf_counter(); model(ids, use_cache=True); sync()
        return time.perf_counter() - t0

    @torch.no_grad()
    def gen():
        sync(); t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0)
        sync()
        assert out.shape[1] - prompt_len == new
        return time.perf_counter() - t0

    @torch.no_grad()
    def loop():
        cache = DynamicCache()
        out = model(ids, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        sync(); t0 = time.perf_counter()
        for _ in range(new - 1):
            out = model(tok, past_key_values=cache, use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
        tok.item(); sync()
        return (time.perf_counter() - t0) / (new - 1)

    prefill(); gen(); loop()  # warm-up
    p = statistics.median(prefill() for _ in range(reps))
    gt = statistics.median(gen() for _ in range(reps))
    lp = statistics.median(loop() for _ in range(reps))
    dec = (gt - p) / (new - 1)  # generate's time less its prefill, per further token
    emit(step='transformers', model=model_dir, tool=f'transformers {transformers.__version__} eager float16, torch {torch.__version__}',
         prompt_tokens=prompt_len, new_tokens=new, prefill_ms=round(p * 1000, 3), prefill_tokens_per_s=round(prompt_len / p, 1),
         generate_s=round(gt, 4), generate_new_tokens_per_s=round(new / gt, 1),
         decode_ms_per_token=round(dec * 1000, 3), decode_tokens_per_s=round(1 / dec, 1),
         loop_decode_ms_per_token=round(lp * 1000, 3), loop_decode_tokens_per_s=round(1 / lp, 1))


def table(path):
    rows = [json.loads(l) for l in open(path) if l.startswith('{')]
    by = lambda **kw: [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    bw = next((r for r in rows if r.get('step') == 'bandwidth'), {})
    gbps = bw.get('copy_gb_per_s')
    print(f"\nGPU: {bw.get('device', '?')}, device copy {gbps} GB/s (torch, read + written bytes)\n")
    print('| model | tp | tprun prefill tok/s | transformers prefill tok/s | ratio | tprun decode tok/s | transformers generate decode tok/s | ratio | bound tok/s (weights once per token at copy bw) | tprun / bound | session.run ms / all-reduce ms per forward |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for b in by(bench='generate'):
        name = b.get('label', b['engine'])
        ref = next((r for r in by(step='transformers') if r.get('label') == b.get('label', '').replace('-tp2', '').replace('-int4', '')), None)
        bound = gbps * 1e9 / b['weight_bytes_per_token'] if gbps else None
        f = lambda x: '—' if x is None else (f'{x:.1f}' if isinstance(x, float) else str(x))
        rp = b['prefill_tokens_per_s'] / ref['prefill_tokens_per_s'] if ref else None
        rd = b['decode_tokens_per_s'] / ref['decode_tokens_per_s'] if ref else None
        share = f"{100 * b['decode_tokens_per_s'] / bound:.2f} %" if bound else '—'
        print(f"| {name} | {b['tp']} | {f(b['prefill_tokens_per_s'])} | {f(ref and ref['prefill_tokens_per_s'])} | {'—' if rp is None else f'{rp:.2f}x'} "
              f"| {f(b['decode_tokens_per_s'])} | {f(ref and ref['decode_tokens_per_s'])} (loop {f(ref and ref['loop_decode_tokens_per_s'])}) | {'—' if rd is None else f'{rd:.2f}x'} "
              f"| {f(bound and round(bound))} | {share} | {b.get('run_ms_per_forward')} / {b.get('allreduce_ms_per_forward')} |")
    peer_table(rows)
    for r in by(check='quality'):
        print(f"\n{r['label']}: perplexity {r.get('ppl')} (reference 71.856, off by {r.get('ppl_rel_diff')}), greedy tokens equal for {r.get('greedy_equal')} of 4 prompts")


def peer_table(rows):
    """tprun against llama.cpp (same GPU, weights, precision, prompt ids) and transformers, with each row's
    bound from the device bandwidth its own bench measured through ORT WebGPU; then the decode profiles."""
    gens = [r for r in rows if r.get('bench') == 'generate' and r.get('copy_measured_on', '').startswith('gpu')]
    peers = {r.get('label'): r for r in rows if r.get('bench') == 'generate-peer'}
    refs = {r.get('label'): r for r in rows if r.get('step') == 'transformers'}
    if gens:
        print('\n| model | tprun prefill tok/s | llama.cpp prefill tok/s | tprun / llama.cpp | tprun decode tok/s | llama.cpp decode tok/s | tprun / llama.cpp | '
              'transformers decode tok/s | tprun / transformers | device bw GB/s (ORT WebGPU) | bound tok/s | tprun / bound | llama.cpp / bound |')
        print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for g in gens:
        lab = g.get('label', g['engine'])
        p = peers.get(lab + '-llama.cpp', {})
        t = refs.get(lab.replace('-int4', ''), {})
        bound = g['copy_gb_per_s'] * 1e9 / g['weight_bytes_per_token']
        q = lambda x, y: f'{x / y:.2f}x' if x and y else '—'
        f = lambda x: '—' if x is None else f'{x:,.1f}'
        print(f"| {lab} | {f(g['prefill_tokens_per_s'])} | {f(p.get('prefill_tokens_per_s'))} | {q(g['prefill_tokens_per_s'], p.get('prefill_tokens_per_s'))} "
              f"| {f(g['decode_tokens_per_s'])} | {f(p.get('decode_tokens_per_s'))} | {q(g['decode_tokens_per_s'], p.get('decode_tokens_per_s'))} "
              f"| {f(t.get('decode_tokens_per_s'))} | {q(g['decode_tokens_per_s'], t.get('decode_tokens_per_s'))} | {f(g['copy_gb_per_s'])} | {f(bound)} "
              f"| {100 * g['decode_tokens_per_s'] / bound:.1f} % | {(100 * p['decode_tokens_per_s'] / bound) if p.get('decode_tokens_per_s') else 0:.1f} % |")
    profs = [r for r in rows if 'profile' in r]
    if profs:
        print('\n| decode step (profiled) | wall ms | session.run ms | CPU ms in kernels | GPU ms (timestamps) | nodes | GPU dispatches | top GPU programs (ms/step) |')
        print('|---|---|---|---|---|---|---|---|')
    for r in profs:
        top = ', '.join(f"{x['program']} {x['ms_per_step']}" for x in r['gpu_programs'][:4])
        print(f"| {r['profile']} | {r['wall_ms_per_step_median']} | {r['run_ms_per_step_median']} | {r['cpu_kernel_ms_per_step']} | {r['gpu_ms_per_step']} "
              f"| {r['nodes_per_step']} | {r['gpu_dispatches_per_step']} | {top} |")


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'make-model':
        make_model(sys.argv[2])
    elif cmd == 'bandwidth':
        bandwidth()
    elif cmd == 'bench':
        bench(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == 'table':
        table(sys.argv[2])
    else:
        sys.exit(f'unknown command {cmd}')
