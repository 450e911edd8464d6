"""Held-out evaluation: k rollouts per task, rubric rewards, mean reward, pass rate and pass^k.

pass rate: fraction of episodes whose reward reaches `pass_threshold` (1.0 = every rubric item).
pass^k (tau-bench): fraction of tasks whose k episodes ALL pass, a measure of reliability.
With `zero_unfinished` (a run trained with `rl.zero_unfinished`), held-out episodes are scored
as training scores them: one cut off by its turn or token budget gets 0, and the rubric's own
mean is reported beside it (`<prefix>/rubric_reward_mean`, as training logs `rl/reward_mean`
and `rl/rubric_reward_mean`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from synthagent_jax.rewards.advantages import UNFINISHED_STATUSES


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
             prefix: str = "eval", zero_unfinished: bool = False) -> EvalResult:
  """Runs k episodes per task and scores them.

  Args:
    run_episodes: (tasks, k) -> trajectories, task-major (rollout.AgentLoop.run).
    score: (tasks, trajectories) -> results with `.reward` (rewards.rubric.score_batch over
      the trajectories' messages).
    zero_unfinished: an episode whose status is in UNFINISHED_STATUSES (it never answered)
      scores 0 in the reward, the pass rate and the returned rewards; the rubric's mean of all
      episodes is `<prefix>/rubric_reward_mean` (with `_stderr`).
  """
  if k < 1:
    raise ValueError(f"eval k must be >= 1, got {k}")
  if not tasks:
    raise ValueError("evaluate needs at least one task")
  trajectories = run_episodes(tasks, k)
  expanded = [t for t in tasks for _ in range(k)]
  results = score(expanded, trajectories)
  rubric_tk = np.asarray([r.reward for r in results], np.float64).reshape(len(tasks), k)
  statuses = [t.status for t in trajectories]
  rewards_tk = rubric_tk
  if zero_unfinished:
    cut_tk = np.asarray([s in UNFINISHED_STATUSES for s in statuses]).reshape(rubric_tk.shape)
    rewards_tk = np.where(cut_tk, 0.0, rubric_tk)
  passed_tk = rewards_tk >= pass_threshold
  n = rewards_tk.size
  stderr = lambda x: float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
  metrics = {
      f"{prefix}/reward_mean": float(rewards_tk.mean()),
      f"{prefix}/reward_stderr": stderr(rewards_tk),
      f"{prefix}/pass_rate": float(passed_tk.mean()),
      f"{prefix}/pass^{k}": pass_at_k_all(passed_tk),
      f"{prefix}/episodes": float(n),
  }
  if zero_unfinished:
    metrics[f"{prefix}/rubric_reward_mean"] = float(rubric_tk.mean())
    metrics[f"{prefix}/rubric_reward_stderr"] = stderr(rubric_tk)
  for status in sorted(set(statuses)):
    metrics[f"{prefix}/status_{status}"] = statuses.count(status) / n
  return EvalResult(metrics=metrics, trajectories=trajectories, rewards=rewards_tk,
                    results=results)


def item_rates(tasks: Sequence[Any], results: Sequence[Any], prefix: str = "eval"
               ) -> dict[str, float]:
  """Per rubric section and check type, over every such item of the episodes: the share met
  (`<prefix>/met/<section>.<type>`, a forbidden item is met when respected) and the mean item
  score (`<prefix>/score/<section>.<type>`, partial credit included). `tasks[i]` is episode i's
  task (task-major, repeated per sample), `results[i]` its RubricResult. Judged items (no
  structured check) have type "judged".

  "Tool calls that become right" reads as `met/subgoals.tool_called` rising: such an item is met
  only when a call with the right name and every required argument value was made.
  """
  if len(tasks) != len(results):
    raise ValueError(f"item_rates: {len(tasks)} tasks for {len(results)} results")
  met: dict[str, list[float]] = {}
  score: dict[str, list[float]] = {}
  for task, res in zip(tasks, results):
    for kind, v in _kinded_verdicts(task, res):
      met.setdefault(kind, []).append(float(v.met))
      score.setdefault(kind, []).append(float(v.score))
  out = {}
  for kind in sorted(met):
    out[f"{prefix}/met/{kind}"] = float(np.mean(met[kind]))
    out[f"{prefix}/score/{kind}"] = float(np.mean(score[kind]))
  return out


def _kinded_verdicts(task, result):
  """(`<section>.<check type>`, verdict) for each verdict of one episode's RubricResult."""
  kinds = {item.id: (item.check.type if item.check is not None else "judged")
           for _, item in task.rubric.items()}
  return [(f"{v.section}.{kinds.get(v.item_id, 'judged')}", v) for v in result.verdicts]


def task_items(tasks: Sequence[Any], results: Sequence[Any]) -> dict[str, dict[str, list[float]]]:
  """Per task id and item kind (as `item_rates`), the met values (1.0 / 0.0) of every such item
  over the task's episodes: the per-task rates `paired_gain` compares across evaluations (e.g.
  whether tool-call subgoals met rise GRPO - SFT, paired by task)."""
  if len(tasks) != len(results):
    raise ValueError(f"task_items: {len(tasks)} tasks for {len(results)} results")
  out: dict[str, dict[str, list[float]]] = {}
  for task, res in zip(tasks, results):
    for kind, v in _kinded_verdicts(task, res):
      out.setdefault(task.id, {}).setdefault(kind, []).append(float(v.met))
  return out


def paired_gain(new: dict[str, Sequence[float]], base: dict[str, Sequence[float]]
                ) -> tuple[float, float, int]:
  """(mean, standard error, tasks) of the per-task reward difference new - base over the tasks
  both evaluated (each side averaged over its k samples of the task). Pairing by task removes
  the task-difficulty variance two independent means would carry; the s.e. is that of the
  mean of the n differences (ddof 1; 0.0 for n < 2)."""
  ids = [i for i in new if i in base and len(new[i]) and len(base[i])]
  if not ids:
    return 0.0, 0.0, 0
  d = np.asarray([np.mean(new[i]) - np.mean(base[i]) for i in ids], np.float64)
  se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
  return float(d.mean()), se, len(d)


def paired_gain_by(group_of: dict[str, str], new: dict[str, Sequence[float]],
                   base: dict[str, Sequence[float]]
                   ) -> dict[str, tuple[float, float, int, float, float]]:
  """`paired_gain` within each group of tasks (e.g. by domain), groups sorted by name: group ->
  (gain, s.e., tasks, base mean, new mean), the means over the group's tasks both evaluated of
  each task's mean reward. Tasks missing from `group_of` or from either side are left out."""
  out = {}
  for group in sorted({group_of[i] for i in base if i in group_of}):
    ids = [i for i in base if group_of.get(i) == group and i in new and len(new[i])
           and len(base[i])]
    if not ids:
      continue
    gain, se, n = paired_gain({i: new[i] for i in ids}, {i: base[i] for i in ids})
    out[group] = (gain, se, n, float(np.mean([np.mean(base[i]) for i in ids])),
                  float(np.mean([np.mean(new[i]) for i in ids])))
  return out
