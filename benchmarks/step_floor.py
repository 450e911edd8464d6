"""The tiny GRPO step's floor: each part of the step at zero waste, against its FLOP time.

    python -m benchmarks.step_floor                       # configs/tiny.py's model, 2-core CPU
    python -m benchmarks.step_floor --seq=512 --repeats=5

`grpo_step_flops` divides a real step's time by the FLOPs of the work it needs; its ratio mixes
two things: waste (padding, finished rows, batch padding) and how fast this machine runs the
work itself. This benchmark measures the second alone, with no waste at all, on configs/tiny.py's
model (its checkpoint's dims, its attention) and random weights:
- learner: `rl.learner`'s train step (GRPO loss, the run's micro-batch of 4) on 16 rows that are
  all real tokens, `--seq` long, a fifth of them trained (an agent trains on its own tokens only);
- prefill: the sampler's prefill of 16 prompts whose length is exactly their bucket (no left
  padding), one sampled token;
- decode: one-token `forward_cached` steps over a cache whose every slot is real, batch 16 (all
  rows needed).
Each part's FLOPs are `grpo_step_flops.span_flops` (the same count the step's ratio uses) and the
peak is the best float32 [1024]^2 matmul of JAX and torch in the same process. The ratios are the
floor of `grpo_step_flops`' part ratios on this machine: no loop design goes below them without
faster kernels.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from benchmarks import decode_step
from benchmarks import grpo_step_flops
from benchmarks import learner_throughput
from launch import plan
from launch import sweep


def _best(fn, repeats: int) -> float:
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def learner_part(config, cfg, dims, seq: int, repeats: int) -> tuple[float, float]:
  """(seconds, FLOPs) of one train step of the run's learner (`builders.rl_learner_config`)
  on 16 full rows of `seq` tokens."""
  from launch import builders
  from synthagent_jax import parallel
  from synthagent_jax.rl import learner, losses, optim
  from synthagent_jax.rl import state as state_lib
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-4, clip_norm=1.0))
  state, spec = state_lib.create_train_state(cfg, tx, mesh, parallel.DEFAULT_RULES)
  lcfg = builders.rl_learner_config(config)
  step = learner.make_train_step(spec, tx, lcfg, mesh)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, cfg.vocab_size, (16, seq)).astype(np.int32)
  trained = np.zeros_like(ids)
  for start in range(0, seq, 100):  # turns: 20 sampled tokens after 80 of context
    trained[:, start + 80:start + 100] = 1
  host = dict(input_ids=ids, attention_mask=np.ones_like(ids), loss_mask=trained,
              advantages=np.repeat(rng.normal(size=(16, 1)), seq, 1).astype(np.float32))
  for key in losses.get_loss(lcfg.loss).batch_keys:  # log-probs the sampler would send
    host.setdefault(key, np.where(trained, -1.0, 0.0).astype(np.float32))
  batch = learner.make_batch(host, mesh, loss=lcfg.loss)
  holder = {"state": state}

  def run():
    holder["state"], m = step(holder["state"], batch)
    jax.block_until_ready(m)
  flops = 16 * 3 * grpo_step_flops.span_flops(dims, 0, seq, int(trained[0].sum()))
  return _best(run, repeats), flops


def sampler_parts(model, dims, seq: int, repeats: int, new_tokens: int = 64):
  """((prefill seconds, FLOPs), (decode seconds per step, FLOPs per step)) at batch 16."""
  from synthagent_jax.inference import sampler
  from synthagent_jax.inference.engine import SamplingParams
  eng = sampler.JaxEngine(model, buckets=sampler.Buckets(min_new_tokens=new_tokens),
                          prefix_cache_bytes=0)
  prompts = np.random.default_rng(1).integers(1, dims["vocab"], (16, seq)).tolist()
  sp = SamplingParams(max_new_tokens=1, temperature=0.0)
  prefill_s = _best(lambda: eng.generate(prompts, sp), repeats)
  prefill_f = 16 * grpo_step_flops.span_flops(dims, 0, seq, 1)

  # Every cache slot real: the step's attention reads only needed keys.
  loop_s = decode_step.decode_loop_seconds(model, 16, seq, seq, seq + new_tokens, new_tokens - 1,
                                           lambda fn: _best(fn, repeats))
  steps = new_tokens - 1
  # Step i feeds the token at position seq + i: it attends to the seq + i + 1 keys up to itself
  # (the cache is read whole; here every slot is real, so the read is the need, bar the last
  # steps' not-yet-written slots).
  decode_f = sum(16 * grpo_step_flops.span_flops(dims, seq + i, seq + i + 1, 1)
                 for i in range(steps)) / steps
  return (prefill_s, prefill_f), (loop_s / steps, decode_f)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/tiny.py", help="the run's config file[:arg]")
  p.add_argument("--seq", type=int, default=512,
                 help="tokens per learner row and per prompt (a prompt bucket: 256, 512, ...)")
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args(argv)
  from synthagent_jax.inference import sampler
  b = sampler.Buckets()
  if sampler.prompt_bucket(a.seq, b.min_prompt_len, b.prompt_fine_above) != a.seq:
    p.error(f"--seq={a.seq} is not a prompt bucket (the prefill would pad it): take "
            f"{sampler.prompt_bucket(a.seq, b.min_prompt_len, b.prompt_fine_above)}")
  config = sweep.load_config(a.config)
  cfg = plan.model_config(config)
  dims = grpo_step_flops.model_dims(config)
  from synthagent_jax import models
  model = models.init_model(cfg, seed=0)
  learn = learner_part(config, cfg, dims, a.seq, a.repeats)
  prefill, decode_one = sampler_parts(model, dims, a.seq, a.repeats)
  peak = learner_throughput.matmul_peak_flops(n=1024, reps=10)["peak"]
  rows = {"learner": learn, "prefill": prefill, "decode step": decode_one}
  result = {"seq": a.seq, "peak_gflops": peak / 1e9, "attention": cfg.attention}
  print(f"| part (zero waste, {a.seq} tokens) | s | GFLOP | x its FLOP time at the peak |")
  print("|---|---|---|---|")
  for name, (s, f) in rows.items():
    result[name.replace(" ", "_") + "_vs_peak"] = s / (f / peak)
    print(f"| {name} | {s:.4f} | {f / 1e9:.3f} | {s / (f / peak):.1f}x |")
  print(f"peak {peak / 1e9:.0f} GFLOP/s ([1024]^2 float32, best of JAX and torch)")
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
