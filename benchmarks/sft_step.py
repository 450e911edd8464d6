"""One learner step of configs/tiny.py's SFT phase, by attention path and LM-head placement.

    python -m benchmarks.sft_step [--rows=16 --seq=576 --trained=0.17 --repeats=4]

The batch is shaped like tiny's SFT batches (16 references of <= 576 tokens, ~17 % of them the
policy's own tokens: assistant turns between prompts, tool results and user replies): random
token ids with the loss mask on 4 spans per row. Each variant is the real jitted train_step
(rl.learner, loss="sft") on the shipped base's dims, compiled first, then timed `--repeats`
times; the variants alternate round by round so other load hits them alike. Prints the median
seconds per step of each and its ratio to the first (naive attention, head at every position).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from configs import tiny
from launch import builders
from synthagent_jax.rl import learner
from synthagent_jax.rl import state as state_lib

VARIANTS = (("naive", 0.0), ("naive", 0.5), ("blocked", 0.0), ("blocked", 0.5))


def host_batch(rows: int, seq: int, trained: float, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  loss_mask = np.zeros((rows, seq), np.int32)
  span = max(1, int(trained * seq / 4))
  for r in range(rows):
    for s in rng.choice(np.arange(16, seq - span), 4, replace=False):
      loss_mask[r, s:s + span] = 1
  return dict(input_ids=rng.integers(0, 4000, (rows, seq)).astype(np.int32),
              attention_mask=np.ones((rows, seq), np.int32), loss_mask=loss_mask)


def build(attention: str, head_fraction: float, batch: dict):
  c = tiny.get_config()
  c.model.attention, c.model.head_fraction = attention, head_fraction
  mesh = builders.mesh(c)
  tok = builders.tokenizer(c)
  model_cfg = builders.model_config(c, tok)
  tx = builders.sft_optimizer(c)
  spec = state_lib.plan_state(model_cfg, tx, mesh, builders.rules(c), c.seed)
  params = builders.initial_params(c, model_cfg, spec)
  step = learner.make_train_step(spec, tx, builders.sft_learner_config(c), mesh)
  device_batch = learner.make_batch(batch, mesh, loss="sft")

  def run() -> float:
    state = state_lib.state_from_params(params, spec, tx, 0)
    t0 = time.perf_counter()
    jax.block_until_ready(step(state, device_batch)[0].params)
    return time.perf_counter() - t0
  run()  # compile
  return run


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--rows", type=int, default=16, help="a multiple of sft.batch_size (16)")
  p.add_argument("--seq", type=int, default=576)
  p.add_argument("--trained", type=float, default=0.17, help="share of tokens in the loss mask")
  p.add_argument("--repeats", type=int, default=4)
  a = p.parse_args(argv)
  batch = host_batch(a.rows, a.seq, a.trained)
  print(f"batch {a.rows} x {a.seq}, {batch['loss_mask'].mean():.3f} of tokens trained; "
        f"{jax.devices()[0].device_kind}", flush=True)
  runs = {v: build(*v, batch) for v in VARIANTS}
  times = {v: [] for v in VARIANTS}
  for _ in range(a.repeats):
    for v in VARIANTS:
      times[v].append(runs[v]())
  base = statistics.median(times[VARIANTS[0]])
  for (attention, frac), ts in times.items():
    med = statistics.median(ts)
    print(f"attention={attention:<8} head_fraction={frac:<4} {med:6.3f} s/step  "
          f"{med / base:5.2f}x  (runs {', '.join(f'{t:.2f}' for t in ts)})")


if __name__ == "__main__":
  main()
