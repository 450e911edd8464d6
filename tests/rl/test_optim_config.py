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
  assert (lc.minibatch_size, lc.micro_batch_size, lc.tis_cap) == (16, 8, None)
  oc = optim.OptimConfig.from_config(c.optim, total_steps=10)
  assert oc.lr == c.optim.lr
  with pytest.raises(ValueError, match="unknown keys"):
    optim.OptimConfig.from_config(dict(c.optim, momentum=0.9))
  with pytest.raises(ValueError, match="total_steps"):
    optim.OptimConfig(schedule="cosine")
  with pytest.raises(ValueError, match="loss"):
    learner.LearnerConfig(loss="dpo")
