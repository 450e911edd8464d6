"""Crash-safe JSONL output for synthesis runs: append + flush + fsync per record, resume by id.

A run killed mid-write leaves at most one partial last line; `load_done` cuts it off (and only
it), so a rerun continues from the last finished record and never writes an id twice.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable

from synthagent_jax.synthesis import split as split_lib


def load_done(path: str) -> list[dict]:
  """Finished records in `path` (empty if it does not exist). Repairs a torn last line.

  Raises ValueError for a malformed line that is not the last one: that is not a crash artefact
  and silently dropping it would lose a finished task.
  """
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  records, offset = [], 0
  lines = data.split(b"\n")
  for i, line in enumerate(lines):
    is_last = i == len(lines) - 1
    if line.strip():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        if not is_last:
          raise ValueError(f"{path}:{i + 1}: malformed JSON in the middle of the file: {e}") from e
        with open(path, "r+b") as f:  # a torn final write: cut it off
          f.truncate(offset)
        break
      if is_last:  # complete JSON but no newline: finish the line
        with open(path, "ab") as f:
          f.write(b"\n")
    offset += len(line) + 1
  return records


class JsonlAppender:
  """Appends one JSON record per line; each write is flushed and fsynced before returning."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self._f = open(path, "a", encoding="utf-8")

  def write(self, record: dict):
    self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
    self._f.flush()
    os.fsync(self._f.fileno())

  def close(self):
    self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def write_splits(records: Iterable[dict], out_path: str, eval_frac: float,
                 key: Callable[[dict], str] = lambda r: r["id"]) -> tuple[str, str, int, int]:
  """Writes `<stem>_train.jsonl` and `<stem>_eval.jsonl` next to `out_path` (atomic replace).

  Returns (train_path, eval_path, num_train, num_eval).
  """
  train_path, eval_path = split_lib.split_paths(out_path)
  counts = [0, 0]
  tmp = [f"{p}.tmp.{os.getpid()}" for p in (train_path, eval_path)]
  with open(tmp[0], "w", encoding="utf-8") as ft, open(tmp[1], "w", encoding="utf-8") as fe:
    for r in records:
      held = split_lib.is_heldout(key(r), eval_frac)
      (fe if held else ft).write(json.dumps(r, ensure_ascii=False) + "\n")
      counts[int(held)] += 1
  os.replace(tmp[0], train_path)
  os.replace(tmp[1], eval_path)
  return train_path, eval_path, counts[0], counts[1]
