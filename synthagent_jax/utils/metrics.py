"""Metric and rollout writers for a training workdir.

Layout written here (everything else in the workdir belongs to other writers):

    <workdir>/metrics.jsonl            one JSON line per `MetricWriter.write`:
                                       {"step": int, "time": float (unix seconds), "<ns>/<name>": float}
    <workdir>/tensorboard/             TensorBoard event files with the same scalars
    <workdir>/rollouts/step_XXXXXX.jsonl   one line per episode (format in `ROLLOUT_FIELDS`;
                                       built by rewards/rollout_log.rollout_record)

Only process 0 writes (`jax.process_index() == 0`); on other processes every writer method is a
no-op, so the training loop calls them unconditionally.

Non-finite values (a NaN loss) are kept: JSON has no NaN, so they are written as `null` and read
back as `float("nan")` by `read_metrics`. The rollout log does the same anywhere in a record (a
NaN reward, an Infinity inside a message's tool-call arguments): every non-finite float is written
as `null`; `read_rollouts` reads a null reward / advantage / verdict score back as NaN. Whatever a
policy emits, its episode can be logged.

Resuming: `MetricWriter(workdir, resume_step=s)` (or `truncate_after(s)`) drops the lines of steps
> s before appending, so a resumed curve has no duplicates, and TensorBoard gets `purge_step=s+1`
so it hides the stale events too. A trailing half-written line left by a killed run is dropped
with a logged warning; a malformed line anywhere else is an error.
"""

from __future__ import annotations

import json
import math
import operator
import os
import pathlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthagent_jax.utils import jsonl

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
ROLLOUTS_DIR = "rollouts"

# Keys every rollout log line carries (docs/SPECS.md, "Rollout log line") and their JSON types.
ROLLOUT_FIELDS: dict[str, tuple[type, ...]] = {
    "step": (int,),
    "task_id": (str,),
    "sample_index": (int,),
    "domain": (str,),
    "messages": (list,),
    "status": (str,),
    "num_turns": (int,),
    "num_tool_calls": (int,),
    "response_tokens": (int,),
    "reward": (int, float),
    "advantage": (int, float),
    "verdicts": (list,),
}
VERDICT_FIELDS: dict[str, tuple[type, ...]] = {
    "section": (str,),
    "id": (str,),
    "text": (str,),
    "met": (bool,),
    "score": (int, float),
    "source": (str,),
}

_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-^]+(/[A-Za-z0-9_.\-^]+)+$")
_ROLLOUT_FILE_RE = re.compile(r"^step_(\d+)\.jsonl$")


def _default_process_index() -> int:
  import jax  # Local import: reading metrics must not need jax initialised.
  return jax.process_index()


def _to_float(key: str, value: Any) -> float:
  """Converts a python/numpy/jax scalar (or one-element array) to float; else a clear error."""
  if isinstance(value, bool):
    return float(value)
  try:
    if hasattr(value, "shape"):  # numpy / jax array: one element of any rank.
      array = np.asarray(value)
      if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise TypeError
      value = array.reshape(())
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(
        f"metric {key!r}: expected a scalar number, got {type(value).__name__} {value!r:.80}"
    ) from None


def _as_step(step: Any) -> int:
  """A non-negative python/numpy/jax integer -> int; anything else (bool, float) is an error."""
  try:
    if isinstance(step, bool):
      raise TypeError
    value = operator.index(step)
  except TypeError:
    raise ValueError(f"step must be a non-negative int, got {step!r}") from None
  if value < 0:
    raise ValueError(f"step must be a non-negative int, got {value}")
  return value


def _json_number(x: float) -> float | None:
  return x if math.isfinite(x) else None


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """Reads `<workdir>/metrics.jsonl` -> list of {"step", "time", key: float} in file order.

  `null` values (non-finite when written) come back as NaN. A missing file gives [].
  """
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records, _ = jsonl.read_jsonl(path)
  for i, rec in enumerate(records):
    if not isinstance(rec.get("step"), int):
      raise ValueError(f"{path}: record {i + 1} has no integer 'step': {rec!r:.200}")
    for k, v in rec.items():
      if v is None:
        rec[k] = math.nan
  return records


def metric_series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of every record that has `key`, in order; NaN values are kept."""
  steps, values = [], []
  for rec in records:
    if key in rec:
      steps.append(int(rec["step"]))
      values.append(float(rec[key]))
  return steps, values


def last_values(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """The last logged value of every key (keys logged at different cadences, e.g. eval/*)."""
  out: dict[str, float] = {}
  for rec in records:
    out.update(rec)
  return out


class MetricWriter:
  """Writes namespaced scalars per step to metrics.jsonl and TensorBoard (process 0 only).

  Usage:
      writer = MetricWriter(workdir, resume_step=restored_step)   # None for a fresh run
      writer.write(step, {"rl/reward_mean": 0.4, "learner/loss": 1.2})
      writer.close()
  """

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None,
               process_index: int | None = None, tensorboard: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / METRICS_FILE
    self.active = (_default_process_index() if process_index is None else process_index) == 0
    self._tensorboard = tensorboard
    self._tb = None
    self._purge_step: int | None = None
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      self.truncate_after(resume_step)
    elif self.path.exists():
      self._drop_partial_tail()

  def _drop_partial_tail(self) -> None:
    """Cuts a half-written last line so the next append starts on a fresh line."""
    _, valid_end = jsonl.read_jsonl(self.path)
    if valid_end < self.path.stat().st_size:
      with open(self.path, "r+b") as f:
        f.truncate(valid_end)

  def truncate_after(self, step: int) -> int:
    """Drops metrics.jsonl lines with step > `step`; later TensorBoard events are purged too.

    Returns the number of lines dropped. Call it when resuming from a checkpoint at `step`.
    """
    if not self.active:
      return 0
    step = _as_step(step)
    dropped = 0
    if self.path.exists():
      records, _ = jsonl.read_jsonl(self.path)
      keep = [r for r in records if int(r.get("step", -1)) <= step]
      dropped = len(records) - len(keep)
      jsonl.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
    self._purge_step = step + 1
    if self._tb is not None:  # Reopen so the purge marker is written now.
      self._tb.close()
      self._tb = None
    return dropped

  def _tb_writer(self):
    if self._tb is None:
      from tensorboardX import SummaryWriter
      # tensorboardX names files by the second; a unique suffix keeps a writer reopened within
      # the same second (fast resume) from overwriting the previous file.
      self._tb = SummaryWriter(logdir=str(self.workdir / TENSORBOARD_DIR),
                               purge_step=self._purge_step, flush_secs=30,
                               filename_suffix=f".{os.getpid()}.{time.time_ns()}")
      self._purge_step = None
    return self._tb

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends one line {"step", "time", **scalars}; keys must look like "namespace/name".

    Values may be python, numpy or jax scalars (one element). The line is flushed at once.
    """
    if not self.active:
      return
    step = _as_step(step)
    values: dict[str, float] = {}
    for key, value in scalars.items():
      if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"metric key {key!r} must be namespaced like 'rl/reward_mean'")
      values[key] = _to_float(key, value)
    line = {"step": step, "time": time.time()}
    line.update({k: _json_number(v) for k, v in values.items()})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(line, allow_nan=False) + "\n")
      f.flush()
    if self._tensorboard:
      tb = self._tb_writer()
      for key, value in values.items():
        tb.add_scalar(key, value, global_step=step)
      tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def validate_rollout_record(rec: Mapping[str, Any]) -> None:
  """Raises ValueError naming the first field of `rec` that breaks the rollout log format."""
  for key, types in ROLLOUT_FIELDS.items():
    if key not in rec:
      raise ValueError(f"rollout record lacks field {key!r} (has {sorted(rec)})")
    value = rec[key]
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
      raise ValueError(f"rollout record field {key!r}: expected {'/'.join(t.__name__ for t in types)}, "
                       f"got {type(value).__name__}")
  for i, verdict in enumerate(rec["verdicts"]):
    if not isinstance(verdict, Mapping):
      raise ValueError(f"rollout record verdicts[{i}] is not an object")
    for key, types in VERDICT_FIELDS.items():
      value = verdict.get(key)
      if key not in verdict or (isinstance(value, bool) and bool not in types) or not isinstance(
          value, types):
        raise ValueError(f"rollout record verdicts[{i}] field {key!r}: expected "
                         f"{'/'.join(t.__name__ for t in types)}, got {value!r:.80}")


def rollout_path(workdir: str | os.PathLike, step: int) -> pathlib.Path:
  return pathlib.Path(workdir) / ROLLOUTS_DIR / f"step_{step:06d}.jsonl"


def list_rollout_steps(workdir: str | os.PathLike) -> list[int]:
  """Sorted steps that have a rollouts/step_XXXXXX.jsonl file."""
  root = pathlib.Path(workdir) / ROLLOUTS_DIR
  if not root.is_dir():
    return []
  steps = [int(m.group(1)) for p in root.iterdir() if (m := _ROLLOUT_FILE_RE.match(p.name))]
  return sorted(steps)


def read_rollouts(workdir: str | os.PathLike, step: int) -> list[dict]:
  """Reads one step's rollout log; every line is checked against the format."""
  path = rollout_path(workdir, step)
  if not path.exists():
    raise FileNotFoundError(f"no rollout log for step {step}: {path} "
                            f"(steps logged: {list_rollout_steps(workdir)})")
  records, _ = jsonl.read_jsonl(path)
  for i, rec in enumerate(records):
    for key in ("reward", "advantage"):  # written as null when non-finite
      if key in rec and rec[key] is None:
        rec[key] = math.nan
    for verdict in rec.get("verdicts") if isinstance(rec.get("verdicts"), list) else ():
      if isinstance(verdict, dict) and "score" in verdict and verdict["score"] is None:
        verdict["score"] = math.nan
    try:
      validate_rollout_record(rec)
    except ValueError as e:
      raise ValueError(f"{path}:{i + 1}: {e}") from None
  return records


class RolloutLogger:
  """Writes `<workdir>/rollouts/step_XXXXXX.jsonl`, one line per episode (process 0 only).

  A step's file is written whole and atomically, so rewriting a step after a resume replaces it
  rather than duplicating episodes.
  """

  def __init__(self, workdir: str | os.PathLike, *, process_index: int | None = None):
    self.workdir = pathlib.Path(workdir)
    self.active = (_default_process_index() if process_index is None else process_index) == 0

  def write(self, step: int, records: Sequence[Mapping[str, Any]]) -> pathlib.Path | None:
    """Validates and writes `records` (rollout log lines, see rewards/rollout_log) for `step`."""
    if not self.active:
      return None
    step = _as_step(step)
    for i, rec in enumerate(records):
      try:
        validate_rollout_record(rec)
      except ValueError as e:
        raise ValueError(f"step {step} record {i}: {e}") from None
      if rec["step"] != step:
        raise ValueError(f"step {step} record {i} has step {rec['step']}")
    path = rollout_path(self.workdir, step)
    jsonl.atomic_write_text(path, "".join(json.dumps(jsonl.finite_json(r), allow_nan=False) + "\n"
                                     for r in records))
    return path

  def truncate_after(self, step: int) -> list[int]:
    """Deletes the logs of steps > `step` (resume); returns the steps removed."""
    if not self.active:
      return []
    step = _as_step(step)
    removed = [s for s in list_rollout_steps(self.workdir) if s > step]
    for s in removed:
      rollout_path(self.workdir, s).unlink()
    return removed
