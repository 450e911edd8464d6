"""Kill-and-resume: a run killed after step k and restored from its checkpoint reaches the same
parameters at step n as an uninterrupted run, bit for bit (CPU)."""

import jax
import numpy as np

from synthagent_jax.utils import checkpoint

N_STEPS, KILL_AFTER = 3, 1


def _leaves(state):
  return jax.tree.leaves(jax.device_get(state))


def test_kill_and_resume_is_bitwise_exact(learner_env, tmp_path):
  env = learner_env()

  state = env.fresh_state()
  for i in range(N_STEPS):
    state, _ = env.step(state, env.batch(seed=i))
  want = _leaves(state)

  # The interrupted run: checkpoint after KILL_AFTER steps, keep training (the step donates the
  # state's buffers while the async save may still be writing), then lose everything.
  state = env.fresh_state()
  ck = checkpoint.Checkpointer(tmp_path / "ck", keep=2)
  next_batch = 0
  for i in range(N_STEPS - 1):
    state, _ = env.step(state, env.batch(seed=next_batch))
    next_batch += 1
    if i + 1 == KILL_AFTER:
      ck.save(KILL_AFTER, state, data_state={"next_batch": next_batch},
              config={"learner": {"minibatch_size": env.cfg.minibatch_size}})
  ck.close()
  del state, ck

  ck = checkpoint.Checkpointer(tmp_path / "ck", keep=2)
  assert ck.latest_step() == KILL_AFTER
  state, data_state, config = ck.restore(abstract_state=env.spec.abstract)
  ck.close()
  assert config == {"learner": {"minibatch_size": env.cfg.minibatch_size}}
  assert int(state.step) == KILL_AFTER
  assert jax.tree.leaves(state.params)[0].sharding == jax.tree.leaves(env.spec.shardings.params)[0]
  for i in range(data_state["next_batch"], N_STEPS):
    state, _ = env.step(state, env.batch(seed=i))
  got = _leaves(state)

  assert len(got) == len(want)
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)
