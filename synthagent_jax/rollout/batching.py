"""Trajectories -> the learner's batch dict (host numpy; see rl/learner.py for the format).

Fixed shapes: rows are right-padded to a length bucket and the row count is padded with empty
rows (attention_mask 0), so the jitted train step compiles a bounded number of times over a run.
The training loop passes `length_buckets(floor, rollout.max_total_tokens)` (powers of two from
the floor, then the cap: at most log2(cap / floor) + 2 lengths) and `rows` = the step's maximum
(tasks_per_step x num_generations, whatever groups were dropped), so a whole GRPO run compiles
its train step at most once per length bucket. The learner skips minibatches of padding only
(rl/learner.py), so padding costs no updates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synthagent_jax.rollout.trajectory import Trajectory


def round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def length_buckets(floor: int, cap: int) -> tuple[int, ...]:
  """The padded lengths a run may use: powers of two >= floor and < cap, then cap itself.

  E.g. length_buckets(128, 768) == (128, 256, 512, 768). Raises on floor < 1 or cap < 1.
  """
  if floor < 1 or cap < 1:
    raise ValueError(f"length_buckets needs floor >= 1 and cap >= 1, got {floor}, {cap}")
  out, n = [], 1 << max(0, (floor - 1).bit_length())
  while n < cap:
    out.append(n)
    n *= 2
  return tuple(out) + (cap,)


def to_batch(trajectories: Sequence[Trajectory], advantages: Sequence[np.ndarray] | None = None, *,
             pad_id: int, length_multiple: int = 128, rows_multiple: int = 1,
             max_len: int | None = None, buckets: Sequence[int] | None = None,
             rows: int | None = None) -> dict[str, np.ndarray]:
  """Stacks trajectories into [B, T] arrays.

  Args:
    trajectories: the sequences to train on (their token_ids / loss_mask / sampler_logprobs).
    advantages: per trajectory, one advantage per token (`rewards.credit.Credit.token_advantages`;
      the batch gets advantages [B, T]); None for SFT (no `advantages` key).
    pad_id: token id used for padding (attention_mask is 0 there, so its value never matters).
    length_multiple: T is the longest sequence rounded up to this (bucketing for jit).
    rows_multiple: B is rounded up to this with empty rows (e.g. the minibatch size).
    max_len: sequences longer than this raise (the rollout limits should prevent it).
    buckets: the allowed lengths (see `length_buckets`); T is the smallest one that fits the
      longest sequence (replaces length_multiple). A longer sequence raises.
    rows: a fixed row count B (>= the number of trajectories, a multiple of rows_multiple);
      None: the trajectory count rounded up to rows_multiple.
  """
  if not trajectories:
    raise ValueError("to_batch needs at least one trajectory")
  if advantages is not None and len(advantages) != len(trajectories):
    raise ValueError(f"{len(advantages)} advantages for {len(trajectories)} trajectories")
  longest = max(len(t.token_ids) for t in trajectories)
  if max_len is not None and longest > max_len:
    raise ValueError(f"a trajectory has {longest} tokens, more than max_len={max_len}")
  if buckets is not None:
    fits = [n for n in buckets if n >= longest]
    if not fits:
      raise ValueError(f"a trajectory has {longest} tokens, more than the largest length bucket "
                       f"{max(buckets)} (rollout.max_total_tokens should bound it)")
    t_len = min(fits)
  else:
    t_len = round_up(longest, length_multiple)
    if max_len is not None:
      t_len = min(t_len, max(max_len, longest))
  if rows is None:
    b = round_up(len(trajectories), rows_multiple)
  elif rows < len(trajectories) or rows % rows_multiple:
    raise ValueError(f"rows={rows} must be >= the {len(trajectories)} trajectories and a "
                     f"multiple of rows_multiple={rows_multiple}")
  else:
    b = rows
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
    batch["advantages"] = np.zeros((b, t_len), np.float32)
    for i, (traj, adv) in enumerate(zip(trajectories, advantages)):
      if np.shape(adv) != (len(traj.token_ids),):
        raise ValueError(f"trajectory {i} has {len(traj.token_ids)} tokens but advantages of "
                         f"shape {np.shape(adv)} (one per token expected)")
      batch["advantages"][i, :len(adv)] = adv
  return batch
