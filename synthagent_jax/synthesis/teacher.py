"""Asking the teacher for JSON: prompt files, batched calls, validation and retries with reasons.

A stage gives, per record, a conversation and a `parse(obj) -> value` that raises `Reject(reason,
detail)` for an unusable reply. A rejected reply is shown back to the teacher with the reason and
asked again, up to `max_retries` times; every failed attempt's reason is kept (`retries`), and a
record whose last attempt fails carries its final reason.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import LLM
from synthagent_jax.synthesis import jsonx

PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")


class Reject(ValueError):
  """A teacher reply or a record is unusable. `reason` is a short category for the report."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


@functools.lru_cache(maxsize=None)
def load_prompt(name: str) -> str:
  """The prompt file `prompts/<name>.txt`."""
  with open(os.path.join(PROMPTS_DIR, f"{name}.txt"), encoding="utf-8") as f:
    return f.read()


def render_prompt(name: str, **fields) -> str:
  """The prompt with `<<field>>` markers replaced (JSON braces in prompts stay literal)."""
  text = load_prompt(name)
  for key, value in fields.items():
    text = text.replace(f"<<{key}>>", str(value))
  return text


@dataclasses.dataclass
class Answer:
  """The outcome of asking about one record."""

  value: Any = None
  reason: str | None = None      # final rejection reason (None: value is valid)
  detail: str = ""
  retries: list[str] = dataclasses.field(default_factory=list)  # reasons of failed attempts

  @property
  def ok(self) -> bool:
    return self.reason is None


RETRY_MESSAGE = ("Your reply could not be used ({reason}: {detail}). Reply again with only the "
                 "corrected JSON object, following every instruction above.")


def ask_json(teacher: LLM, conversations: Sequence[list[dict]],
             parse: Callable[[int, dict], Any], max_retries: int,
             sampling: SamplingParams | None = None) -> list[Answer]:
  """Asks for one JSON object per conversation; validates with `parse(i, obj)`; retries.

  `parse` raises Reject for an unusable object. Conversations still failing are re-asked
  together (one batched call per round).
  """
  convs = [list(c) for c in conversations]
  answers = [Answer() for _ in convs]
  pending = list(range(len(convs)))
  for attempt in range(max_retries + 1):
    if not pending:
      break
    try:
      replies = teacher.chat([convs[i] for i in pending], sampling)
    except Exception as e:  # pylint: disable=broad-except
      # A whole batch failing (server down) is a rejection reason, not a crash of the run.
      replies = [None] * len(pending)
      call_error = f"{type(e).__name__}: {str(e)[:200]}"
    still = []
    for i, reply in zip(pending, replies):
      try:
        if reply is None:
          raise Reject("teacher_error", call_error)
        obj = jsonx.extract_json(reply, dict)
        answers[i].value = parse(i, obj)
        answers[i].reason = None
      except jsonx.JsonExtractError as e:
        answers[i].reason, answers[i].detail = e.reason, e.detail
      except Reject as e:
        answers[i].reason, answers[i].detail = e.reason, e.detail
      except (TypeError, AttributeError, KeyError) as e:  # a JSON shape the parser did not expect
        answers[i].reason, answers[i].detail = "bad_field", f"{type(e).__name__}: {e}"
      if answers[i].reason is not None:
        if attempt < max_retries:
          answers[i].retries.append(answers[i].reason)
          convs[i] = convs[i] + [
              {"role": "assistant", "content": reply or ""},
              {"role": "user", "content": RETRY_MESSAGE.format(reason=answers[i].reason,
                                                               detail=answers[i].detail[:300])}]
        still.append(i)
    pending = still
  return answers


def require(obj: dict, key: str, typ, where: str = ""):
  """`obj[key]` if present with type `typ`, else Reject('missing_field' | 'bad_field')."""
  name = f"{where}.{key}" if where else key
  if not isinstance(obj, dict) or key not in obj:
    raise Reject("missing_field", name)
  value = obj[key]
  if not isinstance(value, typ) or isinstance(value, bool) and bool not in (
      typ if isinstance(typ, tuple) else (typ,)):
    raise Reject("bad_field", f"{name} should be {getattr(typ, '__name__', typ)}")
  return value
