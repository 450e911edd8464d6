"""Robust JSON extraction from teacher replies: fenced blocks, prose around the object, trailing
commas, Python-style literals. Fails with a reason the retry prompt can quote back."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


class JsonExtractError(ValueError):
  """No JSON value could be read from the reply; `reason` is a short category."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def _top_level_spans(text: str) -> tuple[list[str], bool]:
  """Top-level balanced {...}/[...] spans (string-aware) and whether one is cut off at the end.

  Only top-level spans count: an inner object of a truncated reply is not the answer.
  """
  spans, i, n = [], 0, len(text)
  while i < n:
    if text[i] not in "{[":
      i += 1
      continue
    stack, in_str, esc, j, end = [], False, False, i, None
    while j < n:
      c = text[j]
      if in_str:
        if esc:
          esc = False
        elif c == "\\":
          esc = True
        elif c == '"':
          in_str = False
      elif c == '"':
        in_str = True
      elif c in "{[":
        stack.append("}" if c == "{" else "]")
      elif c in "}]":
        if not stack or stack.pop() != c:
          break
        if not stack:
          end = j
          break
      j += 1
    if end is not None:
      spans.append(text[i:end + 1])
      i = end + 1
    elif j >= n:
      return spans, True
    else:
      i += 1
  return spans, False


def _loads(candidate: str):
  try:
    return json.loads(candidate)
  except json.JSONDecodeError:
    pass
  fixed = _TRAILING_COMMA.sub(r"\1", candidate)
  fixed = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", re.sub(r"\bNone\b", "null",
                                                                            fixed)))
  return json.loads(fixed)


def extract_json(text: str, want: type = dict):
  """The first JSON value of type `want` (dict or list) in `text`.

  Tries, in order: the whole reply, each ```json fenced block, each balanced {...}/[...] span.
  Raises JsonExtractError("no_json" | "malformed_json" | "wrong_json_type", detail).
  """
  if not isinstance(text, str) or not text.strip():
    raise JsonExtractError("no_json", "the reply is empty")
  text = _THINK.sub("", text)
  candidates = [text.strip()] + [m.strip() for m in _FENCE.findall(text)]
  spans, truncated = _top_level_spans(text)
  candidates += spans
  last_error, saw_json = None, False
  for cand in candidates:
    try:
      value = _loads(cand)
    except (json.JSONDecodeError, ValueError) as e:
      last_error = e
      continue
    saw_json = True
    if isinstance(value, want):
      return value
  if truncated:
    raise JsonExtractError("malformed_json", "the JSON value is cut off before its end")
  if saw_json:
    raise JsonExtractError("wrong_json_type", f"expected a JSON {want.__name__}")
  if last_error is not None and ("{" in text or "[" in text):
    raise JsonExtractError("malformed_json", str(last_error))
  raise JsonExtractError("no_json", "no JSON object found in the reply")
