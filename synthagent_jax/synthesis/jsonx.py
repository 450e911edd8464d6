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


def _balanced_spans(text: str):
  """Yields substrings starting at each '{' or '[' up to its matching close (string-aware)."""
  for start, ch in enumerate(text):
    if ch not in "{[":
      continue
    stack, in_str, esc = [], False, False
    for i in range(start, len(text)):
      c = text[i]
      if in_str:
        if esc:
          esc = False
        elif c == "\\":
          esc = True
        elif c == '"':
          in_str = False
        continue
      if c == '"':
        in_str = True
      elif c in "{[":
        stack.append("}" if c == "{" else "]")
      elif c in "}]":
        if not stack or stack.pop() != c:
          break
        if not stack:
          yield text[start:i + 1]
          break


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
  candidates += list(_balanced_spans(text))
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
  if saw_json:
    raise JsonExtractError("wrong_json_type", f"expected a JSON {want.__name__}")
  if last_error is not None and ("{" in text or "[" in text):
    raise JsonExtractError("malformed_json", str(last_error))
  raise JsonExtractError("no_json", "no JSON object found in the reply")
