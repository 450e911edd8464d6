"""The `LLM` contract: batches of chat conversations in, reply texts out.

Used by the user simulator, the mock tool system's fallback, the HTTP judge and the teacher.
Backends: `llm/openai_http.py` (any OpenAI-compatible server), `llm/jax_llm.py` (our model
in-process through an Engine and the chat template), `llm/scripted.py` (tests, offline runs).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from synthagent_jax.inference.engine import SamplingParams

Message = dict  # {"role": "system"|"user"|"assistant"|"tool", "content": str, ...}


@runtime_checkable
class LLM(Protocol):

  def chat(self, conversations: Sequence[Sequence[Message]],
           sampling: SamplingParams | None = None) -> list[str]:
    """Returns one reply text per conversation, in order."""
    ...
