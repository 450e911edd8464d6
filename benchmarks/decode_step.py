"""Decode-step cost of the in-process sampler (JaxEngine) on the tiny model, prefill separated out.

    python -m benchmarks.decode_step                       # batch 16, 600-token prompts, 64 new
    python -m benchmarks.decode_step --prompt_len=700 --repeats=3

The model has configs/tiny.py's dimensions (hidden 128, 4 layers, 4 heads / 2 KV heads, head_dim
32, vocab 4096, naive attention), random weights. Every call decodes greedily with no stop token
and the prefix cache off, so each run does the same work. The new-token bucket is pinned to
`--new_tokens` so a prefill-only call (max_new_tokens=1) runs the very same compiled program and
cache size. Prints the best of `repeats` timings of: the full call, the prefill-only call, and
the decode loop alone (new_tokens - 1 jitted one-token `forward_cached` steps over the whole
cache, greedy, no prefill) as ms per step: the figure to compare layouts by, since the
engine's difference full - prefill is buried in the prefill's noise on a shared CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def decode_loop_seconds(model, batch: int, position: int, first_slot: int, slots: int, steps: int,
                        best_of) -> float:
  """`best_of`'s time of `steps` greedy one-token `forward_cached` calls in one jitted loop:
  `batch` rows at positions position + i writing cache slot first_slot + i, every one of the
  cache's `slots` slots valid (no prefill, no sampling knobs)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  graphdef, state = nnx.split(model)

  @jax.jit
  def decode_loop(state, cache, kv_mask_bs, token_b):
    m = nnx.merge(graphdef, state)

    def body(i, carry):
      cache, token_b = carry
      pos_b1 = jnp.full((batch, 1), position, jnp.int32) + i
      logits_b1v, cache = m.forward_cached(token_b[:, None], pos_b1, cache, first_slot + i,
                                           kv_mask_bs)
      return cache, jnp.argmax(logits_b1v[:, 0], -1).astype(jnp.int32)

    return jax.lax.fori_loop(0, steps, body, (cache, token_b))

  cache = model.init_cache(batch, slots)
  kv_mask_bs = jnp.ones((batch, slots), bool)
  token_b = jnp.ones((batch,), jnp.int32)
  return best_of(lambda: jax.block_until_ready(decode_loop(state, cache, kv_mask_bs, token_b)))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--prompt_len", type=int, default=600)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()

  from synthagent_jax import models
  from synthagent_jax.inference import decode, sampler
  from synthagent_jax.inference.engine import SamplingParams

  cfg = models.ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_layers=4,
                           num_heads=4, num_kv_heads=2, head_dim=32, attention="naive")
  model = models.init_model(cfg, seed=0)
  eng = sampler.JaxEngine(model, buckets=sampler.Buckets(min_new_tokens=args.new_tokens), prefix_cache_bytes=0)
  prompts = np.random.default_rng(0).integers(1, cfg.vocab_size,
                                              (args.batch, args.prompt_len)).tolist()

  def best_of(fn):
    fn()  # compile / warm up
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    return min(times)

  def call(max_new):
    sp = SamplingParams(max_new_tokens=max_new, temperature=0.0)
    out = eng.generate(prompts, sp)
    assert all(len(c.token_ids) == max_new for c in out)

  full_s = best_of(lambda: call(args.new_tokens))
  prefill_s = best_of(lambda: call(1))
  compiles = decode.trace_count()

  # The decode loop alone: `steps` greedy one-token forward_cached calls over the full cache,
  # as generate_padded's while_loop runs them (no prefill, no sampling knobs).
  steps = args.new_tokens - 1
  b = eng.buckets
  slots = sampler.prompt_bucket(args.prompt_len, b.min_prompt_len, b.prompt_fine_above)
  slots += args.new_tokens
  loop_s = decode_loop_seconds(model, args.batch, args.prompt_len, slots - args.new_tokens,
                               slots, steps, best_of)
  print(f"batch {args.batch}, prompt {args.prompt_len} ({slots} cache slots), new "
        f"{args.new_tokens}: decode loop {loop_s / steps * 1e3:.2f} ms/step "
        f"({args.batch * steps / loop_s:.0f} tok/s); engine: full {full_s * 1e3:.0f} ms "
        f"({args.batch * args.new_tokens / full_s:.0f} tok/s), prefill-only {prefill_s * 1e3:.0f} "
        f"ms, difference {(full_s - prefill_s) / steps * 1e3:.2f} ms/step; compiles {compiles}",
        flush=True)

if __name__ == "__main__":
  main()
