"""Rewards -> per-token advantages: the one stage between the rubric and the learner.

    credit = assign(tasks, results, trajectories, num_generations=G, estimator="grpo",
                    scheme="episode", zero_unfinished=False)

Trajectories come task-major (G consecutive samples per task, `AgentLoop.run`'s order), each
scored by a `rewards.rubric.RubricResult`. Whatever the scheme, the output has one shape:
`credit.token_advantages[i]` is float32 [len(trajectories[i].token_ids)], the advantage of each
token (0 on every token the policy did not sample); `rollout.batching.to_batch` stacks them into
the learner's `advantages` [B, T]. `Credit` also carries the training rewards [num_groups, G]
(after shaping), the groups with nothing to learn from, and what the rollout log reports per
episode (`episode_advantages`, and the scheme's own `log_fields`).

`zero_unfinished` is reward shaping for training only: an episode cut off by its turn or token
budget scores 0 on every component (rewards/advantages.py).

Schemes, registered by name (`rl.credit`, registry CREDITS):

  episode  every sampled token of an episode gets the episode's group advantage (GRPO); the
           one-component case of `turn`.
  turn     each rubric item with a structured check is credited to the kind of turn that
           decides it:
             asked_user_for, no_over_asking  -> "message" turns (to the user: no calls, no answer)
             tool_called, tool_not_called,
             world_state                     -> "tool_calls" turns
             answer_contains                 -> "answer" turns
             no check (judged)               -> every turn ("episode")
           Each kind k gets a component reward per episode over the items credited to it: the
           `weighted` aggregation of those items (0 if any of its forbidden items is violated,
           else the weighted mean score of its other items), 1 when it has only forbidden items.
           Component rewards get group advantages like episode rewards do (same estimator, over
           the G samples of a task), and a turn's advantage is the sum of the component
           advantages credited to it. A component whose turn kind the episode never produced
           (it never asked, never answered) is credited to all of its turns, so skipping a
           required step is still charged to something. The rollout log gets each turn's
           advantage (`turn_advantages`) and, as the episode's, their mean.

Turn credit is a surrogate of the episode reward: each component is monotone in it, but the gate
of one component no longer zeroes the credit of another's turns.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from synthagent_jax.envs.task import Task
from synthagent_jax.rewards import advantages as adv_lib
from synthagent_jax.rewards import aggregation as agg_lib
from synthagent_jax.rewards import checks
from synthagent_jax.rewards.rubric import RubricResult, Verdict
from synthagent_jax.rollout.trajectory import Trajectory

EPISODE = "episode"


@dataclasses.dataclass(frozen=True)
class Credit:
  """The stage's output for n = num_groups x G trajectories (task-major).

  Attributes:
    token_advantages: per trajectory, float32 [len(token_ids)]: its advantage on sampled tokens,
      0 elsewhere.
    rewards_gn: float32 [num_groups, G] training rewards (the rubric's, after zero_unfinished).
    zero_groups: bool [num_groups], True where no sample of the group differs from the others in
      what the scheme rewards (nothing to learn from; the loop may drop such groups).
    episode_advantages: [n] floats, the advantage the rollout log reports per episode.
    log_fields: per episode, the scheme's extra rollout-log fields (e.g. `turn_advantages`).
  """

  token_advantages: list[np.ndarray]
  rewards_gn: np.ndarray
  zero_groups: np.ndarray
  episode_advantages: np.ndarray
  log_fields: list[dict]


# f(tasks, results, trajectories, rewards_gn, estimator, zero_unfinished) -> Credit, where
# rewards_gn are the training rewards (already shaped by zero_unfinished).
Scheme = Callable[..., Credit]
CREDITS: dict[str, Scheme] = {}


def register(name: str):
  """Decorator: registers a credit scheme under `name` (duplicates refused)."""

  def deco(fn: Scheme) -> Scheme:
    if name in CREDITS:
      raise ValueError(f"credit scheme {name!r} registered twice")
    CREDITS[name] = fn
    return fn

  return deco


def get(name: str) -> Scheme:
  if name not in CREDITS:
    raise ValueError(f"unknown credit scheme {name!r}; known: {', '.join(sorted(CREDITS))}")
  return CREDITS[name]


def assign(tasks: Sequence[Task], results: Sequence[RubricResult],
           trajectories: Sequence[Trajectory], *, num_generations: int, estimator: str,
           scheme: str = EPISODE, zero_unfinished: bool = False) -> Credit:
  """Per-token advantages of G samples per task (see the module doc).

  Raises:
    ValueError: an unknown scheme or estimator, or results / trajectories that do not number
      len(tasks) x num_generations.
  """
  fn, g = get(scheme), num_generations
  if len(results) != len(tasks) * g or len(trajectories) != len(results):
    raise ValueError(f"{len(tasks)} tasks x G={g} needs {len(tasks) * g} results and "
                     f"trajectories, got {len(results)} and {len(trajectories)}")
  rewards_gn = np.asarray([r.reward for r in results], np.float32).reshape(len(tasks), g)
  if zero_unfinished:
    statuses_gn = [[t.status for t in trajectories[i * g:(i + 1) * g]] for i in range(len(tasks))]
    rewards_gn = np.asarray(adv_lib.zero_unfinished(rewards_gn, statuses_gn))
  return fn(tasks, results, trajectories, rewards_gn, estimator, zero_unfinished)


@register(EPISODE)
def episode_credit(tasks, results, trajectories, rewards_gn, estimator, zero_unfinished) -> Credit:
  """The episode's group advantage on each of its sampled tokens."""
  del tasks, results, zero_unfinished  # the shaped rewards say it all
  adv_n = np.asarray(adv_lib.group_advantages(rewards_gn, estimator)).reshape(-1)
  tokens = [np.where(np.asarray(t.loss_mask, bool), a, np.float32(0.0)).astype(np.float32)
            for t, a in zip(trajectories, adv_n)]
  return Credit(tokens, rewards_gn, np.asarray(adv_lib.zero_variance_groups(rewards_gn)),
                adv_n.astype(np.float32), [{} for _ in trajectories])


@register("turn")
def turn_credit(tasks, results, trajectories, rewards_gn, estimator, zero_unfinished) -> Credit:
  """Each turn's advantage on its sampled tokens (the sum of the components credited to it)."""
  turn_advs, zero_g = turn_advantages(tasks, results, trajectories, rewards_gn.shape[1], estimator,
                                      zero_unfinished)
  episode_n = np.asarray([np.mean(a) if a else 0.0 for a in turn_advs], np.float64)
  return Credit([token_advantages(t, a) for t, a in zip(trajectories, turn_advs)], rewards_gn,
                zero_g, episode_n, [{"turn_advantages": a} for a in turn_advs])


def item_kinds(task: Task) -> dict[str, str]:
  """item id -> the turn kind that decides it ("episode" for items without a check)."""
  return {item.id: (checks.CHECKS[item.check.type].turn_kind if item.check is not None else EPISODE)
          for _, item in task.rubric.items()}


def component_rewards(task: Task, verdicts: Sequence[Verdict]) -> dict[str, float]:
  """{turn kind: component reward in [0, 1]} of one episode (see the module doc); kinds without
  items are absent."""
  kinds = item_kinds(task)
  weights = {item.id: item.weight for _, item in task.rubric.items()}
  parts: dict[str, dict[str, list]] = {}
  for v in verdicts:
    if v.item_id not in kinds:
      raise ValueError(f"verdict for {v.item_id!r}, which is not in task {task.id!r}'s rubric")
    parts.setdefault(kinds[v.item_id], {}).setdefault(v.section, []).append(
        (weights[v.item_id], v.score, v.met))
  out = {}
  for kind, sections in parts.items():
    scored = any(s != "forbidden" for s in sections)
    gate = all(met for _, _, met in sections.get("forbidden", ()))
    out[kind] = agg_lib.weighted(sections) if scored else float(gate)
  return out


def turn_advantages(tasks: Sequence[Task], results: Sequence[RubricResult],
                    trajectories: Sequence[Trajectory], num_generations: int, estimator: str,
                    zero_unfinished: bool = False):
  """Per-turn advantages of G samples per task (the `turn` scheme before tokens).

  Args:
    tasks: the Task of each group, in order (trajectories come task-major).
    results: RubricResult per trajectory (their verdicts).
    trajectories: Trajectory per sample (their `turns` kinds and `status`).
    num_generations: G.
    estimator: a registered group-advantage estimator (rewards/advantages.py).
    zero_unfinished: zero every component of an episode cut off by its turn or token budget.

  Returns:
    (turn_advs, zero_g): turn_advs[i] lists one advantage per turn of trajectory i; zero_g
    [num_groups] bool is True where every component of the group had equal rewards.
  """
  g = num_generations
  if len(results) != len(tasks) * g or len(trajectories) != len(results):
    raise ValueError(f"{len(tasks)} tasks x G={g} needs {len(tasks) * g} results and "
                     f"trajectories, got {len(results)} and {len(trajectories)}")
  turn_advs: list[list[float]] = []
  zero_g = np.ones(len(tasks), bool)
  for j, task in enumerate(tasks):
    group = range(j * g, (j + 1) * g)
    comps = [component_rewards(task, results[i].verdicts) for i in group]
    kinds = sorted(comps[0])
    if any(sorted(c) != kinds for c in comps):
      raise ValueError(f"task {task.id!r}: samples were scored on different rubric items")
    rewards_gk = np.asarray([[c[k] for k in kinds] for c in comps], np.float32).reshape(g, -1)
    if zero_unfinished:
      cut = [trajectories[i].status in adv_lib.UNFINISHED_STATUSES for i in group]
      rewards_gk[np.asarray(cut, bool)] = 0.0
    if rewards_gk.shape[1]:
      adv_kg = np.asarray(adv_lib.group_advantages(rewards_gk.T, estimator))
      zero_g[j] = bool(np.all(adv_lib.zero_variance_groups(rewards_gk.T)))
    else:
      adv_kg = np.zeros((0, g), np.float32)
    for n, i in enumerate(group):
      turn_kinds = [t.kind for t in trajectories[i].turns]
      advs = np.zeros(len(turn_kinds), np.float64)
      for k, kind in enumerate(kinds):
        hit = np.asarray([kind in (EPISODE, tk) for tk in turn_kinds], bool)
        if kind != EPISODE and not hit.any():
          hit[:] = True  # the episode never made this kind of turn: charge all of them
        advs[hit] += float(adv_kg[k, n])
      turn_advs.append([float(a) for a in advs])
  return turn_advs, zero_g


def token_advantages(trajectory: Trajectory, turn_advs: Sequence[float]) -> np.ndarray:
  """[len(token_ids)] float32: each turn's advantage on its sampled tokens, 0 elsewhere."""
  if len(turn_advs) != len(trajectory.turns):
    raise ValueError(f"{len(turn_advs)} turn advantages for {len(trajectory.turns)} turns")
  out = np.zeros(len(trajectory.token_ids), np.float32)
  for turn, adv in zip(trajectory.turns, turn_advs):
    out[turn.start:turn.start + turn.num_sampled] = adv
  return out
