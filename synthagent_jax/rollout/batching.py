"""Trajectories -> the learner's batch dict (host numpy; see rl/learner.py for the format).

Rows are right-padded to a bucketed length and the row count is rounded up to a multiple of the
minibatch size with empty rows (loss_mask 0), so the jitted train step sees few distinct shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synthagent_jax.rollout.trajectory import Trajectory


def round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def to_batch(trajectories: Sequence[Trajectory], advantages: Sequence[float] | None = None, *,
             pad_id: int, length_multiple: int = 128, rows_multiple: int = 1,
             max_len: int | None = None) -> dict[str, np.ndarray]:
  """Stacks trajectories into [B, T] arrays.

  Args:
    trajectories: the sequences to train on (their token_ids / loss_mask / sampler_logprobs).
    advantages: one per trajectory (policy loss): a float (broadcast over its tokens; the batch
      gets advantages [B]) or, for every trajectory, an array of one per token (the batch gets
      advantages [B, T]; see rl/credit.py); None for SFT (no `advantages` key).
    pad_id: token id used for padding (attention_mask is 0 there, so its value never matters).
    length_multiple: T is the longest sequence rounded up to this (bucketing for jit).
    rows_multiple: B is rounded up to this with empty rows (e.g. the minibatch size).
    max_len: sequences longer than this raise (the rollout limits should prevent it).
  """
  if not trajectories:
    raise ValueError("to_batch needs at least one trajectory")
  if advantages is not None and len(advantages) != len(trajectories):
    raise ValueError(f"{len(advantages)} advantages for {len(trajectories)} trajectories")
  longest = max(len(t.token_ids) for t in trajectories)
  if max_len is not None and longest > max_len:
    raise ValueError(f"a trajectory has {longest} tokens, more than max_len={max_len}")
  t_len = round_up(longest, length_multiple)
  if max_len is not None:
    t_len = min(t_len, max(max_len, longest))
  b = round_up(len(trajectories), rows_multiple)
  batch = {
      "input_ids": np.full((b, t_len), pad_id, np.int32),
      "attention_mask": np.zeros((b, t_len), np.int32),
      "loss_mask": np.zeros((b, t_len), np.int32),
      "sampler_logprobs": np.zeros((b, t_len), np.float32),
  }
  for i, traj in enumerate(trajectories):
    n = len(traj.token_ids)
    batch["input_ids"][i, :n] = traj.token_ids
    batch["attention_mask"][i, :n] = 1
    batch["loss_mask"][i, :n] = traj.loss_mask
    batch["sampler_logprobs"][i, :n] = traj.sampler_logprobs
  if advantages is not None:
    per_token = [np.ndim(a) == 1 for a in advantages]
    if all(per_token):
      batch["advantages"] = np.zeros((b, t_len), np.float32)
      for i, (traj, adv) in enumerate(zip(trajectories, advantages)):
        if len(adv) != len(traj.token_ids):
          raise ValueError(f"trajectory {i} has {len(traj.token_ids)} tokens but "
                           f"{len(adv)} per-token advantages")
        batch["advantages"][i, :len(adv)] = adv
    elif not any(per_token):
      batch["advantages"] = np.zeros((b,), np.float32)
      batch["advantages"][:len(trajectories)] = np.asarray(advantages, np.float32)
    else:
      raise ValueError("advantages must be all per-sequence floats or all per-token arrays")
  return batch
