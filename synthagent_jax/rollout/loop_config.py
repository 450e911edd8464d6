"""The agent loop's settings (`AgentLoopConfig`, the `rollout` config section, validated once) and
what one `AgentLoop.run` measured (`LoopStats`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.models import chat_format as cf

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that completes the user's request with the tools provided. "
    "If information you need is missing, ask the user for it in a short message. "
    "When the request is complete, give your final answer inside <answer></answer>.")


@dataclasses.dataclass(frozen=True)
class AgentLoopConfig:
  """Limits and sampling for the agent loop.

  Attributes:
    max_turns: assistant turns per episode; reaching it without an answer ends with "max_turns".
    max_new_tokens: sampled tokens per assistant turn.
    max_total_tokens: cap on a trajectory's length (prompt + turns + env deltas); "context_full".
    max_tool_response_tokens: each tool observation is cut to this many tokens (recorded).
    temperature, top_p, top_k, seed: passed to SamplingParams (the seed is varied per round).
    system_prompt: the system message placed before the tool schemas.
    compact_tools: render tools with `chat_format.compact_tool_schema` (about half the prompt
      tokens; for small-context policies trained from scratch) instead of full JSON schemas.
    end_of_turn: the token that ends an assistant turn (the engine's stop token).
    answer_to_user: an <answer> turn goes to the UserEnv like a message instead of ending the
      episode (multi-turn benchmarks whose user asks again after each reply).
    max_steps_per_user_turn: assistant turns allowed between two user messages; one more ends the
      episode with status "max_steps" (0 = no limit).
  """

  max_turns: int = 8
  max_new_tokens: int = 256
  max_total_tokens: int = 4096
  max_tool_response_tokens: int = 512
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  seed: int = 0
  system_prompt: str = DEFAULT_SYSTEM_PROMPT
  compact_tools: bool = False
  end_of_turn: str = cf.IM_END
  answer_to_user: bool = False
  max_steps_per_user_turn: int = 0

  def __post_init__(self):
    for name in ("max_turns", "max_new_tokens", "max_total_tokens", "max_tool_response_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"AgentLoopConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.max_steps_per_user_turn < 0:
      raise ValueError("AgentLoopConfig.max_steps_per_user_turn must be >= 0 (0 = no limit), got "
                       f"{self.max_steps_per_user_turn}")
    # Validates temperature / top_p / top_k with SamplingParams' own messages.
    SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)

  @classmethod
  def from_mapping(cls, section: Mapping[str, Any], **overrides: Any) -> "AgentLoopConfig":
    """From a config section (a dict or the `rollout` ml_collections.ConfigDict) plus keyword
    overrides (e.g. seed=step). A key that is not a field is an error, never ignored."""
    values = {**dict(section), **overrides}
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"AgentLoopConfig: unknown keys {unknown}; known: {sorted(fields)}")
    return cls(**values)


@dataclasses.dataclass
class LoopStats:
  """Where one `run` spent its time and tokens (seconds, token counts)."""

  generate_s: float = 0.0
  env_s: float = 0.0
  total_s: float = 0.0
  rounds: int = 0
  prefill_tokens: int = 0  # prompt tokens sent to the engine, summed over rounds (re-prefill)
  sampled_tokens: int = 0
