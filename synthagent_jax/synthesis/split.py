"""Held-out split by task-id hash: the same id always lands on the same side, in every process.

The trainer trains on `not is_heldout(id, frac)` and evaluates on the rest, so training never
sees an evaluation task whatever order or file the tasks come in.
"""

from __future__ import annotations

import hashlib


def heldout_score(task_id: str) -> float:
  """A uniform number in [0, 1) fixed by the id (first 8 bytes of its SHA-256)."""
  digest = hashlib.sha256(task_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(task_id: str, frac: float) -> bool:
  """Whether `task_id` belongs to the held-out (evaluation) split of fraction `frac`."""
  if not 0.0 <= frac <= 1.0:
    raise ValueError(f"held-out fraction must be in [0, 1], got {frac}")
  return heldout_score(task_id) < frac


def split_paths(out_path: str) -> tuple[str, str]:
  """'dir/offline.jsonl' -> ('dir/offline_train.jsonl', 'dir/offline_eval.jsonl')."""
  stem = out_path[:-len(".jsonl")] if out_path.endswith(".jsonl") else out_path
  return f"{stem}_train.jsonl", f"{stem}_eval.jsonl"
