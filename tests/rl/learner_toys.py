"""Learner test helpers: one toy model, rollout-like batches, states and steps compiled once per
(mesh, config) and shared by tests/rl and tests/parallel (also imported by the multi-process
worker). Compiling a train step is the expensive part on the shared CPU."""

import functools

import jax
import numpy as np

from synthagent_jax import parallel
from synthagent_jax.rl import learner, optim
from synthagent_jax.rl import state as state_lib
from tests import toys

B, T = 16, 10


def make_host_batch(seed: int = 0, b: int = B, t: int = T, vocab: int = 128) -> dict:
  """A random rollout-like batch: right padding, policy tokens after a 3-token prompt."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(t // 2, t + 1, size=b)
  attn = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
  loss_mask = attn.copy()
  loss_mask[:, :3] = 0
  loss_mask &= (rng.random((b, t)) < 0.8).astype(np.int32)
  return dict(input_ids=rng.integers(0, vocab, (b, t)) * attn, attention_mask=attn,
              loss_mask=loss_mask,
              advantages=np.repeat(rng.normal(size=(b, 1)).astype(np.float32), t, axis=1),
              sampler_logprobs=(np.log(rng.uniform(0.01, 0.05, (b, t))) * loss_mask))


class Env:
  """A mesh with its TrainState spec, an initial state (host copy) and a compiled step."""

  def __init__(self, shape, learner_cfg, optim_cfg=None, seed=0):
    n = int(np.prod(shape))
    self.mesh = parallel.make_mesh(parallel.MeshConfig(shape=shape), jax.devices()[:n])
    self.model_cfg = toys.tiny_model_config()
    self.tx = optim.make_optimizer(optim_cfg or optim.OptimConfig(lr=1e-2, clip_norm=1.0))
    state, self.spec = state_lib.create_train_state(self.model_cfg, self.tx, self.mesh,
                                                    parallel.DEFAULT_RULES, seed=seed)
    self.host_state = jax.device_get(state)
    self.cfg = learner_cfg
    self.step = learner.make_train_step(self.spec, self.tx, learner_cfg, self.mesh)

  def fresh_state(self):
    return jax.device_put(self.host_state, self.spec.shardings)

  def batch(self, seed=0, **kw):
    return learner.make_batch(make_host_batch(seed, **kw), self.mesh, self.cfg.loss)


DEFAULT_LEARNER = learner.LearnerConfig(minibatch_size=8, micro_batch_size=4)


@functools.lru_cache(maxsize=None)
def _cached_env(shape, learner_cfg) -> Env:
  return Env(shape, learner_cfg)


def get_env(shape=(1, 1, 1), learner_cfg=DEFAULT_LEARNER) -> Env:
  """The Env of (mesh shape, learner config), built once per process."""
  return _cached_env(tuple(shape), learner_cfg)
