"""One rollout log line per scored episode: the record `utils.metrics.RolloutLogger` writes to
`<workdir>/rollouts/step_XXXXXX.jsonl` (format in docs/SPECS.md, "Rollout log line"; checked by
`utils.metrics.validate_rollout_record`).

The record joins what rollout/ knows of an episode (its `Trajectory`) with what rewards/ made of it
(reward, advantage, the rubric `Verdict`s, each in its own `Verdict.to_dict` shape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from synthagent_jax.rewards.rubric import Verdict
from synthagent_jax.rollout.trajectory import Trajectory
from synthagent_jax.utils import metrics as metrics_lib


def _field(trajectory: Trajectory | Mapping[str, Any], name: str) -> Any:
  if isinstance(trajectory, Mapping):
    return trajectory.get(name)
  return getattr(trajectory, name, None)


def rollout_record(step: int, trajectory: Trajectory | Mapping[str, Any], *, domain: str,
                   reward: float, advantage: float,
                   verdicts: Iterable[Verdict | Mapping[str, Any]] = ()) -> dict:
  """Builds one rollout log line from a Trajectory (or its `to_dict` form).

  Reads task_id, sample_index, messages, status, num_turns, num_tool_calls and
  num_response_tokens from `trajectory`; `verdicts` are rubric Verdicts (written as
  `Verdict.to_dict()`) or verdict dicts already in that shape. A non-empty `trajectory.error`
  (status "error") is kept as an extra "error" field. Raises ValueError when the line breaks the
  log format.
  """
  rec = {
      "step": int(step),
      "task_id": str(_field(trajectory, "task_id")),
      "sample_index": int(_field(trajectory, "sample_index")),
      "domain": str(domain),
      "messages": list(_field(trajectory, "messages")),
      "status": str(_field(trajectory, "status")),
      "num_turns": int(_field(trajectory, "num_turns")),
      "num_tool_calls": int(_field(trajectory, "num_tool_calls")),
      "response_tokens": int(_field(trajectory, "num_response_tokens")),
      "reward": float(reward),
      "advantage": float(advantage),
      "verdicts": [v.to_dict() if isinstance(v, Verdict) else dict(v) for v in verdicts],
  }
  error = _field(trajectory, "error")
  if error:
    rec["error"] = str(error)
  metrics_lib.validate_rollout_record(rec)
  return rec
