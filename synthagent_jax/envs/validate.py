"""Validation helpers of the Task schema (envs/task.py): field errors, the world validator, the
checks every JSON value of a record passes, and the tool-schema safety rules.

Contract:
- Every check raises `TaskValidationError(field, message)` naming a dotted field path
  (`world.responses[2].effects[0].op`); nothing here returns a partial result.
- `check_json_value(value, where)`: a record's values are plain JSON a rollout can use: finite
  numbers only (an `Infinity` weight would give a NaN reward), strings that encode as UTF-8 (a
  lone surrogate would fail the whole rollout batch when tokenized), nesting at most
  `MAX_DEPTH` levels. Iterative, so a hostile record cannot exhaust the stack.
- `check_tool_schema(schema, where)`: a tool's JSON schema never reaches the network and cannot
  make a match hang: only local `$ref`s (`#/...`; no `$id` that rebases them, no remote
  `$dynamicRef` / `$recursiveRef`), every `pattern` / `patternProperties` key compiles, nests
  groups at most `MAX_PATTERN_NESTING` deep, and repeats no group that is itself a bare repeat
  (`(a+)+`, `(?:\\d*)*`, the classic exponential backtracking shape). Matching is bounded too (envs/tools.py runs patterns with a
  timeout and resolves references in an empty registry), for the shapes no static rule sees.
- `validate_world(world, tools, where)`: the world shape documented in envs/task.py;
  `validate_messages` a reference conversation; `check_rubric_references` that rubric checks
  name the task's tools and the user's slots.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import jsonschema

try:  # CPython's own regex parser: lets us read a pattern's structure without running it.
  from re import _constants as _sre_constants
  from re import _parser as _sre_parse
except ImportError:  # Python < 3.11
  import sre_constants as _sre_constants  # type: ignore[no-redef]
  import sre_parse as _sre_parse  # type: ignore[no-redef]

EFFECT_OPS = ("set", "append", "delete")
MESSAGE_ROLES = ("system", "user", "assistant", "tool")
MAX_DEPTH = 64           # nesting levels (objects and arrays) of any value in a task record
MAX_PATTERN_CHARS = 1000
MAX_PATTERN_NESTING = 32  # parenthesised groups inside one another
_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
# Schema keywords whose values are data, not subschemas: never read as schema keywords.
_DATA_KEYS = ("enum", "const", "default", "examples")
_REPEATS = (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT)


class TaskValidationError(ValueError):
  """A record breaks the schema. `field` is a dotted path such as `rubric.subgoals[1].check.name`."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


def fail(field: str, message: str):
  raise TaskValidationError(field, message)


def join(where: str, key: str) -> str:
  return f"{where}.{key}" if where else key


def req(d: dict, key: str, typ, where: str):
  """`d[key]`, which must exist and have type `typ` (bool is not an int here)."""
  if not isinstance(d, dict):
    fail(where or "<record>", f"expected an object, got {type(d).__name__}")
  if key not in d:
    fail(join(where, key), "missing required field")
  value = d[key]
  types = typ if isinstance(typ, tuple) else (typ,)
  if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
    names = "/".join(t.__name__ for t in types)
    fail(join(where, key), f"expected {names}, got {type(value).__name__}")
  return value


def nonempty_str(d: dict, key: str, where: str) -> str:
  value = req(d, key, str, where)
  if not value.strip():
    fail(join(where, key), "must be a non-empty string")
  return value


def check_keys(d: dict, allowed: Iterable[str], where: str):
  extra = sorted(set(d) - set(allowed))
  if extra:
    fail(join(where, extra[0]), f"unknown field (allowed: {', '.join(sorted(allowed))})")


def split_path(path: str | Sequence[str], where: str = "path") -> list[str]:
  """A dotted state path ("orders.A1.status") or a list of keys -> list of keys."""
  if isinstance(path, str):
    keys = path.split(".")
  elif isinstance(path, (list, tuple)) and all(isinstance(k, (str, int)) for k in path):
    keys = [str(k) for k in path]
  else:
    fail(where, f"a path is a dotted string or a list of keys, got {path!r}")
  if not keys or any(not k for k in keys):
    fail(where, f"empty key in path {path!r}")
  return keys


def _check_str(s: str, where: str):
  try:
    s.encode("utf-8")
  except UnicodeEncodeError as e:
    fail(where or "<record>", f"string cannot be encoded as UTF-8 ({e.reason} at index "
         f"{e.start}: {s[e.start]!r}); lone surrogates are not text")


def check_json_value(value: Any, where: str = "") -> None:
  """Finite numbers, UTF-8-encodable strings (keys too), at most MAX_DEPTH levels deep."""
  stack = [(value, where, 0)]
  while stack:
    node, path, depth = stack.pop()
    if isinstance(node, float) and not math.isfinite(node):
      fail(path or "<record>", f"number must be finite, got {node}")
    elif isinstance(node, str):
      _check_str(node, path)
    elif isinstance(node, (dict, list, tuple)):
      if depth >= MAX_DEPTH:
        fail(path or "<record>", f"nested deeper than {MAX_DEPTH} levels")
      if isinstance(node, dict):
        for k, v in node.items():
          key = str(k)
          _check_str(key, join(path, "<key>"))
          stack.append((v, join(path, key), depth + 1))
      else:
        stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


# ---- tool schemas -------------------------------------------------------------------------------

def _bare_repeat(items) -> bool:
  """Whether a parsed (sub)pattern is, through groups only, one repeat that can loop."""
  while len(items) == 1:
    op, av = items[0]
    if op in _REPEATS:
      return av[1] > 1
    if op is not _sre_constants.SUBPATTERN:
      return False
    items = av[3]
  return False


def _group_depth(pattern: str) -> int:
  """Deepest nesting of parentheses, outside escapes and character classes."""
  depth = deepest = i = 0
  in_class = False
  while i < len(pattern):
    ch = pattern[i]
    if ch == "\\":
      i += 1  # the escaped character is literal
    elif in_class:
      in_class = ch != "]"
    elif ch == "[":
      in_class = True
      i += 1 if pattern[i + 1:i + 2] == "^" else 0
      i += 1 if pattern[i + 1:i + 2] == "]" else 0  # a leading ] is a member
    elif ch == "(":
      depth += 1
      deepest = max(deepest, depth)
    elif ch == ")":
      depth -= 1
    i += 1
  return deepest


def _nested_quantifier(items) -> bool:
  """Whether a parsed pattern repeats a group whose whole body is itself a repeat."""
  stack = [items]
  while stack:
    for op, av in stack.pop():
      if op in _REPEATS:
        if av[1] > 1 and _bare_repeat(av[2]):
          return True
        stack.append(av[2])
      elif op is _sre_constants.SUBPATTERN:
        stack.append(av[3])
      elif op is _sre_constants.BRANCH:
        stack.extend(av[1])
      elif op in (_sre_constants.ASSERT, _sre_constants.ASSERT_NOT):
        stack.append(av[1])
      elif op is getattr(_sre_constants, "ATOMIC_GROUP", None):
        stack.append(av)
      elif op is _sre_constants.GROUPREF_EXISTS:
        stack.extend(p for p in av[1:] if p is not None)
  return False


def check_pattern(pattern: Any, where: str) -> None:
  """A schema regex: a string that compiles, at most MAX_PATTERN_CHARS, no nested quantifier."""
  if not isinstance(pattern, str):
    fail(where, f"a pattern must be a string, got {type(pattern).__name__}")
  if len(pattern) > MAX_PATTERN_CHARS:
    fail(where, f"pattern is {len(pattern)} characters (at most {MAX_PATTERN_CHARS})")
  if _group_depth(pattern) > MAX_PATTERN_NESTING:
    fail(where, f"pattern {pattern[:60]!r} nests groups deeper than {MAX_PATTERN_NESTING} levels")
  try:
    parsed = _sre_parse.parse(pattern)
    re.compile(pattern)
  except (re.error, RecursionError, OverflowError) as e:
    fail(where, f"pattern {pattern[:60]!r} is not a valid regular expression ({e})")
  if _nested_quantifier(list(parsed)):
    fail(where, f"pattern {pattern[:60]!r} repeats a repeated group (like (a+)+): its matching "
         "time can grow exponentially with the argument's length; repeat the inner item once")


def check_tool_schema(schema: dict, where: str) -> None:
  """A valid JSON schema (its own meta-schema) with no remote references and only bounded-cost
  patterns anywhere."""
  stack = [(schema, where)]
  while stack:
    node, path = stack.pop()
    if isinstance(node, list):
      stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
      continue
    if not isinstance(node, dict):
      continue
    for key, value in node.items():
      kpath = join(path, key)
      if key in _DATA_KEYS:
        continue
      if key in _REF_KEYS:
        if not isinstance(value, str) or not value.startswith("#"):
          fail(kpath, f"only local references ('#/...') are allowed, got {value!r}: a task "
               "never reaches the network")
      elif key in ("$id", "id") and isinstance(value, str) and not value.startswith("#"):
        fail(kpath, f"{key} {value!r} would rebase local references onto another document; "
             "remove it")
      elif key == "pattern" and isinstance(value, str):
        check_pattern(value, kpath)
      elif key == "patternProperties" and isinstance(value, dict):
        for p in value:
          check_pattern(p, join(kpath, p))
      stack.append((value, kpath))
  # After the rules above: the meta-schema check compiles every pattern, so they must be sane.
  try:
    jsonschema.validators.validator_for(schema).check_schema(schema)
  except jsonschema.SchemaError as e:
    fail(where, f"invalid JSON schema: {e.message}")
  except RecursionError:
    fail(where, "invalid JSON schema: nested too deeply")


# ---- worlds -------------------------------------------------------------------------------------

def validate_world(world: dict, tools: dict, where: str = "world"):
  """The world shape documented in envs/task.py; `tools` maps names to envs.task.Tool."""
  check_keys(world, ("facts", "state", "responses"), where)
  for key in ("facts", "state"):
    if not isinstance(world.get(key, {}), dict):
      fail(join(where, key), f"expected an object, got {type(world[key]).__name__}")
  responses = world.get("responses", [])
  if not isinstance(responses, list):
    fail(join(where, "responses"), f"expected a list, got {type(responses).__name__}")
  for i, r in enumerate(responses):
    rwhere = f"{where}.responses[{i}]"
    if not isinstance(r, dict):
      fail(rwhere, f"expected an object, got {type(r).__name__}")
    check_keys(r, ("tool", "arguments", "output", "state_path", "effects"), rwhere)
    name = req(r, "tool", str, rwhere)
    if name not in tools:
      fail(join(rwhere, "tool"), f"unknown tool {name!r} (tools: {', '.join(tools)})")
    args = r.get("arguments", {})
    if not isinstance(args, dict):
      fail(join(rwhere, "arguments"), f"expected an object, got {type(args).__name__}")
    props = tools[name].parameters.get("properties")
    if isinstance(props, dict):
      for arg in args:
        if arg not in props:
          fail(join(rwhere, f"arguments.{arg}"), f"not a parameter of tool {name!r}")
    if ("output" in r) == ("state_path" in r):
      fail(rwhere, "needs exactly one of 'output' or 'state_path'")
    if "state_path" in r:
      split_path(r["state_path"], join(rwhere, "state_path"))
    effects = r.get("effects", [])
    if not isinstance(effects, list):
      fail(join(rwhere, "effects"), f"expected a list, got {type(effects).__name__}")
    if effects and tools[name].kind != "write":
      fail(join(rwhere, "effects"), f"tool {name!r} is a read tool; only write tools have effects")
    for j, eff in enumerate(effects):
      ewhere = f"{rwhere}.effects[{j}]"
      if not isinstance(eff, dict):
        fail(ewhere, f"expected an object, got {type(eff).__name__}")
      op = eff.get("op")
      if op not in EFFECT_OPS:
        fail(join(ewhere, "op"), f"must be one of {EFFECT_OPS}, got {op!r}")
      check_keys(eff, ("op", "path") + (("value",) if op != "delete" else ()), ewhere)
      split_path(req(eff, "path", (str, list), ewhere), join(ewhere, "path"))
      if op != "delete" and "value" not in eff:
        fail(join(ewhere, "value"), "missing required field")


def validate_messages(messages: list, where: str):
  """Chat messages: objects with a known role and string content."""
  for i, m in enumerate(messages):
    mwhere = f"{where}[{i}]"
    if not isinstance(m, dict):
      fail(mwhere, f"expected a message object, got {type(m).__name__}")
    role = m.get("role")
    if role not in MESSAGE_ROLES:
      fail(join(mwhere, "role"), f"must be one of {MESSAGE_ROLES}, got {role!r}")
    if not isinstance(m.get("content", ""), str):
      fail(join(mwhere, "content"), "expected str")


def check_rubric_references(rubric, tools: Mapping, private_info: Mapping):
  """Every rubric check names a tool of the task and a slot of the user's private info."""
  for section, item in rubric.items():
    idx = [it.id for it in getattr(rubric, section)].index(item.id)
    cwhere = f"rubric.{section}[{idx}].check"
    c = item.check
    if c is None:
      continue
    if c.name is not None and c.name not in tools:
      fail(join(cwhere, "name"), f"unknown tool {c.name!r} (tools: {', '.join(tools)})")
    if c.slot is not None and c.slot not in private_info:
      fail(join(cwhere, "slot"), f"slot {c.slot!r} is not in user.private_info "
           f"({', '.join(private_info) or 'empty'})")
