"""A GRPO step's time against its FLOPs: the tiny loop's distance from the matmul peak.

    python -m launch.train --config=configs/tiny.py --workdir=runs/tiny      # or any SFT'd run
    python -m benchmarks.grpo_step_flops --from_run=runs/tiny --steps=6 [--set=key=value ...]

Copies the run's SFT checkpoints (checkpoints/sft) into a scratch workdir and runs `--steps`
GRPO steps of the run's config there with `launch.train_loop.train` (evaluation shrunk to one
episode), then reports, per step after the first (which compiles): the wall time of the step, of
its rollouts and of its learner, the model FLOPs each part needed, and time / (FLOPs / peak);
and the first step's wall time (compiles included: what a change to the compiled shapes costs),
with the count of programs first compiled in a later step (their compiles sit inside the medians).

Model FLOPs are the work the step cannot avoid, counted from the step's own trajectories:
- a matmul parameter does 2 FLOPs per token forward (6 forward + backward); the body (attention
  projections and MLP, all layers) runs on every token, the LM head (tied, vocab x hidden) only
  where logits are needed: each sampled token in the rollouts (a turn's first from its
  prefill's last position), each trained (sampled) token in the learner;
- causal attention: 4 x layers x heads x head_dim FLOPs per (query, key) pair (QK^T and PV), a
  token at position p having p + 1 keys; x 3 in the learner;
- the rollouts compute each token once: a group's shared first prompt once per group, every
  later token of every episode once (what an engine with a perfect prefix cache does);
- padding, recomputation and batch rows that already finished are not work.
The peak is the best float32 [1024 x 1024] matmul rate of JAX and torch measured in the same
process (benchmarks/learner_throughput.matmul_peak_flops), and "shape peak" the rate JAX reaches
on the model's own largest matmul, [tokens x hidden] x [hidden x intermediate], for the
learner's tokens: what XLA can do with matrices this thin.

Where the rollouts' extra time goes, from the engine's decode counters (inference/sampler.
EngineStats): batch rows the decode ran per token it needed (rows that finished early, batch
padding) and key slots its attention read per key needed (left padding to the prompt bucket,
unused new-token slots, finished rows). Reading the cache is most of a tiny decode step, so
the second factor bears on the rollouts' time about in proportion. And the learner's: positions
it runs (each trained row at the step's padded length) per token of the trained trajectories.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import learner_throughput
from launch import plan
from launch import sweep
from launch import train_loop
from launch import train_rollouts
from synthagent_jax.rollout import batching
from synthagent_jax.utils import metrics as metrics_lib


def model_dims(config) -> dict:
  """The dims that set the FLOPs (launch.plan.model_config: the checkpoint's config.json, else
  config.model's)."""
  m = plan.model_config(config)
  return dict(hidden=m.hidden_size, intermediate=m.intermediate_size, layers=m.num_layers,
              heads=m.num_heads, kv_heads=m.num_kv_heads, vocab=m.vocab_size,
              head_dim=m.head_dim or m.hidden_size // m.num_heads)


def _body_params(d: dict) -> int:
  attn = d["hidden"] * d["head_dim"] * (2 * d["heads"] + 2 * d["kv_heads"])
  return d["layers"] * (attn + 3 * d["hidden"] * d["intermediate"])


def span_flops(d: dict, start: int, end: int, head_tokens: int) -> float:
  """Forward FLOPs of the tokens at positions [start, end) of one sequence whose earlier
  positions are cached, with the LM head on `head_tokens` of them."""
  n = end - start
  pairs = (end * (end + 1) - start * (start + 1)) // 2  # sum of (p + 1) over the span
  return (2.0 * _body_params(d) * n + 2.0 * d["vocab"] * d["hidden"] * head_tokens
          + 4.0 * d["layers"] * d["heads"] * d["head_dim"] * pairs)


def _common_prefix(seqs) -> int:
  n = min(len(s) for s in seqs)
  for i in range(n):
    if any(s[i] != seqs[0][i] for s in seqs[1:]):
      return i
  return n


def step_flops(d: dict, trajs, group: int, dropped_g=None) -> tuple[float, float]:
  """(rollout FLOPs, learner FLOPs) of one round's trajectories (task-major groups of `group`);
  the learner trains the groups not in `dropped_g` only."""
  rollout = learner = 0.0
  for g in range(0, len(trajs), group):
    members = trajs[g:g + group]
    trained = dropped_g is None or not dropped_g[g // group]
    shared = min(_common_prefix([t.token_ids for t in members]), members[0].prompt_len)
    rollout += span_flops(d, 0, shared, 0)
    for t in members:
      sampled = int(sum(t.loss_mask))  # each from one head: a prefill's last position or a step
      rollout += span_flops(d, shared, len(t.token_ids), sampled)
      learner += 3 * span_flops(d, 0, len(t.token_ids), sampled) if trained else 0.0
  return rollout, learner


def shape_peak(d: dict, tokens: int, reps: int = 5) -> float:
  """FLOP/s of jnp [tokens x hidden] @ [hidden x intermediate] in float32 (jit, best of reps)."""
  a = jnp.ones((tokens, d["hidden"]), jnp.float32)
  b = jnp.ones((d["hidden"], d["intermediate"]), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * tokens * d["hidden"] * d["intermediate"] / best


def _scratch_run(src: str) -> str:
  """A workdir holding only `src`'s SFT checkpoints: train() resumes the SFT and samples GRPO."""
  sft = os.path.join(src, "checkpoints", "sft")
  if not os.path.isdir(sft):
    raise ValueError(f"--from_run={src} has no checkpoints/sft: run launch.train with "
                     "sft.num_steps > 0 there first")
  dst = tempfile.mkdtemp(prefix="grpo_step_flops_")
  shutil.copytree(sft, os.path.join(dst, "checkpoints", "sft"))
  return dst


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--from_run", required=True, help="a launch.train workdir with checkpoints/sft")
  p.add_argument("--config", default="configs/tiny.py", help="the run's config file[:arg]")
  p.add_argument("--steps", type=int, default=6, help="GRPO steps to run (the first compiles)")
  p.add_argument("--set", action="append", default=[],
                 help="config override key=value (the run's own, e.g. data.holdout_domains)")
  a = p.parse_args(argv)
  config = sweep.load_config(a.config)
  overrides = sweep.parse_overrides(" ".join(a.set))
  sweep.check_against_config(config, overrides)  # an unknown key or a bad value, named
  config.update_from_flattened_dict(overrides)
  config.rl.num_steps = a.steps
  config.eval.num_tasks, config.eval.k, config.eval.before_sft = 1, 1, False
  config.eval.every_steps = 0
  config.checkpoint.every_steps = 10**6
  dims = model_dims(config)

  per_step: list = []
  learner_tokens: list = []
  rollout_and_score = train_rollouts.rollout_and_score

  decode: dict = {}  # step -> the engine's decode counters over its rounds
  trained: dict = {}  # step -> lengths of the trajectories the learner trains on

  def counted(run, loop, tasks, step, round_index=0):  # each sampling round of a GRPO step
    stats = getattr(loop.engine, "stats", None)
    before = dataclasses.asdict(stats) if stats is not None else None
    out = rollout_and_score(run, loop, tasks, step, round_index)
    if stats is not None:
      total = decode.setdefault(step, collections.Counter())
      total.update({k: v - before[k] for k, v in dataclasses.asdict(stats).items()})
    while len(per_step) <= step:
      per_step.append((0.0, 0.0))
    f = step_flops(dims, out[0], config.rl.num_generations, out[3])
    g = config.rl.num_generations
    trained.setdefault(step, []).extend(
        len(t.token_ids) for i, t in enumerate(out[0]) if out[3] is None or not out[3][i // g])
    per_step[step] = (per_step[step][0] + f[0], per_step[step][1] + f[1])
    learner_tokens.append(sum(len(t.token_ids) for t in out[0]))
    return out

  workdir = _scratch_run(a.from_run)
  train_rollouts.rollout_and_score = counted
  try:
    train_loop.train(config, workdir)
    rows = [r for r in metrics_lib.read_metrics(workdir) if "perf/step_s" in r]
  finally:
    train_rollouts.rollout_and_score = rollout_and_score
    shutil.rmtree(workdir, ignore_errors=True)
  peak = learner_throughput.matmul_peak_flops(n=1024, reps=10)["peak"]
  steady = [(r, per_step[int(r["step"]) - 1]) for r in rows[1:]]  # row "step" s+1 is step s
  if not steady:
    raise SystemExit("need --steps >= 2 (the first step compiles)")
  tokens = int(statistics.median(learner_tokens))
  speak = shape_peak(dims, max(tokens, 256))
  med = lambda xs: float(np.median(xs))
  step_s = med([r["perf/step_s"] for r, _ in steady])
  roll_s = med([r["perf/rollout_s"] for r, _ in steady])
  learn_s = med([r["perf/learner_s"] for r, _ in steady])
  roll_f = med([f[0] for _, f in steady])
  learn_f = med([f[1] for _, f in steady])
  ratio = lambda s, f, pk: s / (f / pk) if f else float("nan")  # f 0: every group dropped
  dec = sum((decode.get(int(r["step"]) - 1, collections.Counter()) for r, _ in steady),
            collections.Counter())
  waste = lambda a, b: dec[a] / dec[b] if dec[b] else float("nan")
  # The learner runs each trained row at the step's padded length (the smallest length bucket
  # that holds its longest trajectory).
  buckets = batching.length_buckets(train_loop.LENGTH_FLOOR, config.rollout.max_total_tokens)
  lens = [trained.get(int(r["step"]) - 1, []) for r, _ in steady]
  run = sum(len(x) * min(b for b in buckets if b >= max(x)) for x in lens if x)
  result = {
      "steps": len(steady), "first_step_s": rows[0]["perf/step_s"], "step_s": step_s,
      "rollout_s": roll_s, "learner_s": learn_s,
      "rollout_gflop": roll_f / 1e9, "learner_gflop": learn_f / 1e9,
      "peak_gflops": peak / 1e9, "shape_peak_gflops": speak / 1e9,
      "step_vs_peak": ratio(step_s, roll_f + learn_f, peak),
      "rollout_vs_peak": ratio(roll_s, roll_f, peak),
      "learner_vs_peak": ratio(learn_s, learn_f, peak),
      "step_vs_shape_peak": ratio(step_s, roll_f + learn_f, speak),
      "decode_rows_per_needed": waste("decode_rows", "decode_needed"),
      "decode_keys_per_needed": waste("decode_keys", "decode_keys_needed"),
      "learner_positions_per_token": run / sum(map(sum, lens)) if run else float("nan"),
      # Programs first compiled after step 1: their compile time is inside the medians.
      "late_compiles": int(sum(rows[-1].get(k, 0) - rows[0].get(k, 0) for k in
                               ("perf/sampler_compiles", "perf/train_step_compiles"))),
      "machine": f"{os.cpu_count()}-core {platform.machine()}, {jax.devices()[0].platform}",
  }
  print("| part | median s | model GFLOP | x its FLOP time at the peak |")
  print("|---|---|---|---|")
  print(f"| step | {step_s:.2f} | {(roll_f + learn_f) / 1e9:.1f} | {result['step_vs_peak']:.1f}x |")
  print(f"| rollouts | {roll_s:.2f} | {roll_f / 1e9:.1f} | {result['rollout_vs_peak']:.1f}x |")
  print(f"| learner | {learn_s:.2f} | {learn_f / 1e9:.1f} | {result['learner_vs_peak']:.1f}x |")
  print(f"peak {peak / 1e9:.0f} GFLOP/s ([1024]^2 float32); the model's [{tokens} x "
        f"{dims['hidden']}] x [{dims['hidden']} x {dims['intermediate']}] matmul "
        f"{speak / 1e9:.0f} GFLOP/s: the step is {result['step_vs_shape_peak']:.1f}x its FLOP "
        "time at that rate")
  print(f"decode: {result['decode_rows_per_needed']:.2f} batch rows run per token needed "
        f"(finished and padding rows), {result['decode_keys_per_needed']:.2f} key slots read "
        "per key needed (left padding, unused new-token slots, finished rows); learner: "
        f"{result['learner_positions_per_token']:.2f} positions run per token (padding)")
  if result["late_compiles"]:
    print(f"note: {result['late_compiles']} programs compiled after the first step, inside the "
          "measured steps; run more --steps for steady-state medians")
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
