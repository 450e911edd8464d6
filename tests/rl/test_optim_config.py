"""Optimizer schedule values (hand-derived) and the config sections the learner reads."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from synthagent_jax.rl import learner, optim


def test_constant_schedule_with_warmup():
  s = optim.make_schedule(optim.OptimConfig(lr=1e-3, warmup_steps=4))
  np.testing.assert_allclose([float(s(i)) for i in (0, 2, 4, 100)], [0, 5e-4, 1e-3, 1e-3],
                             rtol=1e-6)


def test_cosine_schedule():
  s = optim.make_schedule(optim.OptimConfig(lr=1e-3, warmup_steps=10, schedule="cosine",
                                            total_steps=110, end_lr_frac=0.1))
  # Halfway through the 100 decay steps: end + (peak - end) * (1 + cos(pi / 2)) / 2.
  want_mid = 1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * 0.5)) / 2
  np.testing.assert_allclose([float(s(10)), float(s(60)), float(s(110))], [1e-3, want_mid, 1e-4],
                             rtol=1e-5)


def test_optimizer_clips_and_decays_matrices_only():
  tx = optim.make_optimizer(optim.OptimConfig(lr=0.1, weight_decay=0.5, clip_norm=1.0))
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  grads = {"w": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["w"], 1 - 0.1 * 0.5)  # zero grad: only decoupled decay
  np.testing.assert_allclose(new["b"], 1.0)             # vectors are not decayed


def test_config_sections_parse():
  c = base.base_config()
  lc = learner.LearnerConfig.from_config(c.rl)
  assert (lc.minibatch_size, lc.micro_batch_size, lc.is_cap) == (16, 8, None)
  oc = optim.OptimConfig.from_config(c.optim, total_steps=10)
  assert oc.lr == c.optim.lr
  with pytest.raises(ValueError, match="unknown keys"):
    optim.OptimConfig.from_config(dict(c.optim, momentum=0.9))
  with pytest.raises(ValueError, match="total_steps"):
    optim.OptimConfig(schedule="cosine")
  with pytest.raises(ValueError, match="loss"):
    learner.LearnerConfig(loss="dpo")


def _updates_per_step(c) -> int:
  lc = learner.LearnerConfig.from_config(c.rl)
  return lc.sizes(c.rl.tasks_per_step * c.rl.num_generations)[0]


def test_minibatch_counts_tasks_like_verl():
  from configs import qwen3_8b, qwen_0_5b, qwen_3b, tiny  # pylint: disable=g-import-not-at-top
  # The paper: 64 tasks x 16 rollouts, verl ppo_mini_batch_size=16 prompts -> 64 / 16 = 4 updates
  # of 16 x 16 = 256 sequences each.
  c = qwen_3b.get_config()
  assert learner.LearnerConfig.from_config(c.rl).minibatch_size == 256
  assert _updates_per_step(c) == 4
  assert _updates_per_step(qwen3_8b.get_config()) == 4  # the same recipe at 8B
  # The others keep their updates per step: base and tiny 16 / 16 = 1, 0.5B 128 / 32 = 4.
  assert _updates_per_step(base.base_config()) == 1
  assert _updates_per_step(tiny.get_config()) == 1
  assert _updates_per_step(qwen_0_5b.get_config()) == 4
  # The sequence count follows overrides of either factor (derived by the learner, no key).
  assert "minibatch_size" not in c.rl
  c.rl.num_generations = 8
  assert learner.LearnerConfig.from_config(c.rl).minibatch_size == 16 * 8
  c.rl.minibatch_tasks = 32
  assert (learner.LearnerConfig.from_config(c.rl).minibatch_size, _updates_per_step(c)) == (256, 2)


@pytest.mark.parametrize("key,value,match", [
    ("minibatch_tasks", 0, r"rl\.minibatch_tasks must be >= 1 \(an integer"),
    ("minibatch_tasks", 3, r"rl\.minibatch_tasks=3 does not divide rl\.tasks_per_step=4"),
    ("minibatch_size", 32, r"rl\.minibatch_size=32 is not a config key .* set rl\.minibatch_tasks"),
    ("clip_ratio_c", 0.5, r"rl\.clip_ratio_c must be > 1"),
])
def test_bad_rl_values_name_the_key(key, value, match):
  c = base.base_config()
  c.rl.dual_clip = True
  c.rl[key] = value
  with pytest.raises(ValueError, match=match):
    learner.LearnerConfig.from_config(c.rl)


def test_dual_clip_and_norm_tokens_from_config():
  c = base.base_config()
  assert learner.LearnerConfig.from_config(c.rl).clip_ratio_c is None
  c.rl.dual_clip = True
  assert learner.LearnerConfig.from_config(c.rl).clip_ratio_c == 3.0
  c.rl.agg = "seq-mean-token-sum-norm"
  with pytest.raises(ValueError, match="loss_norm_tokens"):  # 0 = unset, and no budget given
    learner.LearnerConfig.from_config(c.rl)
  from launch import builders  # pylint: disable=g-import-not-at-top
  assert builders.rl_learner_config(c).loss_norm_tokens == c.rollout.max_total_tokens
  c.rl.loss_norm_tokens = 512
  assert builders.rl_learner_config(c).loss_norm_tokens == 512
