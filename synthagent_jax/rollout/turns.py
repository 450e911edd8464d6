"""Parse one assistant turn's text into a routing decision. Never raises, whatever the text.

Routing (Qwen/Hermes format, see models/chat_format.py):
- `<think>...</think>` blocks are set aside first and never change routing (an unclosed `<think>`
  swallows the rest of the turn as thinking).
- One or more `<tool_call>...</tool_call>` blocks -> kind "tool_calls". Each block is parsed on its
  own; a malformed one (bad JSON, missing name, arguments not an object, unclosed block) keeps its
  place in `blocks` with an `error` the agent loop turns into an error observation.
- Otherwise `<answer>...</answer>` -> kind "answer" (ends the episode).
- Otherwise -> kind "message" (to the user).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.models import chat_format as cf

TurnKind = Literal["tool_calls", "answer", "message"]

_THINK_RE = re.compile(re.escape(cf.THINK_START) + r"(.*?)" + re.escape(cf.THINK_END), re.DOTALL)
_CALL_RE = re.compile(re.escape(cf.TOOL_CALL_START) + r"(.*?)" + re.escape(cf.TOOL_CALL_END), re.DOTALL)
_ANSWER_RE = re.compile(re.escape(cf.ANSWER_START) + r"(.*?)" + re.escape(cf.ANSWER_END), re.DOTALL)
_MAX_ERROR_SNIPPET = 80


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
    obj = json.loads(body)
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
      args = json.loads(args) if args.strip() else {}
    except (ValueError, RecursionError):
      return CallBlock(body, None, f"arguments of {name!r} are a string that is not JSON: "
                       f"{_snippet(args)}")
  if args is None:
    args = {}
  if not isinstance(args, dict):
    return CallBlock(body, None, f"arguments of {name!r} must be a JSON object, got "
                     f"{type(args).__name__}")
  return CallBlock(body, ToolCall(name=name.strip(), arguments=args), None)


def _split_think(text: str) -> tuple[str, list[str], list[str]]:
  """Returns (text without think blocks, think texts, errors)."""
  thinks = [m.group(1) for m in _THINK_RE.finditer(text)]
  rest = _THINK_RE.sub("", text)
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
  pos = 0
  for m in _CALL_RE.finditer(text):
    outside.append(text[pos:m.start()])
    blocks.append(parse_call(m.group(1)))
    pos = m.end()
  tail = text[pos:]
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
  m = _ANSWER_RE.search(rest)
  if m:
    content = (rest[:m.start()] + rest[m.end():]).strip()
    return Turn("answer", text, content=content, answer=m.group(1).strip(), think=think,
                errors=tuple(errors))
  start = rest.find(cf.ANSWER_START)
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
