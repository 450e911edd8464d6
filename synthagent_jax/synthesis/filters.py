"""Stage 7 filters: schema validation, near-duplicate removal, difficulty (pass rate in a band)."""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from synthagent_jax.envs import task as task_lib
from synthagent_jax.synthesis.teacher import Reject


def validate(record: dict) -> dict:
  """The record as a validated Task dict; Reject('schema', 'field: message') otherwise."""
  try:
    return task_lib.Task.from_dict(record).to_dict()
  except task_lib.TaskValidationError as e:
    raise Reject("schema", str(e)) from e


def shingles(instruction: str, tool_names: Iterable[str], n: int = 3) -> frozenset:
  """Word n-grams of the instruction plus one token per tool name."""
  words = re.findall(r"[a-z0-9]+", instruction.casefold())
  grams = {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
  return frozenset(grams | {f"tool:{t}" for t in tool_names})


def jaccard(a: frozenset, b: frozenset) -> float:
  return len(a & b) / len(a | b) if a or b else 1.0


class NearDupIndex:
  """Keeps shingle sets of accepted tasks; `check(task)` rejects one too close to any of them."""

  def __init__(self, threshold: float = 0.6, n: int = 3):
    if not 0.0 < threshold <= 1.0:
      raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    self.threshold, self.n = threshold, n
    self._kept: list[tuple[str, frozenset]] = []

  def key(self, task: dict) -> frozenset:
    return shingles(task["instruction"], [t["function"]["name"] for t in task["tools"]], self.n)

  def add(self, task: dict):
    self._kept.append((task["id"], self.key(task)))

  def check(self, task: dict):
    """Raises Reject('near_duplicate') if `task` is within the threshold of a kept task."""
    key = self.key(task)
    for other_id, other in self._kept:
      sim = jaccard(key, other)
      if sim >= self.threshold:
        raise Reject("near_duplicate", f"Jaccard {sim:.2f} with {other_id}")


def difficulty_filter(tasks: Sequence[dict], pass_rate: Callable[[dict, int], float],
                      num_samples: int = 8, band: tuple[float, float] = (0.0, 1.0)
                      ) -> tuple[list[dict], dict[str, list[str]]]:
  """Keeps tasks whose policy pass rate over `num_samples` samples lies strictly inside `band`
  (low, high), by default (0, 1), so GRPO groups on them carry signal. `pass_rate(task, n)`
  samples the policy n times (synthesis/difficulty.py).

  Returns (kept, {"too_easy": ids (rate >= high), "too_hard": ids (rate <= low)}).
  """
  low, high = band
  if not 0.0 <= low < high <= 1.0:
    raise ValueError(f"difficulty band must satisfy 0 <= low < high <= 1, got {band}")
  kept, dropped = [], {"too_easy": [], "too_hard": []}
  for task in tasks:
    rate = float(pass_rate(task, num_samples))
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"pass_rate returned {rate} for {task['id']}; expected a value in [0, 1]")
    if rate >= high:
      dropped["too_easy"].append(task["id"])
    elif rate <= low:
      dropped["too_hard"].append(task["id"])
    else:
      kept.append(task)
  return kept, dropped
