"""DAPO dynamic sampling: sample rounds of groups until a step has enough informative ones.

A GRPO group whose G rewards are all equal has zero advantage everywhere, so it contributes no
gradient; dropping it shrinks the step's batch. DAPO (Yu et al., 2025, sec. 3.2, "dynamic
sampling") instead keeps generating: it over-samples prompts, filters out the zero-variance
groups, and generates again until the batch holds the wanted number of groups with non-zero
reward variance; verl bounds the repeats (`algorithm.filter_groups.max_num_gen_batches`).

`fill` is that loop with the sampling and the scoring left to the caller: one round is one call
of `sample_round(r)` (fresh tasks, G episodes each, scored), `informative(round)` flags its
groups, and the first `want` informative groups in sampling order are kept. After `max_rounds`
rounds a step keeps what it has (`short` counts the missing groups), so a policy that solves or
fails everything cannot loop forever. `max_rounds = 1` is plain GRPO with zero-variance groups
dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence


@dataclasses.dataclass
class Filled:
  """What `fill` sampled and kept.

  Attributes:
    rounds: every round's result, in sampling order.
    kept: (round index, group index within the round) of each kept group, in sampling order;
      at most `want` of them.
    want: groups the step asked for.
    sampled_groups: groups sampled over all rounds.
    informative_groups: of those, the ones with non-zero reward variance.
  """

  rounds: list[Any]
  kept: list[tuple[int, int]]
  want: int
  sampled_groups: int
  informative_groups: int

  @property
  def short(self) -> int:
    """Groups the step still lacked when the rounds ran out."""
    return self.want - len(self.kept)

  def metrics(self, prefix: str = "rl/dynamic") -> dict[str, float]:
    return {
        f"{prefix}_rounds": float(len(self.rounds)),
        f"{prefix}_groups_sampled": float(self.sampled_groups),
        f"{prefix}_frac_informative": self.informative_groups / max(self.sampled_groups, 1),
        f"{prefix}_groups_short": float(self.short),
    }


def fill(sample_round: Callable[[int], Any], informative: Callable[[Any], Sequence[bool]],
         want: int, max_rounds: int) -> Filled:
  """Calls `sample_round(0), sample_round(1), ...` until `want` informative groups are in hand or
  `max_rounds` rounds were drawn; keeps the first `want` informative groups."""
  if want < 1:
    raise ValueError(f"dynamic sampling needs want >= 1 groups, got {want}")
  if max_rounds < 1:
    raise ValueError(f"dynamic sampling needs max_rounds >= 1, got {max_rounds}")
  rounds: list[Any] = []
  kept: list[tuple[int, int]] = []
  sampled = good = 0
  while len(rounds) < max_rounds and len(kept) < want:
    r = len(rounds)
    result = sample_round(r)
    flags = [bool(f) for f in informative(result)]
    rounds.append(result)
    sampled += len(flags)
    good += sum(flags)
    kept += [(r, g) for g, f in enumerate(flags) if f][:want - len(kept)]
  return Filled(rounds=rounds, kept=kept, want=want, sampled_groups=sampled,
                informative_groups=good)
