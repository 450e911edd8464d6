"""The environment contracts the agent loop calls through.

`rollout/agent_loop.py` only knows these two protocols, so it can be tested with simple in-test
environments; `envs/tools.MockToolSystem` and `envs/user.{Rule,LLM}UserSimulator` implement them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclasses.dataclass
class ToolCall:
  """One parsed tool call from an assistant turn. `arguments` is always a dict."""

  name: str
  arguments: dict[str, Any]


@runtime_checkable
class ToolEnv(Protocol):

  def new_episode(self, task: Any) -> Any:
    """Returns per-episode state (e.g. the episode's own copy of the world)."""
    ...

  def call(self, task: Any, call: ToolCall, episode_state: Any) -> str:
    """Runs one call and returns the observation text. Never raises for bad calls: returns an
    error observation naming the problem instead."""
    ...


@runtime_checkable
class UserEnv(Protocol):

  def reply(self, task: Any, messages: Sequence[dict]) -> tuple[str, bool]:
    """Given the conversation so far (chat messages, the last one the agent's), returns the
    user's reply text and whether the user ends the conversation (###STOP###)."""
    ...
