"""Toy-world specs for the offline teacher: loading, validation and value sampling.

A world spec is one JSON file in `data/worlds/` describing one domain::

    {"domain": str,
     "personas": [str, ...],
     "tools": [{"name", "kind": "read"|"write", "description", "parameters": {JSON schema}}],
     "slots": {slot: [value, ...] | "@PATTERN"},   # '#' -> digit, '?' -> letter, rest literal
     "questions": {slot: str},                      # how the expert asks the user for a slot
     "givens": {slot: template},                    # how an instruction states a maybe-private slot
     "intents": [Intent, ...]}
    Intent = {"name": str,
              "templates": [str, ...],        # instruction; `{slot}` placeholders, never private ones
              "private": [slot, ...],         # withheld from the instruction -> user.private_info
              "maybe_private": [slot, ...],   # optional: withheld in some tasks, stated (givens) in
                                              # others, so the details to ask for vary per task
              "reason": str,                  # why only the user knows them
              "calls": [{"tool", "arguments": {arg: template}, "response": template}, ...],
              "answer": template,             # the expert's final answer text
              "forbidden": {"tool": str, "reason": str}}

Every spec is validated on load so a typo fails with the file and the field, not as a
KeyError halfway through generating thousands of tasks.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import random
import string

MAX_TOOLS = 8  # per domain; a task lists only some of them (synthesis/offline.py)
DEFAULT_WORLDS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "worlds")


class WorldSpecError(ValueError):
  """A world spec file is malformed; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class WorldSpec:
  """One domain's toy world, as loaded from JSON."""

  domain: str
  personas: tuple[str, ...]
  tools: tuple[dict, ...]
  slots: dict
  questions: dict
  intents: tuple[dict, ...]
  path: str = ""
  givens: dict = dataclasses.field(default_factory=dict)

  def tool(self, name: str) -> dict:
    for t in self.tools:
      if t["name"] == name:
        return t
    raise KeyError(name)

  def task_tools(self) -> list[dict]:
    """The domain's tools in the Task schema shape."""
    return [{"type": "function", "kind": t["kind"],
             "function": {"name": t["name"], "description": t["description"],
                          "parameters": t["parameters"]}} for t in self.tools]


def template_fields(template: str) -> list[str]:
  """Names of the `{slot}` placeholders in a format template."""
  return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _templates_in(value) -> list[str]:
  if isinstance(value, str):
    return [value]
  if isinstance(value, dict):
    return [s for v in value.values() for s in _templates_in(v)]
  return []


def _err(path: str, field: str, msg: str):
  raise WorldSpecError(f"{path}: {field}: {msg}")


def parse_world(d: dict, path: str = "<world>") -> WorldSpec:
  """Validates one world-spec dict and returns it as a WorldSpec."""
  for key in ("domain", "personas", "tools", "slots", "intents"):
    if key not in d:
      _err(path, key, "missing required field")
  tools = d["tools"]
  names = [t.get("name") for t in tools]
  if len(set(names)) != len(names):
    _err(path, "tools", f"duplicate tool names in {names}")
  for i, t in enumerate(tools):
    for key in ("name", "kind", "description", "parameters"):
      if key not in t:
        _err(path, f"tools[{i}].{key}", "missing required field")
    if t["kind"] not in ("read", "write"):
      _err(path, f"tools[{i}].kind", f"must be read or write, got {t['kind']!r}")
  if not 3 <= len(tools) <= MAX_TOOLS:
    _err(path, "tools", f"a domain has 3-{MAX_TOOLS} tools (incl. distractors), got {len(tools)}")
  slots = d["slots"]
  for slot, space in slots.items():
    ok = (isinstance(space, list) and space and all(isinstance(v, str) and v for v in space)) or (
        isinstance(space, str) and space.startswith("@") and len(space) > 1)
    if not ok:
      _err(path, f"slots.{slot}", "must be a non-empty list of strings or an '@PATTERN' string")
  givens = d.get("givens", {})
  for slot, phrase in givens.items():
    if slot not in slots:
      _err(path, f"givens.{slot}", "not a slot")
    if not isinstance(phrase, str) or slot not in template_fields(phrase):
      _err(path, f"givens.{slot}", f"must be a template that shows {{{slot}}}")
  if not d["personas"]:
    _err(path, "personas", "needs at least one persona")
  for j, intent in enumerate(d["intents"]):
    where = f"intents[{j}]"
    for key in ("name", "templates", "private", "calls", "answer", "forbidden"):
      if key not in intent:
        _err(path, f"{where}.{key}", "missing required field")
    if not intent["private"]:
      _err(path, f"{where}.private", "every intent withholds at least one slot")
    for slot in intent["private"]:
      if slot not in slots:
        _err(path, f"{where}.private", f"unknown slot {slot!r}")
    maybe = intent.get("maybe_private", [])
    for slot in maybe:
      if slot not in slots or slot in intent["private"]:
        _err(path, f"{where}.maybe_private", f"{slot!r} is not a slot, or is always private")
      if slot not in givens:
        _err(path, f"{where}.maybe_private", f"{slot!r} has no `givens` phrase to state it with")
    used = [f for c in intent["calls"] for s in _templates_in(c) for f in template_fields(s)]
    used += template_fields(intent["answer"])
    for tpl in intent["templates"]:
      fields = template_fields(tpl)
      leaked = set(fields) & (set(intent["private"]) | set(maybe))
      if leaked:
        _err(path, f"{where}.templates", f"template {tpl!r} shows private slot(s) {sorted(leaked)}")
      used += fields
    for f in used:
      if f not in slots:
        _err(path, where, f"placeholder {{{f}}} is not a slot")
    called = set()
    for k, call in enumerate(intent["calls"]):
      if call.get("tool") not in names:
        _err(path, f"{where}.calls[{k}].tool", f"unknown tool {call.get('tool')!r}")
      props = next(t for t in tools if t["name"] == call["tool"])["parameters"].get("properties", {})
      for arg in call.get("arguments", {}):
        if arg not in props:
          _err(path, f"{where}.calls[{k}].arguments.{arg}", f"not a parameter of {call['tool']}")
      called.add(call["tool"])
    forbidden = intent["forbidden"].get("tool")
    if forbidden not in names:
      _err(path, f"{where}.forbidden.tool", f"unknown tool {forbidden!r}")
    if forbidden in called:
      _err(path, f"{where}.forbidden.tool", f"{forbidden!r} is also a reference call")
  return WorldSpec(domain=d["domain"], personas=tuple(d["personas"]), tools=tuple(tools),
                   slots=dict(slots), questions=dict(d.get("questions", {})),
                   intents=tuple(d["intents"]), path=path, givens=dict(givens))


def load_worlds(directory: str = DEFAULT_WORLDS_DIR) -> list[WorldSpec]:
  """Loads every `*.json` world spec in `directory`, sorted by domain name."""
  paths = sorted(glob.glob(os.path.join(directory, "*.json")))
  if not paths:
    raise WorldSpecError(f"{directory}: no *.json world specs found")
  worlds = []
  for p in paths:
    with open(p, encoding="utf-8") as f:
      try:
        d = json.load(f)
      except json.JSONDecodeError as e:
        raise WorldSpecError(f"{p}: invalid JSON: {e}") from e
    worlds.append(parse_world(d, p))
  domains = [w.domain for w in worlds]
  if len(set(domains)) != len(domains):
    raise WorldSpecError(f"{directory}: duplicate domains {domains}")
  return sorted(worlds, key=lambda w: w.domain)


def sample_value(space, rng: random.Random) -> str:
  """One value from a slot's space: a list choice, or a filled '@PATTERN'."""
  if isinstance(space, list):
    return rng.choice(space)
  out = []
  for ch in space[1:]:
    if ch == "#":
      out.append(rng.choice(string.digits))
    elif ch == "?":
      out.append(rng.choice(string.ascii_uppercase))
    else:
      out.append(ch)
  return "".join(out)


def fill(value, values: dict):
  """Formats templates (strings, or dicts of them) with slot values."""
  if isinstance(value, str):
    return value.format(**values)
  if isinstance(value, dict):
    return {k: fill(v, values) for k, v in value.items()}
  return value
