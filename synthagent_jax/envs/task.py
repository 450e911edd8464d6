"""The Task schema: one simulated world, its user, and its rubric. One JSON object per JSONL line.

Record shape (also in docs/SPECS.md, "Task record")::

    {"id": str, "domain": str,
     "instruction": str,        # underspecified text the agent sees
     "full_task": str,          # complete task (judges and teachers only)
     "tools": [{"type": "function", "kind": "read"|"write",
                "function": {"name": str, "description": str, "parameters": {JSON schema, type object}}}],
     "world": World,            # below
     "user": {"persona": str, "private_info": {slot: non-empty str}, "reason": str},
     "rubric": {"subgoals": [Item], "interactions": [Item], "forbidden": [Item]},
     "reference": null | [chat messages],
     "metadata": {}}
    Item, Check: envs/rubric_schema.py (the rubric's item and check records)

World shape (what the mock tools draw from; `envs/tools.MockToolSystem` is its interpreter)::

    {"facts": {str: any JSON},    # ground truth in words/values; shown to LLM tool simulators
                                  # and judges, never returned by a tool directly
     "state": {str: any JSON},    # the mutable world; each episode gets its own deep copy
     "responses": [Response, ...]}
    Response = {"tool": tool name,
                "arguments": {name: value},   # matches a call whose normalised arguments contain
                                              # these (normalised) pairs; the entry with the most
                                              # pairs wins, ties go to the earliest entry
                "output": str | any JSON,     # the observation (JSON is dumped with sorted keys) ...
                "state_path": "a.b.0.c",      # ... or instead: the episode state at this dotted
                                              # path, read after this entry's effects are applied
                "effects": [Effect, ...]}     # optional; only allowed on write tools
    Effect = {"op": "set", "path": "a.b", "value": any}      # creates missing dict levels
           | {"op": "append", "path": "a.list", "value": any}
           | {"op": "delete", "path": "a.b"}

Normalisation (for matching and caching): strings are stripped, whitespace-collapsed and
casefolded; integral floats become ints; dict keys are sorted. A call nothing in `responses`
matches is "unscripted": the tool system simulates it with an LLM (then caches the answer per
task) or answers a deterministic "no record found" observation. Unscripted calls never mutate
state. Nothing in a task is ever executed as code.

Python API: `Task.from_dict(d)` (raises `TaskValidationError(field, message)`), `Task.to_dict()`,
`load_tasks(path) -> (tasks, errors)` (each error names file:line:field; the bad record, even bad
UTF-8, NaN or deep nesting, is skipped and counted), `save_tasks(tasks, path)`. Validation rules:
envs/validate.py (EFFECT_OPS, MESSAGE_ROLES, TaskValidationError, split_path re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

from synthagent_jax.envs.rubric_schema import Rubric
from synthagent_jax.envs.validate import (EFFECT_OPS, MESSAGE_ROLES, TaskValidationError,
                                          check_json_value, check_keys, check_rubric_references,
                                          check_tool_schema, fail, join, nonempty_str, req,
                                          split_path, validate_messages, validate_world)

TOOL_KINDS = ("read", "write")


@dataclasses.dataclass(frozen=True)
class TaskError:
  """One rejected JSONL record: where it is and what is wrong."""

  path: str
  line: int  # 1-based
  field: str
  message: str

  def __str__(self) -> str:
    return f"{self.path}:{self.line}: {self.field}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Tool:
  """One OpenAI function tool plus whether it reads or writes the world."""

  name: str
  description: str
  parameters: dict
  kind: str = "read"

  @classmethod
  def from_dict(cls, d: dict, where: str = "tool") -> "Tool":
    req(d, "function", dict, where)
    if d.get("type", "function") != "function":
      fail(join(where, "type"), f"must be 'function', got {d.get('type')!r}")
    kind = d.get("kind", "read")
    if kind not in TOOL_KINDS:
      fail(join(where, "kind"), f"must be one of {TOOL_KINDS}, got {kind!r}")
    fn_where = join(where, "function")
    fn = d["function"]
    name = nonempty_str(fn, "name", fn_where)
    description = req(fn, "description", str, fn_where)
    params = req(fn, "parameters", dict, fn_where)
    pwhere = join(fn_where, "parameters")
    if params.get("type") != "object":
      fail(join(pwhere, "type"), f"tool parameters must be a JSON schema of type 'object', "
            f"got {params.get('type')!r}")
    check_tool_schema(params, pwhere)
    return cls(name=name, description=description, parameters=params, kind=kind)

  def __hash__(self) -> int:
    return hash((self.name, self.kind))

  def to_dict(self) -> dict:
    return {"type": "function", "kind": self.kind, "function": self.openai_function()}

  def openai_function(self) -> dict:
    return {"name": self.name, "description": self.description, "parameters": self.parameters}

  def openai_schema(self) -> dict:
    """The tool as a chat template expects it (no `kind`)."""
    return {"type": "function", "function": self.openai_function()}


@dataclasses.dataclass(frozen=True)
class UserProfile:
  persona: str
  private_info: dict[str, str]
  reason: str = ""

  @classmethod
  def from_dict(cls, d: dict, where: str = "user") -> "UserProfile":
    check_keys(d, ("persona", "private_info", "reason"), where)
    persona = req(d, "persona", str, where)
    info = req(d, "private_info", dict, where)
    for slot, value in info.items():
      if not str(slot).strip():
        fail(join(where, "private_info"), "slot names must be non-empty")
      if not isinstance(value, str) or not value.strip():
        fail(join(where, f"private_info.{slot}"), "every private_info slot needs a non-empty "
              f"string value, got {value!r}")
    reason = d.get("reason", "")
    if not isinstance(reason, str):
      fail(join(where, "reason"), f"expected str, got {type(reason).__name__}")
    return cls(persona=persona, private_info=dict(info), reason=reason)

  def to_dict(self) -> dict:
    return {"persona": self.persona, "private_info": dict(self.private_info), "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class Task:
  """One validated task. Construct with `Task.from_dict`; `to_dict` round-trips exactly."""

  id: str
  domain: str
  instruction: str
  full_task: str
  tools: tuple[Tool, ...]
  world: dict
  user: UserProfile
  rubric: Rubric
  reference: list[dict] | None = None
  metadata: dict = dataclasses.field(default_factory=dict)

  _KEYS = ("id", "domain", "instruction", "full_task", "tools", "world", "user", "rubric",
           "reference", "metadata")

  @classmethod
  def from_dict(cls, d: Any) -> "Task":
    if not isinstance(d, dict):
      fail("<record>", f"expected a JSON object, got {type(d).__name__}")
    check_json_value(d)
    check_keys(d, cls._KEYS, "")
    task_id = nonempty_str(d, "id", "")
    domain = nonempty_str(d, "domain", "")
    instruction = nonempty_str(d, "instruction", "")
    full_task = nonempty_str(d, "full_task", "")
    raw_tools = req(d, "tools", list, "")
    if not raw_tools:
      fail("tools", "a task needs at least one tool")
    tools: dict[str, Tool] = {}
    for i, t in enumerate(raw_tools):
      tool = Tool.from_dict(t, f"tools[{i}]")
      if tool.name in tools:
        fail(f"tools[{i}].function.name", f"duplicate tool name {tool.name!r}")
      tools[tool.name] = tool
    world = d.get("world", {})
    if not isinstance(world, dict):
      fail("world", f"expected an object, got {type(world).__name__}")
    validate_world(world, tools)
    world = {"facts": world.get("facts", {}), "state": world.get("state", {}),
             "responses": world.get("responses", [])}
    user = UserProfile.from_dict(req(d, "user", dict, ""))
    rubric = Rubric.from_dict(req(d, "rubric", dict, ""))
    check_rubric_references(rubric, tools, user.private_info)
    reference = d.get("reference")
    if reference is not None:
      if not isinstance(reference, list):
        fail("reference", f"expected null or a list of messages, got {type(reference).__name__}")
      validate_messages(reference, "reference")
    metadata = d.get("metadata", {})
    if not isinstance(metadata, dict):
      fail("metadata", f"expected an object, got {type(metadata).__name__}")
    return cls(id=task_id, domain=domain, instruction=instruction, full_task=full_task,
               tools=tuple(tools.values()), world=world, user=user, rubric=rubric,
               reference=reference, metadata=metadata)

  def to_dict(self) -> dict:
    return {"id": self.id, "domain": self.domain, "instruction": self.instruction,
            "full_task": self.full_task, "tools": [t.to_dict() for t in self.tools],
            "world": self.world, "user": self.user.to_dict(), "rubric": self.rubric.to_dict(),
            "reference": self.reference, "metadata": self.metadata}

  def __hash__(self) -> int:  # Fields hold dicts; a task's identity is its id.
    return hash(self.id)

  def tool(self, name: str) -> Tool | None:
    for t in self.tools:
      if t.name == name:
        return t
    return None

  @property
  def tool_names(self) -> list[str]:
    return [t.name for t in self.tools]

  def openai_tools(self) -> list[dict]:
    """Tool schemas for the chat template (`tools=` argument)."""
    return [t.openai_schema() for t in self.tools]


def _refuse_constant(literal: str):
  raise ValueError(f"{literal} is not a JSON number")


def load_tasks(path: str | os.PathLike) -> tuple[list[Task], list[TaskError]]:
  """Reads a JSONL file. Bad records are skipped and each is reported as a TaskError.

  Blank lines are ignored. A repeated task id is an error on the later line.
  """
  path = os.fspath(path)
  tasks: list[Task] = []
  errors: list[TaskError] = []
  seen: set[str] = set()
  with open(path, "rb") as f:  # bytes: one undecodable line must not stop the others
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        errors.append(TaskError(path, lineno, "<json>", f"invalid UTF-8: byte {raw[e.start]:#04x} "
                                f"at column {e.start + 1}"))
        continue
      if not line.strip():
        continue
      try:
        record = json.loads(line, parse_constant=_refuse_constant)
      except json.JSONDecodeError as e:
        errors.append(TaskError(path, lineno, "<json>",
                                f"invalid JSON: {e.msg} at column {e.colno}"))
        continue
      except (ValueError, RecursionError) as e:  # a huge integer, NaN, nesting past the stack
        msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        errors.append(TaskError(path, lineno, "<json>", f"invalid JSON: {msg}"))
        continue
      try:
        task = Task.from_dict(record)
      except TaskValidationError as e:  # values nest <= 64 levels, so no RecursionError here
        errors.append(TaskError(path, lineno, e.field, e.message))
        continue
      if task.id in seen:
        errors.append(TaskError(path, lineno, "id", f"duplicate task id {task.id!r}"))
        continue
      seen.add(task.id)
      tasks.append(task)
  return tasks, errors


def save_tasks(tasks: Iterable[Task], path: str | os.PathLike) -> int:
  """Writes tasks as JSONL (atomic replace). Returns the number written."""
  path = os.fspath(path)
  tmp = f"{path}.tmp.{os.getpid()}"
  n = 0
  with open(tmp, "w", encoding="utf-8") as f:
    for task in tasks:
      f.write(json.dumps(task.to_dict(), ensure_ascii=False) + "\n")
      n += 1
  os.replace(tmp, path)
  return n
