"""The LM head at the trained positions only (rl/logprobs.token_logprobs with `needed_bt`): the
same log-probs, entropies and gradients there as the head at every position, zeros elsewhere, on
every gather size and on the fallback; and the learner's step the same either way."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from synthagent_jax import parallel
from synthagent_jax.models import qwen
from synthagent_jax.rl import learner
from synthagent_jax.rl import logprobs
from synthagent_jax.rl import state as state_lib
from tests import toys
from tests.rl.learner_toys import make_host_batch

B, T = 3, 10


def test_head_sizes():
  assert logprobs.head_sizes(0.5, 30) == [3, 7, 15]
  assert logprobs.head_sizes(0.5, 4) == [1, 2]  # 0.5 and 1 of a position: one size dropped
  assert logprobs.head_sizes(0.0, 30) == []     # off: every position
  assert logprobs.head_sizes(1.0, 30) == [7, 15]  # the whole batch is the fallback itself


def _needed(count: int, seed: int) -> np.ndarray:
  """A [B, T] mask with `count` needed tokens at random positions >= 1 (they shift to
  count positions of the head: token t's log-prob is read at position t - 1)."""
  rng = np.random.RandomState(seed)
  flat = rng.choice(B * (T - 1), count, replace=False)
  needed = np.zeros((B, T), np.float32)
  needed[flat // (T - 1), 1 + flat % (T - 1)] = 1.0
  return needed


# Gather sizes 3, 7 and 15 of the 30 positions; 20 needed positions fall back to every one.
@pytest.mark.parametrize("count,tied", [(2, True), (5, False), (12, True), (20, False)])
def test_head_at_needed_positions_matches_every_position(count, tied):
  model = qwen.with_config(toys.tiny_model(seed=7, tie_word_embeddings=tied), head_fraction=0.5,
                           logprob_chunk=4)
  graphdef, params = state_lib.split_params(model)
  batch = make_host_batch(seed=8, b=B, t=T)
  ids = jnp.asarray(batch["input_ids"], jnp.int32)
  mask = jnp.asarray(batch["attention_mask"], jnp.int32)
  needed = jnp.asarray(_needed(count, count))
  w_bt = jnp.asarray(np.random.RandomState(1).randn(B, T), jnp.float32) * needed

  def run(needed_bt):
    return jax.jit(functools.partial(logprobs.token_logprobs, graphdef, temperature=0.7,
                                     needed_bt=needed_bt))(params, ids, mask)
  (lp_all, ent_all), (lp_at, ent_at) = run(None), run(needed)
  at = np.asarray(needed) > 0
  np.testing.assert_allclose(np.asarray(lp_at)[at], np.asarray(lp_all)[at], atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(ent_at)[at], np.asarray(ent_all)[at], atol=1e-5, rtol=0)
  if count <= 15:  # gathered: nothing computed at the other positions
    assert not np.asarray(lp_at)[~at].any() and not np.asarray(ent_at)[~at].any()
  else:  # above the largest size: the head ran everywhere
    np.testing.assert_array_equal(np.asarray(lp_at), np.asarray(lp_all))

  def loss(params, needed_bt):
    return (logprobs.token_logprobs(graphdef, params, ids, mask, 0.7, needed_bt)[0] * w_bt).sum()
  g_all = jax.jit(jax.grad(loss), static_argnums=1)(params, None)
  g_at = jax.jit(jax.grad(loss))(params, needed)
  leaves = jax.tree.leaves(g_all)
  assert max(float(jnp.abs(g).max()) for g in leaves) > 1e-3  # a real gradient to compare
  for got, want in zip(jax.tree.leaves(g_at), leaves):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_policy_step_is_the_same_with_the_head_at_trained_positions():
  """The learner passes the loss mask as `needed_bt`: one PPO step of two minibatches (so old
  log-probs are computed first) gives the same loss and params with head_fraction 0.5 and 0."""
  batch = make_host_batch(seed=9, b=4, t=T)
  thin = np.random.default_rng(0).random((4, T)) < 0.5
  batch["loss_mask"] = batch["loss_mask"] * thin  # <= half of each 2-row minibatch: gathered
  assert 0 < batch["loss_mask"].sum() <= 2 * T // 2 * 2
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optax.sgd(0.5)
  out = {}
  for frac in (0.0, 0.5):
    model_cfg = toys.tiny_model_config(head_fraction=frac)
    state, spec = state_lib.create_train_state(model_cfg, tx, mesh, parallel.DEFAULT_RULES, seed=3)
    step = learner.make_train_step(spec, tx, learner.LearnerConfig(minibatch_size=2), mesh)
    state, metrics = step(state, learner.make_batch(batch, mesh))
    out[frac] = (jax.device_get(state.params), float(metrics["learner/loss"]))
  assert out[0.0][1] == pytest.approx(out[0.5][1], rel=1e-5, abs=1e-7)
  for got, want in zip(jax.tree.leaves(out[0.5][0]), jax.tree.leaves(out[0.0][0])):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
