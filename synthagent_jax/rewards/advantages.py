"""Group-relative advantage estimators, registered by name.

Rewards come shaped [num_groups, G]: row g holds the rewards of the G samples drawn for one task.
Every estimator maps that to advantages of the same shape; `rewards/credit.py` (the reward ->
advantage stage) spreads them over the tokens the learner trains on.

  grpo    (r - mean) / (std_ddof1 + 1e-6)          (Shao et al., 2024)
  drgrpo  r - mean                                  (Liu et al., 2025, "Dr. GRPO")
  rloo    r - mean of the other G - 1 samples       (Ahmadian et al., 2024)

`zero_variance_groups` flags groups whose samples all scored the same; their advantages are zero
under every estimator, so the loop can drop them (DAPO dynamic sampling) and report the fraction.
`zero_unfinished` is reward shaping for training only: an episode cut off by its turn or token
budget scores 0 whatever its rubric said (DAPO's overlong penalty, at its hard end).
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp

GRPO_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Estimator:
  """A registered estimator: `fn(rewards_gn) -> advantages_gn` and the smallest group it needs."""

  fn: Callable[[jnp.ndarray], jnp.ndarray]
  min_group: int = 1


ESTIMATORS: dict[str, Estimator] = {}


def register(name: str, min_group: int = 1):
  """Decorator: registers `f(rewards_gn) -> advantages_gn` under `name` (duplicates refused);
  `min_group` is the smallest G it is defined for."""

  def wrap(fn):
    if name in ESTIMATORS:
      raise ValueError(f"advantage estimator {name!r} is already registered")
    ESTIMATORS[name] = Estimator(fn, min_group)
    return fn

  return wrap


def get(name: str) -> Estimator:
  if name not in ESTIMATORS:
    raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ESTIMATORS)}")
  return ESTIMATORS[name]


@register("grpo", min_group=2)
def grpo(rewards_gn: jnp.ndarray) -> jnp.ndarray:
  mean_g1 = rewards_gn.mean(axis=1, keepdims=True)
  std_g1 = rewards_gn.std(axis=1, ddof=1, keepdims=True)
  return (rewards_gn - mean_g1) / (std_g1 + GRPO_EPS)


@register("drgrpo")
def drgrpo(rewards_gn: jnp.ndarray) -> jnp.ndarray:
  return rewards_gn - rewards_gn.mean(axis=1, keepdims=True)


@register("rloo", min_group=2)
def rloo(rewards_gn: jnp.ndarray) -> jnp.ndarray:
  g = rewards_gn.shape[1]
  others_mean_gn = (rewards_gn.sum(axis=1, keepdims=True) - rewards_gn) / (g - 1)
  return rewards_gn - others_mean_gn


def group_advantages(rewards_gn, estimator: str) -> jnp.ndarray:
  """Advantages [num_groups, G] (float32) from rewards [num_groups, G] with a registered estimator.

  Raises:
    ValueError: unknown estimator, rewards not 2-D, a group too small for the estimator (grpo and
      rloo need G >= 2), or non-finite rewards.
  """
  entry = get(estimator)
  rewards_gn = jnp.asarray(rewards_gn, jnp.float32)
  if rewards_gn.ndim != 2:
    raise ValueError(f"rewards must be [num_groups, G], got shape {rewards_gn.shape}")
  if rewards_gn.shape[1] < entry.min_group:
    raise ValueError(f"estimator {estimator!r} needs groups of at least {entry.min_group} "
                     f"samples, got G={rewards_gn.shape[1]}")
  if not bool(jnp.all(jnp.isfinite(rewards_gn))):
    raise ValueError("rewards contain NaN or inf")
  return entry.fn(rewards_gn)


def zero_variance_groups(rewards_gn, atol: float = 1e-6) -> jnp.ndarray:
  """Bool [num_groups]: True where all of a group's rewards are within `atol` of each other."""
  rewards_gn = jnp.asarray(rewards_gn, jnp.float32)
  if rewards_gn.ndim != 2:
    raise ValueError(f"rewards must be [num_groups, G], got shape {rewards_gn.shape}")
  return (rewards_gn.max(axis=1) - rewards_gn.min(axis=1)) <= atol


UNFINISHED_STATUSES = ("max_turns", "context_full")


def zero_unfinished(rewards_gn, statuses_gn) -> jnp.ndarray:
  """Rewards [num_groups, G] with 0 wherever the episode's status is one of UNFINISHED_STATUSES.

  Without it, a rubric whose items can be met mid-episode (asked the user, best tool call so far)
  pays an episode that never answers as much as one that does, and the policy drifts towards
  asking and calling until it runs out of turns.
  """
  rewards_gn = jnp.asarray(rewards_gn, jnp.float32)
  if rewards_gn.ndim != 2:
    raise ValueError(f"rewards must be [num_groups, G], got shape {rewards_gn.shape}")
  flat = [s for row in statuses_gn for s in row]
  if len(statuses_gn) != rewards_gn.shape[0] or len(flat) != rewards_gn.size:
    raise ValueError(f"statuses must match rewards' shape {rewards_gn.shape}")
  cut_gn = jnp.asarray([s in UNFINISHED_STATUSES for s in flat]).reshape(rewards_gn.shape)
  return jnp.where(cut_gn, 0.0, rewards_gn)
