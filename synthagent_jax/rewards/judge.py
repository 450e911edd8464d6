"""Judges for rubric items without a structured check, and the HTTP (LLM-as-judge) backend.

A `Judge` grades batches: `judge(requests) -> list[list[ItemScore]]`, one list per request, one
score per requested item, in order. A judge never raises for a bad verdict: an item it could not
grade gets `ok=False, score=0.0, met=False` (never a free partial score) and the caller counts it.

`HTTPJudge` sends ONE chat per trajectory listing all its items and asks for a JSON verdict object
(as the SynthAgent paper does); all trajectories go out in one `LLM.chat` batch. Replies that do
not parse, or miss items, are retried (only the failed trajectories) up to `max_retries` times.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Protocol, Sequence, runtime_checkable

from synthagent_jax.envs.rubric_schema import RubricItem
from synthagent_jax.envs.task import Task
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import LLM

SECTION_QUESTIONS = {
    "subgoals": "Did the assistant achieve this goal?",
    "interactions": "Did the assistant interact with the user as required?",
    "forbidden": "Did the assistant AVOID this forbidden behaviour (answer yes if it never did it)?",
}


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
  """Grade `items` (section, item) of one trajectory."""

  task: Task
  messages: Sequence[dict]
  items: Sequence[tuple[str, RubricItem]]


@dataclasses.dataclass(frozen=True)
class ItemScore:
  score: float  # in [0, 1]
  met: bool
  ok: bool = True  # False: the judge could not grade it (scored 0, counted by the caller)


@runtime_checkable
class Judge(Protocol):

  def judge(self, requests: Sequence[JudgeRequest]) -> list[list[ItemScore]]:
    ...


def render_transcript(messages: Sequence[dict], max_chars_per_message: int = 2000) -> str:
  """A plain-text transcript for judges: one block per message, tool calls spelled out."""
  lines = []
  for m in messages:
    role = m.get("role")
    content = str(m.get("content") or "")
    if len(content) > max_chars_per_message:
      content = content[:max_chars_per_message] + " [...truncated]"
    if role == "assistant":
      if content.strip():
        lines.append(f"ASSISTANT: {content}")
      for call in m.get("tool_calls") or ():
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        lines.append(f"ASSISTANT calls {fn.get('name')}({args})")
    elif role == "tool":
      lines.append(f"TOOL RESULT ({m.get('name', '?')}): {content}")
    elif role == "user":
      lines.append(f"USER: {content}")
    elif role == "system":
      lines.append(f"SYSTEM: {content}")
  return "\n".join(lines)


JSON_JUDGE_SYSTEM = """You are a strict grader of customer-support conversations. For every
criterion you are given, decide whether it is met by the conversation. Use only the conversation
as evidence. Reply with ONLY a JSON object mapping each criterion id to true or false, e.g.
{"s1": true, "i1": false}."""


def render_json_judge_prompt(request: JudgeRequest, max_chars_per_message: int = 2000
                             ) -> list[dict]:
  lines = [f"Full task (hidden from the assistant): {request.task.full_task}", "",
           "Conversation:", render_transcript(request.messages, max_chars_per_message), "",
           "Criteria:"]
  for section, item in request.items:
    lines.append(f'- id "{item.id}" [{section}] {SECTION_QUESTIONS[section]} {item.text}')
  lines += ["", "Reply with the JSON object only."]
  return [{"role": "system", "content": JSON_JUDGE_SYSTEM},
          {"role": "user", "content": "\n".join(lines)}]


_TRUE = {"true", "yes", "met", "1", "y", "pass"}
_FALSE = {"false", "no", "not met", "unmet", "0", "n", "fail"}


def _as_bool(value: Any) -> bool | None:
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)) and value in (0, 1):
    return bool(value)
  if isinstance(value, str):
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None
  if isinstance(value, dict):
    for key in ("met", "verdict", "value", "answer"):
      if key in value:
        return _as_bool(value[key])
  return None


def _first_json_object(text: str) -> Any:
  text = re.sub(r"```(?:json)?", "", text)
  decoder = json.JSONDecoder()
  for m in re.finditer(r"\{", text):
    try:
      obj, _ = decoder.raw_decode(text[m.start():])
      return obj
    except json.JSONDecodeError:
      continue
  return None


def parse_json_verdicts(text: str, item_ids: Sequence[str]) -> dict[str, bool]:
  """{item id: met} for every id the reply grades clearly; ids it misses are absent.

  Accepts {"id": bool|"yes"/"no"|{"met": ...}} and {"verdicts": [{"id": ..., "met": ...}]}.
  """
  obj = _first_json_object(text)
  if not isinstance(obj, dict):
    return {}
  if isinstance(obj.get("verdicts"), list):
    obj = {str(v.get("id")): v for v in obj["verdicts"] if isinstance(v, dict)}
  out = {}
  for item_id in item_ids:
    if item_id in obj:
      value = _as_bool(obj[item_id])
      if value is not None:
        out[item_id] = value
  return out


class HTTPJudge:
  """LLM-as-judge: one JSON-verdict chat per trajectory, all trajectories in one `LLM.chat` batch.

  Args:
    llm: any `LLM` (usually `llm.openai_http.OpenAIChatLLM`).
    max_retries: re-asks for trajectories whose reply did not grade every item.
    sampling: judge sampling (default greedy, 512 new tokens).
  """

  def __init__(self, llm: LLM, max_retries: int = 2, sampling: SamplingParams | None = None,
               max_chars_per_message: int = 2000):
    if max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    self.llm = llm
    self.max_retries = max_retries
    self.sampling = sampling or SamplingParams(max_new_tokens=512, temperature=0.0)
    self.max_chars_per_message = max_chars_per_message
    self.stats = {"requests": 0, "retries": 0, "unparsed_items": 0}

  def _ask(self, prompts: list[list[dict]]) -> list[str | None]:
    """Replies, with None for conversations the backend failed on."""
    try:
      return list(self.llm.chat(prompts, self.sampling))
    except Exception as exc:  # noqa: BLE001 - a failed item is retried, then scored 0.
      results = getattr(exc, "results", None)
      if results is None or len(results) != len(prompts):
        return [None] * len(prompts)
      return [r.text if r.ok else None for r in results]

  def judge(self, requests: Sequence[JudgeRequest]) -> list[list[ItemScore]]:
    verdicts: list[dict[str, bool]] = [{} for _ in requests]
    todo = [i for i, r in enumerate(requests) if r.items]
    for attempt in range(self.max_retries + 1):
      if not todo:
        break
      if attempt:
        self.stats["retries"] += len(todo)
      self.stats["requests"] += len(todo)
      replies = self._ask([render_json_judge_prompt(requests[i], self.max_chars_per_message)
                           for i in todo])
      still = []
      for i, reply in zip(todo, replies):
        ids = [item.id for _, item in requests[i].items]
        if reply is not None:
          for item_id, met in parse_json_verdicts(reply, ids).items():
            verdicts[i].setdefault(item_id, met)
        if any(item_id not in verdicts[i] for item_id in ids):
          still.append(i)
      todo = still
    out = []
    for i, req in enumerate(requests):
      scores = []
      for _, item in req.items:
        if item.id in verdicts[i]:
          met = verdicts[i][item.id]
          scores.append(ItemScore(score=float(met), met=met))
        else:
          self.stats["unparsed_items"] += 1
          scores.append(ItemScore(score=0.0, met=False, ok=False))
      out.append(scores)
    return out
