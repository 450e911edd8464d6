"""JSON-lines files as the workdir writers use them: written whole and atomically, read back
tolerating a half-written last line (a killed run), with non-finite floats made JSON-safe.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

_log = logging.getLogger(__name__)


def atomic_write_text(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` via a temporary file and rename, so readers never see half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def finite_json(value: Any) -> Any:
  """`value` with every non-finite float (anywhere in dicts / lists / tuples) replaced by None.

  Iterative, so a deeply nested record cannot exhaust the Python stack here.
  """
  def convert(x):
    if isinstance(x, float) and not math.isfinite(x):
      return None, None
    if isinstance(x, Mapping):
      out = {}
      return out, [(out, k, v) for k, v in x.items()]
    if isinstance(x, (list, tuple)):
      out = [None] * len(x)
      return out, [(out, i, v) for i, v in enumerate(x)]
    return x, None

  root, todo = convert(value)
  stack = list(todo or ())
  while stack:
    parent, key, child = stack.pop()
    parent[key], todo = convert(child)
    if todo:
      stack.extend(todo)
  return root


def read_jsonl(path: pathlib.Path) -> tuple[list[dict], int]:
  """Parses a JSONL file -> (records, byte offset where the valid content ends).

  A final line without a newline that does not parse (a write cut short by a kill) is left out
  with a warning; any other malformed line raises ValueError naming file:line.
  """
  data = path.read_bytes()
  records: list[dict] = []
  pos = 0
  lineno = 0
  while pos < len(data):
    lineno += 1
    end = data.find(b"\n", pos)
    complete = end != -1
    line = data[pos:end] if complete else data[pos:]
    try:
      rec = json.loads(line) if line.strip() else None
    except json.JSONDecodeError as e:
      if not complete:
        _log.warning("%s:%d: dropping half-written last line (%d bytes)", path, lineno, len(line))
        return records, pos
      raise ValueError(f"{path}:{lineno}: malformed JSON line: {e}") from None
    if rec is not None:
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
      records.append(rec)
    pos = end + 1 if complete else len(data)
  return records, pos
