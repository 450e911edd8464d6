"""The whole GRPO path learns a toy objective: sampler -> group advantages -> batch -> learner.

Reward = fraction of sampled tokens whose id is below 8 (of a 128-token vocabulary, so ~6 % for
the random initial policy). The real JaxEngine samples, `group_advantages` normalises per group,
`batching.to_batch` lays out (prompt, completion) with the loss mask on sampled tokens only and
the sampler's logprobs, and the jitted learner takes PPO steps; the engine reads the new params
each step. If any piece were misaligned (mask, logprob shift, advantage sign), the reward would
not rise.
"""

import jax
import numpy as np

from synthagent_jax import parallel
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from synthagent_jax.rewards import advantages
from synthagent_jax.rl import learner, optim
from synthagent_jax.rl import state as state_lib
from synthagent_jax.rollout import batching
from synthagent_jax.rollout.trajectory import Trajectory
from tests import toys

PROMPTS, G, NEW = 4, 8, 8
TARGET = 8  # rewarded token ids: 0..7


def _trajectory(prompt, completion) -> Trajectory:
  n = len(completion.token_ids)
  return Trajectory(task_id="toy", sample_index=0, token_ids=list(prompt) + completion.token_ids,
                    loss_mask=[0] * len(prompt) + [1] * n,
                    sampler_logprobs=[0.0] * len(prompt) + list(completion.logprobs),
                    prompt_len=len(prompt), messages=[], turns=[], status="answered")


def test_grpo_raises_a_toy_reward():
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-2, clip_norm=1.0))
  state, spec = state_lib.create_train_state(toys.tiny_model_config(), tx, mesh,
                                             parallel.DEFAULT_RULES, seed=0)
  cfg = learner.LearnerConfig(minibatch_size=16, micro_batch_size=16)
  step_fn = learner.make_train_step(spec, tx, cfg, mesh)
  eng = sampler.JaxEngine((spec.graphdef, state.params))
  rng = np.random.default_rng(0)
  mean_rewards = []
  for step in range(24):
    prompts = [list(rng.integers(8, 128, 4)) for _ in range(PROMPTS)]
    batch_prompts = [p for p in prompts for _ in range(G)]
    outs = eng.generate(batch_prompts, engine_lib.SamplingParams(
        max_new_tokens=NEW, temperature=1.0, seed=step))
    rewards = np.array([np.mean(np.array(c.token_ids) < TARGET) for c in outs], np.float32)
    mean_rewards.append(float(rewards.mean()))
    adv = np.asarray(advantages.group_advantages(rewards.reshape(PROMPTS, G), "grpo")).reshape(-1)
    trajs = [_trajectory(p, c) for p, c in zip(batch_prompts, outs)]
    token_advs = [a * np.asarray(t.loss_mask, np.float32) for t, a in zip(trajs, adv)]
    host = batching.to_batch(trajs, token_advs, pad_id=0, length_multiple=16, rows_multiple=16)
    state, metrics = step_fn(state, learner.make_batch(host, mesh))
    if step == 0:  # on-policy first minibatch: learner and sampler logprobs agree
      assert abs(float(metrics["learner/ratio_mean"]) - 1.0) < 0.05
    eng.update_params(state.params)
  first, last = np.mean(mean_rewards[:3]), np.mean(mean_rewards[-3:])
  assert first < 0.15, mean_rewards
  assert last > 0.6, mean_rewards  # seen: 0.07 -> 1.0 by step 18


def test_learner_scores_the_tempered_policy_the_sampler_drew_from():
  """Rollouts sampled at temperature 0.7: the learner configured with that temperature gets back
  the sampler's logprobs (its old-logprob pass, seen through the TIS weight exp(old - sampler)),
  and the plain temperature-1 policy would not."""
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-3, clip_norm=1.0))
  state, spec = state_lib.create_train_state(toys.tiny_model_config(), tx, mesh,
                                             parallel.DEFAULT_RULES, seed=1)
  eng = sampler.JaxEngine((spec.graphdef, state.params))
  prompts = [[5, 9, 17, 33], [40, 41, 42, 43]] * 4
  outs = eng.generate(prompts, engine_lib.SamplingParams(max_new_tokens=NEW, temperature=0.7,
                                                         seed=3))
  trajs = [_trajectory(p, c) for p, c in zip(prompts, outs)]
  host = batching.to_batch(trajs, [np.full(len(t.token_ids), a, np.float32) for t, a in
                                   zip(trajs, np.linspace(-1, 1, len(trajs)))],
                           pad_id=0, length_multiple=16)
  mask = host["loss_mask"].astype(bool)
  for temperature, agrees in ((0.7, True), (1.0, False)):
    logp, _ = jax.jit(learner.token_logprobs, static_argnums=(0, 4))(
        spec.graphdef, state.params, host["input_ids"], host["attention_mask"], temperature)
    gap = np.abs(np.asarray(logp)[mask] - host["sampler_logprobs"][mask]).max()
    assert (gap < 2e-4) == agrees, (temperature, gap)
  cfg = learner.LearnerConfig(temperature=0.7, is_cap=1e9)
  _, metrics = learner.make_train_step(spec, tx, cfg, mesh)(state, learner.make_batch(host, mesh))
  assert abs(float(metrics["learner/tis_weight_mean"]) - 1.0) < 1e-4
