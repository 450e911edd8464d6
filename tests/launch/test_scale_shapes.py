"""Fixed shapes (issue 15): the train step compiles at most once per length bucket over a run,
and padding a batch to the step's maximum row count changes neither the update nor the metrics.
"""

import jax
import ml_collections
import numpy as np
import pytest

from launch import train_loop
from synthagent_jax.rl import learner
from synthagent_jax.rollout import batching
from synthagent_jax.rollout.trajectory import Trajectory
from tests.rl import learner_toys

CFG = learner.LearnerConfig(minibatch_size=4, micro_batch_size=2, ppo_epochs=2)


def _pad_rows(batch: dict, rows: int) -> dict:
  out = {}
  for k, v in batch.items():
    pad = np.zeros((rows - v.shape[0],) + v.shape[1:], v.dtype)
    out[k] = np.concatenate([v, pad])
  return out


@pytest.mark.slow  # two compilations of the toy train step: ~1-2 min on the shared CPU
def test_padding_rows_to_the_step_maximum_changes_nothing():
  env = learner_toys.get_env((1, 1, 1), CFG)
  host = learner_toys.make_host_batch(3, b=6)  # 6 real rows: 2 minibatches of 4 (one partial)
  results = []
  for rows in (8, 16):  # rounded to the minibatch; the step's maximum (2 empty minibatches)
    state, m = env.step(env.fresh_state(), learner.make_batch(_pad_rows(host, rows), env.mesh))
    results.append((jax.device_get(state.params), {k: float(v) for k, v in m.items()}))
  (p8, m8), (p16, m16) = results
  assert m8["learner/updates"] == m16["learner/updates"] == 4.0  # 2 minibatches x 2 epochs
  assert m8["learner/num_tokens"] == m16["learner/num_tokens"] > 0
  for k in m8:
    np.testing.assert_allclose(m16[k], m8[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p16)):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
  # The update did happen (an all-skipped step would also "match").
  p0 = jax.tree.leaves(env.host_state.params)
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p8), p0)) > 1e-4


def _traj(n: int, rng) -> Trajectory:
  ids = rng.integers(1, 128, n).tolist()
  mask = [0] * 3 + [1] * (n - 3)
  return Trajectory(task_id="t", sample_index=0, token_ids=ids, loss_mask=mask,
                    sampler_logprobs=[0.0] * 3 + [-1.0] * (n - 3), prompt_len=3, messages=[],
                    turns=[], status="answered")


@pytest.mark.slow  # two compilations of the toy train step: ~1-2 min on the shared CPU
def test_a_run_of_varying_lengths_and_dropped_groups_compiles_once_per_bucket(monkeypatch):
  config = ml_collections.ConfigDict(dict(
      rl=dict(tasks_per_step=2, num_generations=4),
      rollout=dict(max_total_tokens=256)))
  assert train_loop.fixed_shapes(config, 4)["buckets"] == (128, 256)
  monkeypatch.setattr(train_loop, "LENGTH_FLOOR", 16)  # short sequences: cheap on the CPU
  config.rollout.max_total_tokens = 32
  shapes = train_loop.fixed_shapes(config, 4)
  assert shapes["rows"] == 8 and shapes["buckets"] == (16, 32)
  env = learner_toys.Env((1, 1, 1), CFG)  # its own jitted step: a fresh compile count
  state = env.fresh_state()
  rng = np.random.default_rng(0)
  # (kept rollouts, longest) per step: groups of 4 dropped or not, lengths across both buckets.
  steps = [(8, 10), (4, 20), (8, 32), (4, 16), (8, 17), (4, 31), (8, 5)]
  for kept, longest in steps:
    trajs = [_traj(int(rng.integers(4, longest + 1)), rng) for _ in range(kept - 1)]
    trajs.append(_traj(longest, rng))
    advs = [np.full(len(t.token_ids), a, np.float32) for t, a in zip(trajs, rng.normal(size=kept))]
    batch = batching.to_batch(trajs, advs, pad_id=0, **shapes)
    assert batch["input_ids"].shape == (8, min(b for b in shapes["buckets"] if b >= longest))
    state, _ = env.step(state, learner.make_batch(batch, env.mesh))
  got = train_loop.compile_metrics(env.step)
  assert got["perf/train_step_compiles"] == 2.0  # one per length bucket, whatever the rows kept
