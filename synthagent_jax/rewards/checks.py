"""Structured rubric checks, evaluated in code on chat messages (format in SPECS.md).

  tool_called {name, arguments}: some assistant tool call has this name and its (normalised)
    arguments contain the check's (normalised) arguments as a subset ({} = any call of the tool);
  tool_not_called {name}: no assistant tool call has this name;
  asked_user_for {slot}: some assistant message addressed to the user (no tool calls, no
    <answer>) asks for the slot, judged by the same matcher the rule-based user answers with;
  answer_contains {text}: the final <answer> contains the text (case- and whitespace-insensitive).

`check_score(..., partial_credit=True)` grades tool_called by degrees: the best call with the
right name scores (1 + arguments matched) / (1 + arguments wanted), no such call 0; the item is
still only *met* when some call matches in full. Every other check scores 1 or 0.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Sequence

from synthagent_jax.envs import slots as slots_lib
from synthagent_jax.envs.task import Check, Task
from synthagent_jax.envs.tools import normalize

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def tool_calls(messages: Sequence[dict]) -> Iterator[tuple[str, dict]]:
  """(name, arguments) of every assistant tool call, in order. String arguments are JSON-decoded
  (OpenAI wire format); undecodable ones count as {}."""
  for m in messages:
    if m.get("role") != "assistant":
      continue
    for call in m.get("tool_calls") or ():
      fn = call.get("function", call) if isinstance(call, dict) else {}
      args: Any = fn.get("arguments", {})
      if isinstance(args, str):
        try:
          args = json.loads(args)
        except json.JSONDecodeError:
          args = {}
      yield str(fn.get("name", "")), args if isinstance(args, dict) else {}


def final_answer(messages: Sequence[dict]) -> str | None:
  """Text of the last <answer>...</answer> in an assistant message, or None."""
  for m in reversed(messages):
    if m.get("role") == "assistant":
      found = _ANSWER.findall(str(m.get("content") or ""))
      if found:
        return found[-1].strip()
  return None


def messages_to_user(messages: Sequence[dict]) -> Iterator[str]:
  """Contents of assistant messages addressed to the user (no tool calls, no <answer>)."""
  for m in messages:
    content = str(m.get("content") or "")
    if m.get("role") == "assistant" and not m.get("tool_calls") and "<answer>" not in content:
      yield content


def _subset(want: Any, have: Any) -> bool:
  if isinstance(want, dict):
    return isinstance(have, dict) and all(k in have and _subset(v, have[k])
                                          for k, v in want.items())
  return want == have


def _tool_called_fraction(check: Check, messages: Sequence[dict]) -> float:
  want = normalize(check.arguments or {})
  best = 0.0
  for name, args in tool_calls(messages):
    if name == check.name:
      have = normalize(args)
      hits = sum(1 for k, v in want.items() if k in have and _subset(v, have[k]))
      best = max(best, (1 + hits) / (1 + len(want)))
  return best


def check_score(check: Check, task: Task, messages: Sequence[dict],
                partial_credit: bool = False) -> tuple[bool, float]:
  """(met, score in [0, 1]) of the check on the conversation (see the module doc)."""
  met = evaluate_check(check, task, messages)
  if partial_credit and check.type == "tool_called" and not met:
    return False, _tool_called_fraction(check, messages)
  return met, float(met)


def evaluate_check(check: Check, task: Task, messages: Sequence[dict]) -> bool:
  """Whether the check holds on the conversation."""
  if check.type == "tool_called":
    want = normalize(check.arguments or {})
    return any(name == check.name and _subset(want, normalize(args))
               for name, args in tool_calls(messages))
  if check.type == "tool_not_called":
    return all(name != check.name for name, _ in tool_calls(messages))
  if check.type == "asked_user_for":
    slots = list(task.user.private_info)
    return any(slots_lib.asks_for(text, check.slot, slots) for text in messages_to_user(messages))
  if check.type == "answer_contains":
    answer = final_answer(messages)
    return answer is not None and normalize(check.text) in normalize(answer)
  raise ValueError(f"unknown check type {check.type!r}")
