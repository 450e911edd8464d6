"""bf16 compute keeps fp32 master weights; remat changes memory, not the update."""

import dataclasses

import jax
import numpy as np
import pytest

from synthagent_jax import parallel
from synthagent_jax.rl import learner, optim
from synthagent_jax.rl import state as state_lib
from tests import toys
from tests.rl.learner_toys import DEFAULT_LEARNER, make_host_batch


def _train(model_cfg, n_steps=2):
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-2))
  state, spec = state_lib.create_train_state(model_cfg, tx, mesh, parallel.DEFAULT_RULES)
  step = learner.make_train_step(spec, tx, dataclasses.replace(DEFAULT_LEARNER, loss="sft"), mesh)
  losses = []
  for _ in range(n_steps):
    # One batch throughout, so the second loss (after one update) is comparable to the first.
    state, m = step(state, learner.make_batch(make_host_batch(0), mesh, loss="sft"))
    losses.append(float(m["learner/loss"]))
  return jax.device_get(state), losses


@pytest.mark.slow
def test_bf16_compute_fp32_master_and_remat():
  base = toys.tiny_model_config()
  ref_state, ref_losses = _train(base)
  bf16_state, bf16_losses = _train(base.replace(dtype="bfloat16", remat="full"))
  remat_state, remat_losses = _train(base.replace(remat="full"))
  for leaf in jax.tree.leaves(bf16_state.params):
    assert leaf.dtype == np.float32  # master weights stay fp32
  for leaf in jax.tree.leaves(bf16_state.opt_state):
    assert leaf.dtype in (np.float32, np.int32)
  np.testing.assert_allclose(bf16_losses, ref_losses, rtol=2e-2)
  np.testing.assert_allclose(remat_losses, ref_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(ref_state.params), jax.tree.leaves(remat_state.params)):
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
  assert ref_losses[1] < ref_losses[0]  # one SFT update lowers the loss on its batch
