"""Turn-level credit from rubric items (`rl.credit = "turn"`).

Plain GRPO gives every policy token of an episode the episode's advantage. In a multi-turn
episode most of those tokens did not decide the reward: an episode that misspelled the slot it
asked for is pushed down on its (correct) tool call and its answer text too, and the free text of
an answer nobody's rubric item depends on is pushed up or down at random. Here each rubric item
with a structured check is credited to the kind of turn that decides it:

  asked_user_for    -> "message" turns (addressed to the user: no tool calls, no <answer>)
  tool_called,
  tool_not_called   -> "tool_calls" turns
  answer_contains   -> "answer" turns
  no check (judged) -> every turn ("episode")

Each kind k gets a component reward per episode over the items credited to it, with the same
shape as the `weighted` aggregation: 0 if any of its forbidden items is violated, else the
weighted mean score of its other items (1 when it has only forbidden items). Component rewards
get group advantages like episode rewards do (same estimator, over the G samples of a task), and
a turn's advantage is the sum of the component advantages credited to it. A component whose
turn kind the episode never produced (it never asked, never answered) is credited to all of its
turns, so skipping a required step is still charged to something. `zero_unfinished` zeroes every
component of an unfinished episode.

This is a surrogate of the episode reward: each component is monotone in it, but the gate of one
component no longer zeroes the credit of another's turns.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synthagent_jax.rl import advantages as adv_lib

CREDITS = ("episode", "turn")
EPISODE = "episode"
TURN_KIND_OF_CHECK = {"asked_user_for": "message", "tool_called": "tool_calls",
                      "tool_not_called": "tool_calls", "answer_contains": "answer",
                      "no_over_asking": "message", "world_state": "tool_calls"}


def item_kinds(task) -> dict[str, str]:
  """item id -> the turn kind that decides it ("episode" for items without a check); `task` is an
  envs.task.Task (only its rubric is read)."""
  return {item.id: (TURN_KIND_OF_CHECK[item.check.type] if item.check is not None else EPISODE)
          for _, item in task.rubric.items()}


def component_rewards(task, verdicts: Sequence) -> dict[str, float]:
  """{turn kind: component reward in [0, 1]} of one episode (see the module doc).

  `verdicts` are rewards.rubric.Verdict (section, item_id, score, met); kinds without items are
  absent.
  """
  kinds = item_kinds(task)
  weights = {item.id: item.weight for _, item in task.rubric.items()}
  parts: dict[str, dict[str, list]] = {}
  for v in verdicts:
    if v.item_id not in kinds:
      raise ValueError(f"verdict for {v.item_id!r}, which is not in task {task.id!r}'s rubric")
    part = parts.setdefault(kinds[v.item_id], {"gate": [], "scored": []})
    if v.section == "forbidden":
      part["gate"].append(v.met)
    else:
      part["scored"].append((weights[v.item_id], v.score))
  out = {}
  for kind, part in parts.items():
    if not all(part["gate"]):
      out[kind] = 0.0
    elif part["scored"]:
      total = sum(w for w, _ in part["scored"])
      out[kind] = sum(w * s for w, s in part["scored"]) / total
    else:
      out[kind] = 1.0
  return out


def turn_advantages(tasks: Sequence, results: Sequence, trajectories: Sequence,
                    num_generations: int, estimator: str, zero_unfinished: bool = False):
  """Per-turn advantages of G samples per task.

  Args:
    tasks: the envs.task.Task of each group, in order (trajectories come task-major: G
      consecutive per task).
    results: rewards.rubric.RubricResult per trajectory (their verdicts).
    trajectories: rollout.trajectory.Trajectory per sample (their `turns` kinds and `status`).
    num_generations: G.
    estimator: a registered group-advantage estimator (rl/advantages.py).
    zero_unfinished: zero every component of an episode cut off by its turn or token budget.

  Returns:
    (turn_advs, zero_g): turn_advs[i] lists one advantage per turn of trajectory i; zero_g
    [num_groups] bool is True where every component of the group had equal rewards (nothing to
    learn from, like a zero-variance group under episode credit).
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


def token_advantages(trajectory, turn_advs: Sequence[float]) -> np.ndarray:
  """[len(token_ids)] float32: each turn's advantage on its sampled tokens, 0 elsewhere."""
  if len(turn_advs) != len(trajectory.turns):
    raise ValueError(f"{len(turn_advs)} turn advantages for {len(trajectory.turns)} turns")
  out = np.zeros(len(trajectory.token_ids), np.float32)
  for turn, adv in zip(trajectory.turns, turn_advs):
    out[turn.start:turn.start + turn.num_sampled] = adv
  return out
