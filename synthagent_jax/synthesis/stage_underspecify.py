"""Stage 3: rewrite the complete task into a short instruction that withholds what only the user
knows. A rewrite that still contains a private value is rejected (and retried with the reason)."""

from __future__ import annotations

import json
import re
from typing import Sequence

from synthagent_jax.synthesis import teacher as teacher_lib
from synthagent_jax.synthesis.teacher import Reject, require

NAME = "underspecify"
_SLOT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _norm(text: str) -> str:
  return " ".join(re.sub(r"[^0-9a-z]+", " ", text.casefold()).split())


def leaked_values(instruction: str, private_info: dict) -> list[str]:
  """Private slots whose value appears in the instruction (case, spacing and punctuation ignored:
  "AB-12" leaks as "ab 12")."""
  text = f" {_norm(instruction)} "
  return [slot for slot, v in private_info.items() if _norm(str(v)) and
          f" {_norm(str(v))} " in text]


def parse_reply(obj: dict) -> dict:
  instruction = require(obj, "instruction", str).strip()
  if not instruction:
    raise Reject("missing_field", "instruction (empty)")
  private = require(obj, "private_info", dict)
  if not private:
    raise Reject("nothing_withheld", "private_info is empty; withhold at least one detail")
  clean = {}
  for slot, value in private.items():
    if not _SLOT.match(str(slot)):
      raise Reject("bad_field", f"private_info slot {slot!r} is not a snake_case name")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      value = str(value)
    if not isinstance(value, str) or not value.strip():
      raise Reject("bad_field", f"private_info.{slot} needs a non-empty string value")
    clean[slot] = value.strip()
  leaks = leaked_values(instruction, clean)
  if leaks:
    raise Reject("leaks_private_value", f"the instruction contains the value of {leaks}")
  reason = obj.get("reason", "")
  return {"instruction": instruction, "private_info": clean,
          "reason": reason if isinstance(reason, str) else ""}


def conversation(rec: dict) -> list[dict]:
  return [{"role": "system", "content": teacher_lib.render_prompt(
              NAME, full_task=rec["full_task"], facts=json.dumps(rec["facts"], ensure_ascii=False))},
          {"role": "user", "content": "Rewrite the task now."}]


def run(records: Sequence[dict], teacher, cfg) -> list[teacher_lib.Answer]:
  return teacher_lib.ask_json(teacher, [conversation(r) for r in records],
                              lambda i, obj: {**records[i], **parse_reply(obj)},
                              cfg.max_retries, cfg.sampling)
