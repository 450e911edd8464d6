"""Crash-safe JSONL output for synthesis runs: append + flush + fsync per record, resume by id.

A run killed mid-write leaves at most one partial last line (torn anywhere, even inside a
multi-byte UTF-8 character); `load_done` cuts it off (and only it), so a rerun continues from the
last finished record and never writes an id twice. `OutputLock` makes one run at a time the
writer of an output file: a second run on the same file fails at once instead of writing every
task a second time.
"""

from __future__ import annotations

import errno
import fcntl
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
      except ValueError as e:  # bad JSON, or bytes that are not UTF-8 (a torn character)
        if not is_last:
          raise ValueError(f"{path}:{i + 1}: malformed JSON line in the middle of the file "
                           f"({e.__class__.__name__}: {e})") from None
        with open(path, "r+b") as f:  # a torn final write: cut it off
          f.truncate(offset)
        break
      if is_last:  # complete JSON but no newline: finish the line
        with open(path, "ab") as f:
          f.write(b"\n")
    offset += len(line) + 1
  return records


class OutputLocked(RuntimeError):
  """Another process holds the output file's lock."""


class OutputLock:
  """An exclusive, non-blocking `flock` on `<path>.lock`, held while a run writes `path`.

  The kernel drops the lock when its holder exits, even by SIGKILL, so a killed run never leaves
  a stale lock behind; the lock file itself stays (removing it would let two runs lock two
  different files). Use as a context manager, or `acquire()` / `release()`.
  """

  def __init__(self, path: str):
    self.path = path
    self.lock_path = f"{path}.lock"
    self._fd: int | None = None

  def acquire(self) -> "OutputLock":
    os.makedirs(os.path.dirname(os.path.abspath(self.lock_path)), exist_ok=True)
    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise OutputLocked(f"{self.path} is being written by another run (pid {holder} holds "
                           f"{self.lock_path}); wait for it to finish or choose another output"
                           ) from None
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor releases the flock
      self._fd = None

  def __enter__(self) -> "OutputLock":
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


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
