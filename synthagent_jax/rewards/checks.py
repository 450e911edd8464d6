"""Structured rubric checks, evaluated in code on chat messages (format in docs/SPECS.md).

  tool_called {name, arguments}: some assistant tool call has this name and its (normalised)
    arguments contain the check's (normalised) arguments as a subset ({} = any call of the tool);
  tool_not_called {name}: no assistant tool call has this name;
  asked_user_for {slot}: some assistant message addressed to the user (no tool calls, no
    <answer>) asks for the slot, judged by the same matcher the rule-based user answers with;
  answer_contains {text}: the final <answer> contains the text (case- and whitespace-insensitive);
  no_over_asking {}: (a forbidden item's check: met when respected) no message to the user asks
    for a detail the task does not need (one of the user's slots it does not need, or a common
    personal detail the user does not hold, envs.slots.COMMON_DETAILS) or asks again for a slot
    the user has already given;
  world_state {}: the world state the agent's write calls leave equals the state the task's
    reference trajectory's write calls leave, each replayed on a fresh copy of the task's world by
    envs.tools.MockToolSystem (tau2-bench's database-hash idea): writes are graded by their
    effect, not by their argument strings. Needs the task's reference.

Every check also returns a `detail` dict for the verdict log (None when it has nothing to add):
the interaction checks (asked_user_for, no_over_asking) record which of the user's slots were
asked, which the task needed (`needed_slots`), which the user revealed, and what was asked beyond
them (`ask_report`); world_state records the write calls compared and where the states differ.

`check_score(..., partial_credit=True)` grades tool_called by degrees: the best call with the
right name scores (1 + arguments matched) / (1 + arguments wanted), no such call 0; the item is
still only *met* when some call matches in full. Every other check scores 1 or 0.

Check types are registered by name (`CHECKS`, with the kind of turn that decides each, which turn
credit reads); a type also needs its field list in the Task
schema (envs/rubric_schema.py CHECK_TYPES, Check._FIELDS) to be written in task files.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from typing import Any, Callable, Iterator, Sequence

from synthagent_jax.envs import slots as slots_lib
from synthagent_jax.envs.base import ToolCall
from synthagent_jax.envs.rubric_schema import Check
from synthagent_jax.envs.task import Task
from synthagent_jax.envs.tools import MockToolSystem, normalize

NO_OVER_ASKING = "no_over_asking"
WORLD_STATE = "world_state"

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


@dataclasses.dataclass(frozen=True)
class Outcome:
  """A check's verdict: met, score in [0, 1] and an optional detail dict for the rollout log."""

  met: bool
  score: float
  detail: dict | None = None


# type -> f(check, task, messages, partial_credit) -> Outcome
CheckFn = Callable[[Check, Task, Sequence[dict], bool], Outcome]


@dataclasses.dataclass(frozen=True)
class CheckType:
  """A registered check type: its evaluator and the kind of assistant turn that decides it
  ("message", "tool_calls" or "answer"; turn credit, rewards/credit.py, sends the item's
  advantage to those turns)."""

  fn: CheckFn
  turn_kind: str


TURN_KINDS = ("message", "tool_calls", "answer")
CHECKS: dict[str, CheckType] = {}


def register(name: str, turn_kind: str):
  """Decorator: registers a check evaluator under its type name (duplicates refused), with the
  kind of turn that decides it."""
  if turn_kind not in TURN_KINDS:
    raise ValueError(f"check type {name!r}: turn_kind must be one of {TURN_KINDS}, got "
                     f"{turn_kind!r}")

  def deco(fn: CheckFn) -> CheckFn:
    if name in CHECKS:
      raise ValueError(f"check type {name!r} registered twice")
    CHECKS[name] = CheckType(fn, turn_kind)
    return fn
  return deco


def outcome(check: Check, task: Task, messages: Sequence[dict],
            partial_credit: bool = False) -> Outcome:
  """The check's Outcome on the conversation (see the module doc)."""
  if check.type not in CHECKS:
    raise ValueError(f"unknown check type {check.type!r}; known: {', '.join(sorted(CHECKS))}")
  return CHECKS[check.type].fn(check, task, messages, partial_credit)


def check_score(check: Check, task: Task, messages: Sequence[dict],
                partial_credit: bool = False) -> tuple[bool, float]:
  """(met, score in [0, 1]) of the check on the conversation (see the module doc)."""
  o = outcome(check, task, messages, partial_credit)
  return o.met, o.score


def evaluate_check(check: Check, task: Task, messages: Sequence[dict]) -> bool:
  """Whether the check holds on the conversation."""
  return outcome(check, task, messages).met


@register("tool_called", turn_kind="tool_calls")
def _tool_called(check, task, messages, partial_credit):
  del task
  want = normalize(check.arguments or {})
  met = any(name == check.name and _subset(want, normalize(args))
            for name, args in tool_calls(messages))
  if partial_credit and not met:
    return Outcome(False, _tool_called_fraction(check, messages))
  return Outcome(met, float(met))


@register("tool_not_called", turn_kind="tool_calls")
def _tool_not_called(check, task, messages, partial_credit):
  del task, partial_credit
  met = all(name != check.name for name, _ in tool_calls(messages))
  return Outcome(met, float(met))


@register("answer_contains", turn_kind="answer")
def _answer_contains(check, task, messages, partial_credit):
  del task, partial_credit
  answer = final_answer(messages)
  met = answer is not None and normalize(check.text) in normalize(answer)
  return Outcome(met, float(met))


# ---- asks: what was asked, needed and revealed ----------------------------------------------------
def _scalars(value: Any) -> Iterator[str]:
  if isinstance(value, dict):
    for v in value.values():
      yield from _scalars(v)
  elif isinstance(value, (list, tuple)):
    for v in value:
      yield from _scalars(v)
  elif value is not None and not isinstance(value, bool):
    yield str(normalize(value))


def needed_slots(task: Task) -> list[str]:
  """The user's slots the task needs: those an asked_user_for item names, and those whose value
  is an argument (or part of one) of a reference tool call or of a tool_called item."""
  info = task.user.private_info
  needed = {it.check.slot for _, it in task.rubric.items()
            if it.check is not None and it.check.type == "asked_user_for"}
  args = [a for _, a in tool_calls(task.reference or [])]
  args += [it.check.arguments or {} for _, it in task.rubric.items()
           if it.check is not None and it.check.type == "tool_called"]
  values = [v for a in args for v in _scalars(a)]
  for slot, value in info.items():
    want = str(normalize(value))
    if want and any(want == v or want in v for v in values):
      needed.add(slot)
  return [slot for slot in info if slot in needed]


def ask_report(task: Task, messages: Sequence[dict]) -> dict:
  """What the conversation's messages to the user asked for, against what the task needed and
  what the user revealed, in conversation order:

    asked        the user's slots some message to the user asked for
    asked_other  common personal details asked for that the user does not hold (slots.COMMON_DETAILS)
    needed       `needed_slots(task)`
    revealed     slots whose value appears in a user message (the opening one included)
    unneeded     asked slots not needed, then asked_other
    asked_again  slots asked for after the user had already given them
  """
  info = task.user.private_info
  values = {slot: str(normalize(v)) for slot, v in info.items()}
  asked: list[str] = []
  others: list[str] = []
  revealed: list[str] = []
  again: list[str] = []
  for m in messages:
    content = str(m.get("content") or "")
    if m.get("role") == "user":
      text = str(normalize(content))
      revealed += [s for s, v in values.items() if v and v in text and s not in revealed]
    elif m.get("role") == "assistant" and not m.get("tool_calls") and "<answer>" not in content:
      mine, extra = slots_lib.requested_details(content, info)
      again += [s for s in mine if s in revealed and s not in again]
      asked += [s for s in mine if s not in asked]
      others += [d for d in extra if d not in others]
  needed = needed_slots(task)
  unneeded = [s for s in asked if s not in needed] + others
  return {"asked": asked, "asked_other": others, "needed": needed, "revealed": revealed,
          "unneeded": unneeded, "asked_again": again}


@register("asked_user_for", turn_kind="message")
def _asked_user_for(check, task, messages, partial_credit):
  del partial_credit
  slots = list(task.user.private_info)
  met = any(slots_lib.asks_for(text, check.slot, slots) for text in messages_to_user(messages))
  report = ask_report(task, messages)
  return Outcome(met, float(met), {k: report[k] for k in ("asked", "needed", "revealed")})


@register(NO_OVER_ASKING, turn_kind="message")
def _no_over_asking(check, task, messages, partial_credit):
  del check, partial_credit
  report = ask_report(task, messages)
  met = not report["unneeded"] and not report["asked_again"]
  return Outcome(met, float(met), report)


# ---- world state ----------------------------------------------------------------------------------
_REPLAY: list[MockToolSystem] = []
_REPLAY_LOCK = threading.Lock()


def _replayer() -> MockToolSystem:
  # No LLM: an unscripted call gets "no record found" and, as in any episode, never changes state.
  with _REPLAY_LOCK:
    if not _REPLAY:
      _REPLAY.append(MockToolSystem(llm=None))
    return _REPLAY[0]


def replay_writes(task: Task, calls: Sequence[tuple[str, dict]]) -> tuple[dict, list[str]]:
  """(final state, names of the write calls replayed) after running the write calls among `calls`
  on a fresh copy of the task's world. Read tools have no effects (the schema forbids them)."""
  env = _replayer()
  episode = env.new_episode(task)
  names = []
  for name, args in calls:
    tool = task.tool(name)
    if tool is not None and tool.kind == "write":
      env.call(task, ToolCall(name=name, arguments=args), episode)
      names.append(name)
  return episode.state, names


def _diff_paths(a: Any, b: Any, prefix: str = "", limit: int = 5) -> list[str]:
  if a == b:
    return []
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b), key=str):
      out += _diff_paths(a.get(k, _MISSING), b.get(k, _MISSING), f"{prefix}{k}.", limit)
      if len(out) >= limit:
        break
    return out[:limit]
  return [prefix.rstrip(".") or "<root>"]


_MISSING = object()


@register(WORLD_STATE, turn_kind="tool_calls")
def _world_state(check, task, messages, partial_credit):
  del check, partial_credit
  if task.reference is None:
    raise ValueError(f"task {task.id!r}: a world_state check needs the task's reference "
                     "trajectory (its write calls define the expected state)")
  want, want_writes = replay_writes(task, list(tool_calls(task.reference)))
  got, got_writes = replay_writes(task, list(tool_calls(messages)))
  met = want == got
  detail = {"expected_writes": want_writes, "agent_writes": got_writes,
            "differs_at": _diff_paths(want, got)}
  return Outcome(met, float(met), detail)
