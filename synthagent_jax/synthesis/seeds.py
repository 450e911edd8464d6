"""Stage 1 of the teacher pipeline: seeds (a persona and a domain), from the lists in data/seeds/."""

from __future__ import annotations

import os
import random

DEFAULT_SEEDS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "seeds")


def read_list(path: str) -> list[str]:
  """Non-empty, non-comment lines of a seed list file."""
  with open(path, encoding="utf-8") as f:
    items = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
  if not items:
    raise ValueError(f"{path}: the seed list is empty")
  return items


def make_seeds(num: int, seed: int = 0, seeds_dir: str = DEFAULT_SEEDS_DIR) -> list[dict]:
  """`num` seed records {"id", "persona", "domain"}; deterministic, ids `seed-<seed>-<i>`.

  Pairs are drawn without repetition while unused (persona, domain) pairs remain.
  """
  personas = read_list(os.path.join(seeds_dir, "personas.txt"))
  domains = read_list(os.path.join(seeds_dir, "domains.txt"))
  pairs = [(p, d) for d in domains for p in personas]
  rng = random.Random(seed)
  order = []
  while len(order) < num:
    block = pairs[:]
    rng.shuffle(block)
    order.extend(block)
  return [{"id": f"seed-{seed}-{i:06d}", "persona": p, "domain": d}
          for i, (p, d) in enumerate(order[:num])]
