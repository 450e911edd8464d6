"""Decode-step cost of the in-process sampler (JaxEngine) on the tiny model, prefill separated out.

    python -m benchmarks.decode_step                       # batch 16, 600-token prompts, 64 new
    python -m benchmarks.decode_step --prompt_len=700 --repeats=3

The model has configs/tiny.py's dimensions (hidden 128, 4 layers, 4 heads / 2 KV heads, head_dim
32, vocab 4096, naive attention), random weights. Every call decodes greedily with no stop token
and the prefix cache off, so each run does the same work. The new-token bucket is pinned to
`--new_tokens` so a prefill-only call (max_new_tokens=1) runs the very same compiled program and
cache size; decode time = full call - prefill-only call, per step = that / (new_tokens - 1).
Prints the best of `repeats` timings for both, decode tokens/s, ms per decode step, and the
number of compilations of the generation program.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--prompt_len", type=int, default=600)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()

  from synthagent_jax import models
  from synthagent_jax.inference import decode
  from synthagent_jax.inference.engine import SamplingParams
  from synthagent_jax.inference.sampler import Buckets, JaxEngine

  cfg = models.ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_layers=4,
                           num_heads=4, num_kv_heads=2, head_dim=32, attention="naive")
  model = models.init_model(cfg, seed=0)
  eng = JaxEngine(model, buckets=Buckets(min_new_tokens=args.new_tokens), prefix_cache_bytes=0)
  prompts = np.random.default_rng(0).integers(1, cfg.vocab_size,
                                              (args.batch, args.prompt_len)).tolist()

  def best(max_new):
    sp = SamplingParams(max_new_tokens=max_new, temperature=0.0)
    eng.generate(prompts, sp)  # compile / warm up
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      out = eng.generate(prompts, sp)
      times.append(time.perf_counter() - start)
    assert all(len(c.token_ids) == max_new for c in out)
    return min(times)

  full_s = best(args.new_tokens)
  prefill_s = best(1)
  steps = args.new_tokens - 1
  decode_s = full_s - prefill_s
  print(f"batch {args.batch}, prompt {args.prompt_len}, new {args.new_tokens}: "
        f"full {full_s * 1e3:.0f} ms, prefill-only {prefill_s * 1e3:.0f} ms, "
        f"decode {decode_s / steps * 1e3:.2f} ms/step, "
        f"decode {args.batch * steps / decode_s:.0f} tok/s, "
        f"overall {args.batch * args.new_tokens / full_s:.0f} tok/s, "
        f"compiles {decode.trace_count()}", flush=True)


if __name__ == "__main__":
  main()
