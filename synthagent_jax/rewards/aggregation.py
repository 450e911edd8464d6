"""Rubric aggregation formulas, registered by name (`aggregation` in the reward config).

Each takes per-section lists of (weight, score, met) and returns a reward in [0, 1]. Section
ratios use the item scores (1/0 for checks and parsed verdicts; P(yes) for the in-process judge),
weighted by item weight; the forbidden gates count `met` (respected) items.

  synthagent  the paper's gated preset (below)
  binary      "task completed": 1 when every subgoal is met and every forbidden item respected
  weighted    partial credit per item, zeroed by any forbidden violation

Empty sections: no forbidden items = no gate; no interaction items = the subgoal ratio alone
(synthagent); a rubric always has subgoals (the Task schema requires one). An item the judge could
not grade arrives as (weight, 0.0, False): it counts as not met in every preset (docs/recipe.md).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

Entry = tuple[float, float, bool]  # (weight, score in [0, 1], met)
Sections = Mapping[str, Sequence[Entry]]

AGGREGATIONS: dict[str, Callable[[Sections], float]] = {}


def register(name: str):
  def deco(fn):
    if name in AGGREGATIONS:
      raise ValueError(f"aggregation {name!r} registered twice")
    AGGREGATIONS[name] = fn
    return fn
  return deco


def get(name: str) -> Callable[[Sections], float]:
  if name not in AGGREGATIONS:
    raise ValueError(f"unknown aggregation {name!r}; known: {', '.join(sorted(AGGREGATIONS))}")
  return AGGREGATIONS[name]


def ratio(entries: Sequence[Entry]) -> float | None:
  """Weighted mean score, or None for an empty section."""
  total = sum(w for w, _, _ in entries)
  return None if not entries else sum(w * s for w, s, _ in entries) / total


@register("synthagent")
def synthagent(sections: Sections) -> float:
  """0 if fewer than half of the forbidden items are respected or the subgoal ratio is below 0.3;
  else 0.7 * subgoal ratio + 0.3 * interaction ratio (just the subgoal ratio when the task has no
  interaction items)."""
  forbidden = sections.get("forbidden", ())
  if forbidden and sum(1 for _, _, met in forbidden if met) < len(forbidden) / 2:
    return 0.0
  sub = ratio(sections.get("subgoals", ())) or 0.0
  if sub < 0.3:
    return 0.0
  inter = ratio(sections.get("interactions", ()))
  return sub if inter is None else 0.7 * sub + 0.3 * inter


@register("binary")
def binary(sections: Sections) -> float:
  """1.0 if the task was completed (every subgoal met) without breaking a rule (every forbidden
  item respected), else 0.0; interaction items do not enter. `met` decides, not P(yes) scores."""
  if not all(met for _, _, met in sections.get("forbidden", ())):
    return 0.0
  subgoals = sections.get("subgoals", ())
  return 1.0 if subgoals and all(met for _, _, met in subgoals) else 0.0


@register("weighted")
def weighted(sections: Sections) -> float:
  """0 if any forbidden item is violated, else sum(weight * score) / sum(weight) over the subgoal
  and interaction items."""
  if any(not met for _, _, met in sections.get("forbidden", ())):
    return 0.0
  entries = list(sections.get("subgoals", ())) + list(sections.get("interactions", ()))
  return ratio(entries) or 0.0
