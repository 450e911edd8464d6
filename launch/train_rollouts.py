"""The rollout half of a GRPO step (wiring for `launch/train_loop.py`): G episodes per task,
rubric rewards and their credit (`rewards/credit.assign`), DAPO dynamic sampling rounds
(`rl.dynamic_sampling`, rollout/dynamic_sampling.py), the step's rollout metrics and its rollout
log. Runs on the driver (process 0); `share_rounds` keeps the other processes' task streams in
step."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from launch import builders
from launch.train_run import Run, score
from synthagent_jax import parallel
from synthagent_jax.rewards import credit as credit_lib
from synthagent_jax.rewards import rollout_log
from synthagent_jax.rollout import dynamic_sampling
from synthagent_jax.rollout.agent_loop import AgentLoop
from synthagent_jax.rollout.trajectory import STATUSES


def rollout_and_score(run: Run, loop: AgentLoop, tasks, step: int, round_index: int = 0):
  """G rollouts per task, rubric results, their `credit_lib.Credit` (per-token advantages and
  training rewards) and the dropped-group mask [num_groups]. `round_index` > 0 (a dynamic
  sampling round after the first) draws from its own seed."""
  cfg = run.config.rl
  g = cfg.num_generations
  seed_parts = (run.config.seed, "rollout", step) + ((round_index,) if round_index else ())
  trajs = loop.run(tasks, g, seed=builders.stable_seed(*seed_parts))
  results = score(run, [t for t in tasks for _ in range(g)], trajs)
  credit = credit_lib.assign(tasks, results, trajs, num_generations=g, estimator=cfg.advantage,
                             scheme=cfg.credit, zero_unfinished=cfg.zero_unfinished)
  dropped_g = credit.zero_groups if cfg.drop_zero_variance else np.zeros(len(tasks), bool)
  return trajs, results, credit, dropped_g


@dataclasses.dataclass
class Round:
  """One sampling round of a GRPO step: its tasks, their G episodes each, scored and credited."""

  tasks: list
  trajs: list
  results: list
  credit: Any          # credit_lib.Credit
  dropped_g: np.ndarray
  stats: Any           # the loop's LoopStats of this round


def sample_rounds(run: Run, loop: AgentLoop, next_tasks, step: int) -> dynamic_sampling.Filled:
  """The step's rollouts: one round, or under `rl.dynamic_sampling` rounds of fresh tasks (each
  `next_tasks()`) until `rl.tasks_per_step` groups with non-zero reward variance are in hand or
  `rl.dynamic_max_rounds` rounds were drawn (DAPO; rollout/dynamic_sampling.py). Without it the
  kept groups are the undropped ones of the single round (plain GRPO)."""
  cfg = run.config.rl

  def one_round(r):
    tasks = next_tasks()
    trajs, results, credit, dropped_g = rollout_and_score(run, loop, tasks, step, r)
    return Round(tasks, trajs, results, credit, dropped_g, dataclasses.replace(loop.stats))

  return dynamic_sampling.fill(one_round, lambda rd: ~rd.dropped_g, cfg.tasks_per_step,
                               cfg.dynamic_max_rounds if cfg.dynamic_sampling else 1)


def share_rounds(filled) -> int:
  """The number of sampling rounds the driver drew (`filled` is None off the driver), on every
  process: the others advance their task stream as many batches, so the data state stays in
  step. A collective in a multi-process run."""
  n = np.asarray([0 if filled is None else len(filled.rounds)], np.int64)
  if jax.process_count() > 1:
    n = parallel.broadcast_from_process0(n)
  return int(n[0])


def combine_rounds(filled, g: int) -> dict:
  """Every round's tasks, trajectories, results, training rewards [groups, G], dropped groups and
  per-token advantages, task-major in sampling order; their summed LoopStats; and `kept`, the
  trajectory indices of the groups the step trains on."""
  rounds = filled.rounds
  stats = dataclasses.replace(rounds[0].stats)
  for rd in rounds[1:]:
    for f in dataclasses.fields(stats):
      setattr(stats, f.name, getattr(stats, f.name) + getattr(rd.stats, f.name))
  offsets = np.cumsum([0] + [len(rd.tasks) for rd in rounds])
  return dict(
      tasks=[t for rd in rounds for t in rd.tasks],
      trajs=[t for rd in rounds for t in rd.trajs],
      results=[r for rd in rounds for r in rd.results],
      rewards_gn=np.concatenate([rd.credit.rewards_gn for rd in rounds]),
      dropped_g=np.concatenate([rd.dropped_g for rd in rounds]),
      advs=[a for rd in rounds for a in rd.credit.token_advantages],
      stats=stats,
      kept=[int(offsets[r] + grp) * g + j for r, grp in filled.kept for j in range(g)])


def rollout_metrics(trajs, rewards_gn, dropped_g, results, stats) -> dict:
  n = len(trajs)
  m = {
      "rl/reward_mean": float(rewards_gn.mean()),  # the training reward (after any shaping)
      "rl/rubric_reward_mean": float(np.mean([r.reward for r in results])),
      "rl/reward_std": float(rewards_gn.std()),
      "rl/frac_groups_dropped": float(dropped_g.mean()),
      "rl/pass_rate": float((rewards_gn >= 1 - 1e-6).mean()),
      "rollout/response_tokens_mean": float(np.mean([t.num_response_tokens for t in trajs])),
      "rollout/length_mean": float(np.mean([len(t.token_ids) for t in trajs])),
      "rollout/turns_mean": float(np.mean([t.num_turns for t in trajs])),
      "rollout/tool_calls_mean": float(np.mean([t.num_tool_calls for t in trajs])),
      "rollout/judge_failures": float(sum(getattr(r, "judge_failures", 0) for r in results)),
      "perf/rollout_s": stats.total_s,
      "perf/generate_frac": stats.generate_s / max(stats.total_s, 1e-9),
      "perf/sampled_tokens_per_s": stats.sampled_tokens / max(stats.generate_s, 1e-9),
  }
  for status in STATUSES:
    m[f"rollout/status_{status}"] = sum(t.status == status for t in trajs) / n
  return m


def log_rollouts(run: Run, logger, step: int, rounds):
  """Every episode of every sampling round of the step: its rollout record, its advantage and its
  credit scheme's fields (`turn_advantages` under turn credit)."""
  g = run.config.rl.num_generations
  records = []
  for rd in rounds:
    for i, (traj, res) in enumerate(zip(rd.trajs, rd.results)):
      task, adv = rd.tasks[i // g], float(rd.credit.episode_advantages[i])
      rec = rollout_log.rollout_record(step, traj, domain=task.domain, reward=res.reward,
                                       advantage=adv, verdicts=res.verdicts)
      rec.update(rd.credit.log_fields[i])
      records.append(rec)
  logger.write(step, records)
