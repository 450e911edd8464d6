"""Held-out evaluation: k rollouts per task, rubric rewards, mean reward, pass rate and pass^k.

pass rate: fraction of episodes whose reward reaches `pass_threshold` (1.0 = every rubric item).
pass^k (tau-bench): fraction of tasks whose k episodes ALL pass, a measure of reliability.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass
class EvalResult:
  metrics: dict[str, float]
  trajectories: list[Any]
  rewards: np.ndarray  # [num_tasks, k]
  results: list[Any]   # RubricResult per trajectory, task-major


def pass_at_k_all(passed_tk: np.ndarray) -> float:
  """pass^k: the share of tasks (rows) where every one of the k samples passed."""
  return float(np.mean(np.all(passed_tk, axis=1))) if passed_tk.size else 0.0


def evaluate(run_episodes: Callable[[Sequence[Any], int], list[Any]],
             score: Callable[[Sequence[Any], Sequence[Any]], list[Any]],
             tasks: Sequence[Any], k: int, pass_threshold: float = 1.0 - 1e-6,
             prefix: str = "eval") -> EvalResult:
  """Runs k episodes per task and scores them.

  Args:
    run_episodes: (tasks, k) -> trajectories, task-major (rollout.AgentLoop.run).
    score: (tasks, trajectories) -> results with `.reward` (rewards.rubric.score_batch over
      the trajectories' messages).
  """
  if k < 1:
    raise ValueError(f"eval k must be >= 1, got {k}")
  if not tasks:
    raise ValueError("evaluate needs at least one task")
  trajectories = run_episodes(tasks, k)
  expanded = [t for t in tasks for _ in range(k)]
  results = score(expanded, trajectories)
  rewards_tk = np.asarray([r.reward for r in results], np.float64).reshape(len(tasks), k)
  passed_tk = rewards_tk >= pass_threshold
  n = rewards_tk.size
  metrics = {
      f"{prefix}/reward_mean": float(rewards_tk.mean()),
      f"{prefix}/reward_stderr": float(rewards_tk.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
      f"{prefix}/pass_rate": float(passed_tk.mean()),
      f"{prefix}/pass^{k}": pass_at_k_all(passed_tk),
      f"{prefix}/episodes": float(n),
  }
  statuses = [t.status for t in trajectories]
  for status in sorted(set(statuses)):
    metrics[f"{prefix}/status_{status}"] = statuses.count(status) / n
  return EvalResult(metrics=metrics, trajectories=trajectories, rewards=rewards_tk,
                    results=results)
