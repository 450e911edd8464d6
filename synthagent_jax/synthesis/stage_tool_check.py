"""Stage 4: drop tools the model could do by itself, shorten outputs to simulatable text, add 1-2
distractor tools."""

from __future__ import annotations

import json
from typing import Sequence

from synthagent_jax.synthesis import stage_tools_task
from synthagent_jax.synthesis import teacher as teacher_lib
from synthagent_jax.synthesis.teacher import Reject, require

NAME = "tool_check"
MAX_OUTPUT_CHARS = 400  # a "short text" tool output; longer ones must be shortened


def apply_reply(rec: dict, obj: dict) -> dict:
  names = [t["function"]["name"] for t in rec["tools"]]
  drop = require(obj, "drop", list)
  dropped = []
  for i, d in enumerate(drop):
    name = require(d, "name", str, f"drop[{i}]")
    if name not in names:
      raise Reject("unknown_tool", f"drop[{i}].name {name!r} is not one of {names}")
    dropped.append(name)
  tools = [t for t in rec["tools"] if t["function"]["name"] not in dropped]
  responses = [r for r in rec["responses"] if r["tool"] not in dropped]
  if not responses:
    raise Reject("dropped_needed_tool", "every tool the task's responses use was dropped")
  shorten = obj.get("shorten", [])
  if not isinstance(shorten, list):
    raise Reject("bad_field", "shorten should be a list")
  for i, s in enumerate(shorten):
    tool = require(s, "tool", str, f"shorten[{i}]")
    text = require(s, "output", str, f"shorten[{i}]").strip()
    hits = [r for r in responses if r["tool"] == tool]
    if not hits or not text:
      raise Reject("unknown_tool", f"shorten[{i}] names no remaining response of {tool!r}")
    for r in hits:
      r["output"] = text
  raw = require(obj, "distractors", list)
  if not 1 <= len(raw) <= 2:
    raise Reject("distractor_count", f"{len(raw)} distractors; need 1 or 2")
  distractors = [stage_tools_task.parse_tool(d, f"distractors[{i}]") for i, d in enumerate(raw)]
  all_names = [t["function"]["name"] for t in tools + distractors]
  if len(set(all_names)) != len(all_names):
    raise Reject("bad_tool", f"a distractor reuses a tool name: {all_names}")
  too_long = [r["tool"] for r in responses if len(r["output"]) > MAX_OUTPUT_CHARS]
  if too_long:
    raise Reject("output_too_long", f"outputs of {too_long} exceed {MAX_OUTPUT_CHARS} chars; "
                 "shorten them")
  forbidden = dict(rec["forbidden"])
  if forbidden.get("tool") in dropped:
    forbidden["tool"] = None
  return {**rec, "tools": tools + distractors, "responses": responses, "forbidden": forbidden,
          "dropped_tools": dropped,
          "distractors": [t["function"]["name"] for t in distractors]}


def conversation(rec: dict) -> list[dict]:
  tools = json.dumps([{**t["function"], "kind": t["kind"]} for t in rec["tools"]],
                     ensure_ascii=False)
  return [{"role": "system", "content": teacher_lib.render_prompt(
              NAME, full_task=rec["full_task"], tools=tools)},
          {"role": "user", "content": "Check the tools now."}]


def run(records: Sequence[dict], teacher, cfg) -> list[teacher_lib.Answer]:
  # apply_reply must not mutate the stored record across retries: copy the responses first.
  def parse(i, obj):
    rec = {**records[i], "responses": [dict(r) for r in records[i]["responses"]]}
    return apply_reply(rec, obj)
  return teacher_lib.ask_json(teacher, [conversation(r) for r in records], parse,
                              cfg.max_retries, cfg.sampling)
