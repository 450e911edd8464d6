"""One finished episode, exactly as the learner trains on it (token-in/token-out)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

Status = Literal["answered", "user_stopped", "max_turns", "max_steps", "context_full", "error"]
STATUSES: tuple[str, ...] = ("answered", "user_stopped", "max_turns", "max_steps", "context_full",
                             "error")


@dataclasses.dataclass
class TurnRecord:
  """One assistant turn and what the environment made of it.

  Attributes:
    index: 0-based turn number.
    kind: parse_turn's kind ("tool_calls" | "answer" | "message").
    start: offset in Trajectory.token_ids of the turn's first sampled token.
    num_sampled: sampled tokens kept for the turn (incl. its end token when finish == "stop").
    finish_reason: the engine's "stop" | "length".
    num_env_tokens: tokens appended after the turn (environment delta; 0 on the last turn).
    num_calls: well-formed tool calls; num_call_errors: malformed ones (error observations).
    errors: parse_turn's errors for the turn.
    truncated_tool_responses: tool observations cut to max_tool_response_tokens in this turn.
  """

  index: int
  kind: str
  start: int
  num_sampled: int
  finish_reason: str
  num_env_tokens: int = 0
  num_calls: int = 0
  num_call_errors: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  truncated_tool_responses: int = 0

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TurnRecord":
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class Trajectory:
  """A finished episode.

  Attributes:
    task_id, sample_index: which task, which of its G samples.
    token_ids: prompt + every turn + every environment delta, in order (len T).
    loss_mask: [T] 1 exactly on sampled tokens (incl. each turn's <|im_end|>), 0 elsewhere.
    sampler_logprobs: [T] the sampler's logprob of each sampled token, 0.0 where loss_mask is 0.
    prompt_len: tokens before the first sampled token.
    messages: the decoded conversation (system, user instruction, assistant / tool / user ...).
      When the user ends the conversation, its final message is in `messages` but has no tokens.
    turns: one TurnRecord per assistant turn.
    status: how the episode ended (STATUSES).
    error: what went wrong when status == "error" (an environment raised), else None.
    user_stop: with status "user_stopped", what the user ended with (a stop token such as
      "###TRANSFER###", or "stop" for a plain boolean stop); else None.
  """

  task_id: str
  sample_index: int
  token_ids: list[int]
  loss_mask: list[int]
  sampler_logprobs: list[float]
  prompt_len: int
  messages: list[dict]
  turns: list[TurnRecord]
  status: str
  num_turns: int = 0
  num_tool_calls: int = 0
  num_response_tokens: int = 0
  truncated_tool_responses: int = 0
  error: str | None = None
  user_stop: str | None = None

  def __post_init__(self):
    if self.status not in STATUSES:
      raise ValueError(f"Trajectory.status must be one of {STATUSES}, got {self.status!r}")
    n = len(self.token_ids)
    if len(self.loss_mask) != n or len(self.sampler_logprobs) != n:
      raise ValueError(f"Trajectory {self.task_id}#{self.sample_index}: token_ids ({n}), loss_mask "
                       f"({len(self.loss_mask)}) and sampler_logprobs ({len(self.sampler_logprobs)}) "
                       "must have the same length")
    if not 0 <= self.prompt_len <= n:
      raise ValueError(f"Trajectory.prompt_len {self.prompt_len} outside [0, {n}]")
    if any(m not in (0, 1) for m in self.loss_mask):
      raise ValueError("Trajectory.loss_mask must hold only 0 and 1")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["turns"] = [t.to_dict() for t in self.turns]
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in d and f.default is dataclasses.MISSING]
    if missing:
      raise ValueError(f"Trajectory.from_dict: missing keys {missing}")
    kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
    kwargs["turns"] = [TurnRecord.from_dict(t) for t in d["turns"]]
    return cls(**kwargs)
