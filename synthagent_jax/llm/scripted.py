"""Scripted LLM backend for tests and offline runs: rules, a function, or recorded replies.

No model anywhere: replies come from (in order of precedence) a Python function of the
conversation, regex rules on the last message, a queue of replies, or a recording keyed by the
exact conversation. Every conversation it was asked about is kept in `calls` for assertions.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Callable, Sequence

from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import Message


def conversation_key(conversation: Sequence[Message]) -> str:
  """Canonical JSON of a conversation: the key recorded replies are stored under."""
  return json.dumps([dict(m) for m in conversation], sort_keys=True, ensure_ascii=False)


class ScriptedLLM:
  """An `LLM` that answers from a script.

  Args:
    fn: `fn(conversation) -> str`; if given it answers everything.
    rules: (regex, reply) pairs tried in order against the last message's content.
    replies: replies handed out in order, one per conversation.
    recording: {conversation_key(conversation): reply}.
    default: reply when nothing else answers; None makes an unanswered conversation an error.
  """

  def __init__(self, fn: Callable[[Sequence[Message]], str] | None = None, *,
               rules: Sequence[tuple[str, str]] = (), replies: Sequence[str] = (),
               recording: dict[str, str] | None = None, default: str | None = None):
    self._fn = fn
    self._rules = [(re.compile(p, re.IGNORECASE | re.DOTALL), r) for p, r in rules]
    self._replies = list(replies)
    self._recording = dict(recording or {})
    self._default = default
    self._lock = threading.Lock()
    self.calls: list[list[Message]] = []

  @classmethod
  def from_recording_file(cls, path: str, default: str | None = None) -> "ScriptedLLM":
    """Loads JSONL lines {"messages": [...], "reply": str}."""
    recording = {}
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
          recording[conversation_key(rec["messages"])] = str(rec["reply"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise ValueError(f"{path}:{lineno}: bad recording line ({e!r}); expected "
                           '{"messages": [...], "reply": str}') from e
    return cls(recording=recording, default=default)

  def chat(self, conversations: Sequence[Sequence[Message]],
           sampling: SamplingParams | None = None) -> list[str]:
    del sampling  # A script is deterministic.
    return [self._one(list(c)) for c in conversations]

  def _one(self, conversation: list[Message]) -> str:
    with self._lock:
      self.calls.append(conversation)
      if self._fn is not None:
        return self._fn(conversation)
      last = str(conversation[-1].get("content", "")) if conversation else ""
      for pattern, reply in self._rules:
        if pattern.search(last):
          return reply
      key = conversation_key(conversation)
      if key in self._recording:
        return self._recording[key]
      if self._replies:
        return self._replies.pop(0)
      if self._default is not None:
        return self._default
    raise LookupError(f"ScriptedLLM has no reply for a conversation ending with {last[:200]!r}")
