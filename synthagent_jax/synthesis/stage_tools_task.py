"""Stage 2: the tool ecosystem and the complete task (tools, world facts, canned responses,
full task, 5-7 subgoal workflow, one forbidden-use rule with its reason)."""

from __future__ import annotations

import json
from typing import Sequence

from synthagent_jax.envs import task as task_lib
from synthagent_jax.synthesis import teacher as teacher_lib
from synthagent_jax.synthesis.teacher import Reject, require

NAME = "tools_task"
MIN_TOOLS, MAX_TOOLS = 3, 5
MIN_STEPS, MAX_STEPS = 5, 7


def parse_tool(d: dict, where: str) -> dict:
  """A teacher tool {"name","kind","description","parameters"} -> Task-schema tool dict."""
  if not isinstance(d, dict):
    raise Reject("bad_field", f"{where} should be an object")
  raw = {"type": "function", "kind": d.get("kind", "read"),
         "function": {"name": require(d, "name", str, where),
                      "description": require(d, "description", str, where),
                      "parameters": require(d, "parameters", dict, where)}}
  try:
    return task_lib.Tool.from_dict(raw, where).to_dict()
  except task_lib.TaskValidationError as e:
    raise Reject("bad_tool", str(e)) from e


def parse_responses(raw: list, tools: Sequence[dict], where: str = "responses") -> list[dict]:
  """Canned responses; each names a known tool, only its parameters, and a non-empty output."""
  params = {t["function"]["name"]: t["function"]["parameters"].get("properties", {})
            for t in tools}
  out = []
  for i, r in enumerate(raw):
    w = f"{where}[{i}]"
    name = require(r, "tool", str, w)
    if name not in params:
      raise Reject("unknown_tool", f"{w}.tool {name!r} is not one of {sorted(params)}")
    args = r.get("arguments", {})
    if not isinstance(args, dict):
      raise Reject("bad_field", f"{w}.arguments should be an object")
    extra = [a for a in args if a not in params[name]]
    if extra:
      raise Reject("bad_field", f"{w}.arguments {extra} are not parameters of {name}")
    output = r.get("output")
    if output is None or (isinstance(output, str) and not output.strip()):
      raise Reject("missing_field", f"{w}.output")
    out.append({"tool": name, "arguments": args,
                "output": output if isinstance(output, str) else json.dumps(output)})
  return out


def parse_reply(obj: dict) -> dict:
  raw_tools = require(obj, "tools", list)
  if not MIN_TOOLS <= len(raw_tools) <= MAX_TOOLS:
    raise Reject("tool_count", f"{len(raw_tools)} tools; need {MIN_TOOLS}-{MAX_TOOLS}")
  tools = [parse_tool(t, f"tools[{i}]") for i, t in enumerate(raw_tools)]
  names = [t["function"]["name"] for t in tools]
  if len(set(names)) != len(names):
    raise Reject("bad_tool", f"duplicate tool names {names}")
  if {t["kind"] for t in tools} != {"read", "write"}:
    raise Reject("tool_kinds", "need at least one read and one write tool")
  facts = require(obj, "facts", dict)
  responses = parse_responses(require(obj, "responses", list), tools)
  if not responses:
    raise Reject("missing_field", "responses (empty)")
  full_task = require(obj, "full_task", str).strip()
  if not full_task:
    raise Reject("missing_field", "full_task (empty)")
  workflow = require(obj, "workflow", list)
  if not MIN_STEPS <= len(workflow) <= MAX_STEPS or not all(
      isinstance(s, str) and s.strip() for s in workflow):
    raise Reject("workflow_length", f"{len(workflow)} steps; need {MIN_STEPS}-{MAX_STEPS} strings")
  forbidden = require(obj, "forbidden", dict)
  rule = require(forbidden, "rule", str, "forbidden").strip()
  reason = require(forbidden, "reason", str, "forbidden").strip()
  if not rule or not reason:
    raise Reject("missing_field", "forbidden.rule/reason (empty)")
  ftool = forbidden.get("tool")
  if ftool is not None and ftool not in names:
    raise Reject("unknown_tool", f"forbidden.tool {ftool!r} is not one of {names}")
  return {"tools": tools, "facts": facts, "responses": responses, "full_task": full_task,
          "workflow": [s.strip() for s in workflow],
          "forbidden": {"rule": rule, "tool": ftool, "reason": reason}}


def conversation(rec: dict) -> list[dict]:
  return [{"role": "system", "content": teacher_lib.render_prompt(
              NAME, persona=rec["persona"], domain=rec["domain"])},
          {"role": "user", "content": "Design the world now."}]


def run(records: Sequence[dict], teacher, cfg) -> list[teacher_lib.Answer]:
  answers = teacher_lib.ask_json(teacher, [conversation(r) for r in records],
                                 lambda i, obj: {**records[i], **parse_reply(obj)},
                                 cfg.max_retries, cfg.sampling)
  return answers
