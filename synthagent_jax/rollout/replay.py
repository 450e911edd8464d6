"""Expert reference trajectories through the real agent loop (for SFT warm start).

A reference is a list of chat messages. Instead of tokenizing it with the chat template on our own,
we *replay* its assistant turns through `AgentLoop` with a `ReplayEngine`: the loop renders the
prompt and every environment delta exactly as in RL rollouts, and the environments answer the
replayed calls. So SFT trains on the same token layout the policy later samples in, and a reference
whose environment answers diverge from what it expected is detected (its reward drops).
"""

from __future__ import annotations

from typing import Any, Sequence

from synthagent_jax.inference.engine import Completion, SamplingParams
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop
from synthagent_jax.rollout.trajectory import Trajectory


def assistant_text(message: dict) -> str:
  """The text a policy would emit for a reference assistant message (content, then tool calls)."""
  parts = [message.get("content") or ""]
  for call in message.get("tool_calls") or []:
    fn = call.get("function", call)
    parts.append(cf.format_tool_call(fn["name"], fn.get("arguments") or {}))
  return "\n".join(p for p in parts if p)


class ReplayEngine:
  """An Engine that answers each generate() with the next scripted assistant turn.

  Serves one episode at a time (AgentLoop.run with one task and num_samples=1), so the n-th call
  gets the n-th turn. Logprobs are 0.0: these tokens were not sampled from any policy.
  """

  def __init__(self, tokenizer, texts: Sequence[str], end_of_turn: str = cf.IM_END):
    self._ids = [cf.encode(tokenizer, t) + [cf.token_id(tokenizer, end_of_turn)] for t in texts]
    self._next = 0

  def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Completion]:
    if len(prompt_ids) != 1:
      raise ValueError(f"ReplayEngine serves one episode at a time, got {len(prompt_ids)} prompts")
    if self._next >= len(self._ids):
      raise ValueError("the reference has no assistant turn left, but the episode goes on")
    ids = self._ids[self._next]
    self._next += 1
    ids = ids[:sampling.max_new_tokens]
    finish = "stop" if len(ids) == len(self._ids[self._next - 1]) else "length"
    return [Completion(token_ids=list(ids), logprobs=[0.0] * len(ids), finish_reason=finish)]

  def update_weights(self, weights: Any, step: int) -> dict[str, float]:
    return {}  # replayed text has no weights

  def wait_ready(self) -> None:
    pass


def reference_trajectory(loop: AgentLoop, task: Any) -> Trajectory:
  """Replays `task.reference` through a copy of `loop` (same tokenizer, envs and limits)."""
  if not task.reference:
    raise ValueError(f"task {task.id} has no reference trajectory")
  texts = [assistant_text(m) for m in task.reference if m.get("role") == "assistant"]
  replay = AgentLoop(ReplayEngine(loop.tokenizer, texts, loop.config.end_of_turn), loop.tokenizer,
                     loop.tools, loop.user, loop.config)
  return replay.run([task], num_samples=1)[0]
