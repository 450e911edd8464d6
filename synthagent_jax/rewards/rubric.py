"""Rubric reward: structured checks in code, the rest by a batched judge, then an aggregation.

    result = score(task, messages, judge=None, aggregation="synthagent")
    results = score_batch(tasks, list_of_messages, judge, aggregation="synthagent",
                          partial_credit=False)

Items with a `check` are decided by `rewards.checks` (source "check"; with `partial_credit`, a
tool_called item that is not met still scores the fraction of name + arguments its best call got
right, see `checks.check_score`; the check's `detail` goes into the verdict). Items without one go to the
judge in ONE `judge.judge(...)` call for the whole batch (source "judge"); an item the judge could
not grade scores 0 and is counted in `judge_failures`. With `judge=None`, such items score 0 with
source "unjudged" and are counted in `num_unjudged` (configure a judge to grade them).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from synthagent_jax.envs.task import Task
from synthagent_jax.rewards import aggregation as agg_lib
from synthagent_jax.rewards import checks as checks_lib
from synthagent_jax.rewards.judge import Judge, JudgeRequest


@dataclasses.dataclass(frozen=True)
class Verdict:
  section: str  # subgoals | interactions | forbidden
  item_id: str
  text: str
  met: bool
  score: float  # in [0, 1]
  source: str  # check | judge | unjudged
  detail: dict | None = None  # what the check saw (asks: asked / needed / revealed; state diff)

  def to_dict(self) -> dict:
    """The rollout-log shape: {"section", "id", "text", "met", "score", "source"[, "detail"]}."""
    out = {"section": self.section, "id": self.item_id, "text": self.text, "met": self.met,
           "score": self.score, "source": self.source}
    if self.detail is not None:
      out["detail"] = self.detail
    return out


@dataclasses.dataclass(frozen=True)
class RubricResult:
  reward: float
  verdicts: list[Verdict]
  judge_failures: int = 0
  num_unjudged: int = 0


def aggregate(task: Task, verdicts: Sequence[Verdict], aggregation: str = "synthagent") -> float:
  fn = agg_lib.get(aggregation)
  weights = {item.id: item.weight for _, item in task.rubric.items()}
  sections: dict[str, list[tuple[float, float, bool]]] = {}
  for v in verdicts:
    sections.setdefault(v.section, []).append((weights[v.item_id], v.score, v.met))
  return float(fn(sections))


def score_batch(tasks: Sequence[Task], conversations: Sequence[Sequence[dict]],
                judge: Judge | None = None, aggregation: str = "synthagent",
                partial_credit: bool = False) -> list[RubricResult]:
  """Scores many trajectories; all judge items of the batch go to the judge in one call."""
  if len(tasks) != len(conversations):
    raise ValueError(f"{len(tasks)} tasks but {len(conversations)} conversations")
  agg_lib.get(aggregation)  # Fail on a bad name before any judging.
  verdicts: list[list[Verdict | None]] = []
  requests, request_of = [], []
  for t, (task, messages) in enumerate(zip(tasks, conversations)):
    row: list[Verdict | None] = []
    pending = []
    for section, item in task.rubric.items():
      if item.check is not None:
        o = checks_lib.outcome(item.check, task, messages, partial_credit)
        row.append(Verdict(section, item.id, item.text, o.met, o.score, "check", o.detail))
      else:
        row.append(None)
        pending.append((section, item))
    verdicts.append(row)
    if pending and judge is not None:
      requests.append(JudgeRequest(task=task, messages=messages, items=pending))
      request_of.append(t)
  judged = judge.judge(requests) if requests else []
  if len(judged) != len(requests):
    raise RuntimeError(f"judge returned {len(judged)} results for {len(requests)} requests")
  failures = [0] * len(tasks)
  for t, req, scores in zip(request_of, requests, judged):
    if len(scores) != len(req.items):
      raise RuntimeError(f"judge returned {len(scores)} scores for {len(req.items)} items")
    by_id = {item.id: s for (_, item), s in zip(req.items, scores)}
    for k, v in enumerate(verdicts[t]):
      if v is None:
        section, item = tasks[t].rubric.items()[k]
        s = by_id[item.id]
        failures[t] += int(not s.ok)
        score = float(min(max(s.score, 0.0), 1.0)) if s.ok else 0.0
        verdicts[t][k] = Verdict(section, item.id, item.text, bool(s.met and s.ok), score,
                                 "judge")
  results = []
  for t, task in enumerate(tasks):
    unjudged = 0
    row = []
    for k, v in enumerate(verdicts[t]):
      if v is None:
        section, item = task.rubric.items()[k]
        v = Verdict(section, item.id, item.text, False, 0.0, "unjudged")
        unjudged += 1
      row.append(v)
    results.append(RubricResult(reward=aggregate(task, row, aggregation), verdicts=row,
                                judge_failures=failures[t], num_unjudged=unjudged))
  return results


def score(task: Task, messages: Sequence[dict], judge: Judge | None = None,
          aggregation: str = "synthagent", partial_credit: bool = False) -> RubricResult:
  return score_batch([task], [messages], judge, aggregation, partial_credit)[0]
