"""Peak device memory and time of GRPO learner steps at a policy's dims (issue 15).

    python -m benchmarks.grpo_step_memory [--dims qwen_0_5b --seq 8192 --rows 8] [--json]
    python -m benchmarks.grpo_step_memory --dims=tiny --seq=256 --rows=2 --json   # CPU, seconds

One jitted `rl.learner` train_step (loss="policy", PPO-clip; no old_logprobs in the batch, so
the step computes them itself: stop_gradient(logp) for a step of one update, a first no-grad
pass with --minibatches > 1; token log-probs over blocks of `logprob_chunk` positions, never
[B, T, V]) on a random-weight Qwen2 (params drawn tensor by tensor, learner_throughput's
`random_train_state`) with float32 params and AdamW moments and `--dtype` compute. The batch is
`--rows` x `--minibatches` episodes of `--seq` tokens: every token real, the first `--prompt`
fraction unmasked (the prompt), the rest policy tokens with advantage +1 or -1 by row. Defaults
are configs/qwen_0_5b.py's learner: bf16, remat full, chunked attention, micro-batch 8, 8192
tokens.

The step is compiled once ahead of time; XLA's memory analysis of that program is reported
(`compiled_*`: arguments + outputs - donated aliases + temporaries, the program's own estimate).
Then `--steps` steps run: the first (reported apart: first_step_s) and the rest (step_s, their
median). On a GPU the runtime peak `memory_stats()["peak_bytes_in_use"]` is the measured figure
(`peak_source: memory_stats`); where the device reports none (the CPU), the compiled estimate
stands in (`peak_source: compiled`).
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np

from benchmarks import learner_throughput as lt


def _args(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--dims", default="qwen_0_5b", help="benchmarks.judge_throughput.DIMS name")
  p.add_argument("--vocab", type=int, default=4096,
                 help="vocabulary where the dims table has none (tiny)")
  p.add_argument("--seq", type=int, default=8192, help="tokens per episode (T)")
  p.add_argument("--rows", type=int, default=8, help="episodes per minibatch")
  p.add_argument("--micro", type=int, default=0, help="micro-batch rows (0: --rows)")
  p.add_argument("--minibatches", type=int, default=1,
                 help="optimizer updates per step (> 1 adds the old-logprob pass)")
  p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  p.add_argument("--attention", default="chunked", choices=lt.ATTENTIONS)
  p.add_argument("--remat", default="full", choices=lt.REMATS)
  p.add_argument("--prompt", type=float, default=0.125,
                 help="fraction of each episode that is prompt (loss_mask 0)")
  p.add_argument("--steps", type=int, default=2, help="steps run (the first is timed apart)")
  p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
  a = p.parse_args(argv)
  if a.steps < 1 or a.rows < 1 or a.minibatches < 1 or a.seq < 2:
    raise SystemExit("--steps, --rows, --minibatches must be >= 1 and --seq >= 2")
  lt.apply_dims(a, a.dims)
  a.batch = a.rows * a.minibatches
  return a


def host_batch(a, seed: int = 0) -> dict:
  """A policy batch of a.batch episodes of a.seq real tokens (no old_logprobs: computed in-step)."""
  rng = np.random.default_rng(seed)
  b, t = a.batch, a.seq
  loss_mask = np.zeros((b, t), np.int32)
  loss_mask[:, max(1, int(a.prompt * t)):] = 1
  sign_b = np.where(np.arange(b) % 2 == 0, 1.0, -1.0).astype(np.float32)
  return dict(input_ids=rng.integers(0, a.vocab, (b, t)).astype(np.int32),
              attention_mask=np.ones((b, t), np.int32), loss_mask=loss_mask,
              advantages=(sign_b[:, None] * loss_mask).astype(np.float32),
              sampler_logprobs=(-2.0 * loss_mask).astype(np.float32))


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def measure(a) -> dict:
  from synthagent_jax import parallel
  from synthagent_jax.rl import learner, optim
  cfg = lt.model_config(a)
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-6, clip_norm=1.0))
  state, spec = lt.random_train_state(cfg, tx, mesh)
  lcfg = learner.LearnerConfig(loss="policy", minibatch_size=a.rows,
                               micro_batch_size=a.micro or a.rows)
  batch = learner.make_batch(host_batch(a), mesh, loss="policy")
  t = time.perf_counter()
  step = learner.make_train_step(spec, tx, lcfg, mesh).lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  ma = step.memory_analysis()
  mem = {k: int(getattr(ma, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  compiled_total = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
  times, metrics = [], None
  for _ in range(a.steps):
    t = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  stats = jax.devices()[0].memory_stats() or {}
  measured = stats.get("peak_bytes_in_use")
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  tokens = a.batch * a.seq
  step_s = statistics.median(times[1:]) if len(times) > 1 else times[0]
  return {
      "device": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
      "dims": a.dims, "layers": a.layers, "hidden": a.hidden, "vocab": a.vocab,
      "seq": a.seq, "rows": a.rows, "micro": a.micro or a.rows, "minibatches": a.minibatches,
      "dtype": a.dtype, "attention": a.attention, "remat": a.remat,
      "state_gib": _nbytes(state) / 2**30, "compile_s": compile_s,
      "first_step_s": times[0], "step_s": step_s, "tokens_per_s": tokens / step_s,
      "model_tflops_per_s": tokens / step_s * lt.flops_per_token(a) / 1e12,
      **{f"compiled_{k}_gib": v / 2**30 for k, v in mem.items()},
      "compiled_total_gib": compiled_total / 2**30,
      "peak_gib": (measured if measured is not None else compiled_total) / 2**30,
      "peak_source": "memory_stats" if measured is not None else "compiled",
      "bytes_limit_gib": stats["bytes_limit"] / 2**30 if "bytes_limit" in stats else None,
      "loss": metrics["learner/loss"], "grad_norm": metrics["learner/grad_norm"],
      "skipped_updates": metrics["learner/skipped_updates"],
  }


def main(argv=None):
  a = _args(argv)
  r = measure(a)
  print(f"{r['device_kind']}: {r['dims']} dims, {r['rows']} x {r['minibatches']} episodes of "
        f"{r['seq']} tokens, {r['dtype']}, attention {r['attention']}, remat {r['remat']}: "
        f"step {r['step_s']:.3f} s ({r['tokens_per_s']:.0f} tokens/s, "
        f"{r['model_tflops_per_s']:.2f} model TFLOP/s; first {r['first_step_s']:.3f} s, "
        f"compile {r['compile_s']:.1f} s); peak {r['peak_gib']:.3f} GiB ({r['peak_source']}), "
        f"compiled estimate {r['compiled_total_gib']:.3f} GiB (temporaries "
        f"{r['compiled_temp_gib']:.3f}), state {r['state_gib']:.3f} GiB; loss {r['loss']:.4f}, "
        f"grad norm {r['grad_norm']:.4f}, skipped {r['skipped_updates']:.0f}")
  if a.json:
    print(json.dumps(r))
  return r


if __name__ == "__main__":
  main()
