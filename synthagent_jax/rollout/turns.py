"""Parse one assistant turn's text into a routing decision. Never raises, whatever the text.

Routing (Qwen/Hermes format, see models/chat_format.py):
- `<think>...</think>` blocks are set aside first and never change routing (an unclosed `<think>`
  swallows the rest of the turn as thinking).
- One or more `<tool_call>...</tool_call>` blocks -> kind "tool_calls". Each block is parsed on its
  own; a malformed one (bad JSON, missing name, arguments not an object, unclosed block) keeps its
  place in `blocks` with an `error` the agent loop turns into an error observation. Strict JSON:
  the literals `NaN`, `Infinity`, `-Infinity` and numbers that overflow a float (`1e999`) make a
  call malformed, so every parsed call's arguments dump back to standard JSON; so do arguments
  nested deeper than `MAX_ARGUMENT_DEPTH` (each later consumer, from the schema check to the
  rollout log, walks them recursively).
- Otherwise `<answer>...</answer>` -> kind "answer" (ends the episode).
- Otherwise -> kind "message" (to the user).

Cost: linear in the text length, whatever the text (tags are found with `str.find`, never a lazy
regex that rescans the rest of the text from every unclosed opening tag).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Literal

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.models import chat_format as cf

TurnKind = Literal["tool_calls", "answer", "message"]

_MAX_ERROR_SNIPPET = 80
MAX_ARGUMENT_DEPTH = 64  # nesting levels of a call's arguments (objects and arrays)


def _closed_blocks(text: str, start_tag: str, end_tag: str) -> list[tuple[int, int, int, int]]:
  """Complete `start_tag...end_tag` blocks, leftmost first, non-overlapping, shortest body.

  Returns [(block_start, body_start, body_end, block_end)]: the matches of a lazy
  `start(.*?)end` regex scan, in linear time. Once an opening tag has no closing tag after it,
  no later opening tag has one either, so the scan stops there.
  """
  blocks, pos = [], 0
  while True:
    start = text.find(start_tag, pos)
    if start < 0:
      break
    body = start + len(start_tag)
    end = text.find(end_tag, body)
    if end < 0:
      break
    blocks.append((start, body, end, end + len(end_tag)))
    pos = end + len(end_tag)
  return blocks


def _reject_constant(literal: str):
  raise ValueError(f"{literal} is not a JSON number (only finite numbers are allowed)")


def _finite_float(literal: str) -> float:
  value = float(literal)
  if not math.isfinite(value):
    raise ValueError(f"number {literal[:40]} overflows a 64-bit float")
  return value


def _depth(value: Any) -> int:
  """Nesting depth of a parsed JSON value (objects and arrays), without recursion."""
  deepest, stack = 0, [(value, 1)]
  while stack:
    node, d = stack.pop()
    if isinstance(node, dict):
      node = list(node.values())
    if isinstance(node, list):
      deepest = max(deepest, d)
      stack.extend((child, d + 1) for child in node)
  return deepest


def _strict_json(text: str) -> Any:
  """`json.loads` that refuses NaN / Infinity / -Infinity and float overflow (ValueError)."""
  return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


@dataclasses.dataclass(frozen=True)
class CallBlock:
  """One `<tool_call>` block: its raw body and either the parsed call or what is wrong with it."""

  raw: str
  call: ToolCall | None
  error: str | None


@dataclasses.dataclass(frozen=True)
class Turn:
  """One parsed assistant turn.

  Attributes:
    kind: "tool_calls", "answer" or "message".
    text: the turn's full text as given.
    content: the text with think blocks and tool-call blocks removed, stripped (the message to
      the user for kind "message"; free text around the calls for "tool_calls").
    blocks: every `<tool_call>` block in order (kind "tool_calls" only).
    answer: the answer text (kind "answer" only), stripped.
    think: the thinking text, blocks joined by "\\n".
    errors: everything malformed, in order of appearance (block errors included).
  """

  kind: TurnKind
  text: str
  content: str = ""
  blocks: tuple[CallBlock, ...] = ()
  answer: str | None = None
  think: str = ""
  errors: tuple[str, ...] = ()

  @property
  def calls(self) -> list[ToolCall]:
    """The well-formed calls, in order."""
    return [b.call for b in self.blocks if b.call is not None]


def _snippet(s: str) -> str:
  s = s.strip()
  return repr(s if len(s) <= _MAX_ERROR_SNIPPET else s[:_MAX_ERROR_SNIPPET] + "...")


def parse_call(body: str) -> CallBlock:
  """Parses the JSON body of one `<tool_call>` block. Never raises."""
  try:
    obj = _strict_json(body)
  except (ValueError, RecursionError) as e:
    return CallBlock(body, None, f"tool call is not valid JSON ({e.__class__.__name__}: {e}): "
                     f"{_snippet(body)}")
  if not isinstance(obj, dict):
    return CallBlock(body, None, "tool call must be a JSON object with \"name\" and \"arguments\", "
                     f"got {type(obj).__name__}: {_snippet(body)}")
  name = obj.get("name")
  if not isinstance(name, str) or not name.strip():
    return CallBlock(body, None, "tool call is missing a non-empty string \"name\": "
                     f"{_snippet(body)}")
  args: Any = obj.get("arguments", {})
  if isinstance(args, str):  # some models emit the arguments as a JSON string
    try:
      args = _strict_json(args) if args.strip() else {}
    except (ValueError, RecursionError) as e:
      return CallBlock(body, None, f"arguments of {name!r} are a string that is not JSON "
                       f"({e.__class__.__name__}: {e}): {_snippet(args)}")
  if args is None:
    args = {}
  if not isinstance(args, dict):
    return CallBlock(body, None, f"arguments of {name!r} must be a JSON object, got "
                     f"{type(args).__name__}")
  if _depth(args) > MAX_ARGUMENT_DEPTH:
    return CallBlock(body, None, f"arguments of {name!r} are nested deeper than "
                     f"{MAX_ARGUMENT_DEPTH} levels")
  return CallBlock(body, ToolCall(name=name.strip(), arguments=args), None)


def _split_think(text: str) -> tuple[str, list[str], list[str]]:
  """Returns (text without think blocks, think texts, errors)."""
  found = _closed_blocks(text, cf.THINK_START, cf.THINK_END)
  thinks = [text[b:e] for _, b, e, _ in found]
  kept, prev = [], 0
  for start, _, _, end in found:
    kept.append(text[prev:start])
    prev = end
  kept.append(text[prev:])
  rest = "".join(kept)
  errors = []
  start = rest.find(cf.THINK_START)
  if start >= 0:
    thinks.append(rest[start + len(cf.THINK_START):])
    rest = rest[:start]
    errors.append("unclosed <think> block: the rest of the turn was treated as thinking")
  if cf.THINK_END in rest:
    # A stray closing tag (e.g. the prompt opened <think> for the model): text before it is thought.
    head, _, rest = rest.rpartition(cf.THINK_END)
    thinks.insert(0, head)
  return rest, thinks, errors


def _parse_calls(text: str) -> tuple[list[CallBlock], str]:
  """Returns (blocks in order, text outside the blocks)."""
  blocks: list[CallBlock] = []
  outside: list[str] = []
  prev = 0
  for start, body, body_end, end in _closed_blocks(text, cf.TOOL_CALL_START, cf.TOOL_CALL_END):
    outside.append(text[prev:start])
    blocks.append(parse_call(text[body:body_end]))
    prev = end
  tail = text[prev:]
  start = tail.find(cf.TOOL_CALL_START)
  if start >= 0:
    outside.append(tail[:start])
    body = tail[start + len(cf.TOOL_CALL_START):]
    blocks.append(CallBlock(body, None, f"unclosed <tool_call> block (no {cf.TOOL_CALL_END}): "
                            f"{_snippet(body)}"))
  else:
    outside.append(tail)
  return blocks, "".join(outside)


def _parse(text: str) -> Turn:
  rest, thinks, errors = _split_think(text)
  think = "\n".join(t.strip() for t in thinks)
  blocks, outside = _parse_calls(rest)
  if cf.TOOL_CALL_END in outside:
    errors.append(f"stray {cf.TOOL_CALL_END} without an opening {cf.TOOL_CALL_START}")
  if blocks:
    errors.extend(b.error for b in blocks if b.error)
    if cf.ANSWER_START in outside:
      errors.append("turn has both tool calls and an <answer>; the answer was ignored")
    return Turn("tool_calls", text, content=outside.strip(), blocks=tuple(blocks), think=think,
                errors=tuple(errors))
  start = rest.find(cf.ANSWER_START)
  body = start + len(cf.ANSWER_START)
  end = rest.find(cf.ANSWER_END, body) if start >= 0 else -1
  if end >= 0:
    content = (rest[:start] + rest[end + len(cf.ANSWER_END):]).strip()
    return Turn("answer", text, content=content, answer=rest[body:end].strip(), think=think,
                errors=tuple(errors))
  if start >= 0:
    errors.append("unclosed <answer> block: the rest of the turn was taken as the answer")
    return Turn("answer", text, content=rest[:start].strip(),
                answer=rest[start + len(cf.ANSWER_START):].strip(), think=think,
                errors=tuple(errors))
  content = rest.strip()
  if not content:
    errors.append("empty message: the turn has no text outside think blocks")
  return Turn("message", text, content=content, think=think, errors=tuple(errors))


def parse_turn(text: Any) -> Turn:
  """Parses one assistant turn (its text without the end-of-turn token). Never raises."""
  if not isinstance(text, str):
    return Turn("message", "", errors=(f"turn text must be a string, got {type(text).__name__}",))
  try:
    return _parse(text)
  except Exception as e:  # pylint: disable=broad-except  # the contract: never raise
    return Turn("message", text, content=text.strip(),
                errors=(f"internal parse failure ({e.__class__.__name__}: {e})",))
