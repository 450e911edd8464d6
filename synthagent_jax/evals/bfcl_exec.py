"""BFCL's executable API classes behind our ToolEnv, and BFCL's own multi-turn checker.

The bfcl_multi_turn suite (`evals/bfcl.py`) keeps its benchmark-facing pieces here:

- `import_bfcl()`: the bfcl-eval modules we use, imported lazily (a missing package is a SuiteError
  with the install command). Only folder-safe modules are imported, after pointing
  BFCL_PROJECT_ROOT at a private temp dir (bfcl_eval.utils creates result/score/lock folders there).
- `openai_tool(doc)`: a BFCL function doc as an OpenAI tool schema ({"type": "function", ...}),
  following BFCL's own conversion for OpenAI-style handlers (`model_handler.utils.convert_to_tool`,
  which cannot be imported here: that module needs tree_sitter).
- `call_string(name, arguments, methods)`: the string BFCL's executor `eval`s, built only from the
  parsed JSON values (`name(k=repr(v),...)`, as BFCL's `convert_to_function_call`). Raw model text
  never reaches `eval`: a name that is not a public method of the entry's API classes, or an
  argument name that is not a Python identifier, is never executed (see `call_string`).
- `BfclToolEnv`: per episode, fresh API instances loaded with the entry's initial_config through
  BFCL's `execute_multi_turn_func_call`, under a model name unique to the episode. Between calls the
  instances live in the episode state, not in BFCL's module globals (BFCL caches instances there by
  name), so nothing leaks when an episode is dropped and no two episodes share a world.
- `check(bfcl, entry, decoded_turns, ground_truth)`: BFCL's `multi_turn_checker` under a unique
  model name; the instances it caches in module globals (model and ground truth) are deleted
  afterwards, so a correct sample scored after a wrong one of the same entry is judged on fresh
  instances.

decoded_turns has BFCL's shape: per user turn, per assistant step, the list of call strings.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import keyword
import os
import tempfile
import types
import uuid
from typing import Any, Mapping

from synthagent_jax.evals.suite import SuiteError

INSTALL_COMMAND = "pip install --no-deps bfcl-eval==2026.3.23 mpmath"
# Stands in for a call that must not be executed (unknown function, bad argument name) in the
# strings given to BFCL's checker: an undefined name, so `eval` fails without side effects and the
# step still counts as a non-empty step, as BFCL counts any decoded call.
BLOCKED_CALL = "invalid_tool_call()"


def import_bfcl() -> types.SimpleNamespace:
  """The bfcl-eval modules this adapter uses; SuiteError naming the install command if missing."""
  if "BFCL_PROJECT_ROOT" not in os.environ:
    root = os.path.join(tempfile.gettempdir(), f"synthagent_bfcl_{os.getuid()}")
    os.environ["BFCL_PROJECT_ROOT"] = root
  try:  # pylint: disable=import-outside-toplevel
    from bfcl_eval import utils
    from bfcl_eval.constants import default_prompts, type_mappings
    from bfcl_eval.constants import executable_backend_config
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
  except ImportError as e:
    raise SuiteError(f"suite bfcl_multi_turn needs the bfcl-eval package ({e}); install it with: "
                     f"{INSTALL_COMMAND}") from None
  return types.SimpleNamespace(
      utils=utils, prompts=default_prompts, type_mappings=type_mappings,
      backend=executable_backend_config, checker=multi_turn_checker, exec=multi_turn_utils)


# ---- function docs -> OpenAI tool schemas ------------------------------------------------------
def _cast_properties(properties: dict, mapping: Mapping[str, str]) -> dict:
  """BFCL types -> JSON-schema types, in place; a float parameter keeps "format": "float" and a
  note in its description, as BFCL's converter does."""
  for schema in properties.values():
    kind = schema.get("type")
    if kind == "float":
      schema["format"] = "float"
      schema["description"] = schema.get("description", "") + " This is a float type value."
    schema["type"] = mapping.get(kind, "string") if kind is not None else "string"
    if "properties" in schema:
      _cast_properties(schema["properties"], mapping)
    elif "items" in schema:
      _cast_items(schema["items"], mapping)
  return properties


def _cast_items(items: dict, mapping: Mapping[str, str]):
  items["type"] = mapping.get(items.get("type"), "string")
  if "properties" in items:
    _cast_properties(items["properties"], mapping)
  elif "items" in items:
    _cast_items(items["items"], mapping)


def openai_tool(doc: Mapping[str, Any], mapping: Mapping[str, str]) -> dict:
  """One BFCL function doc (name, description, parameters, response) as an OpenAI tool."""
  fn = copy.deepcopy(dict(doc))
  params = fn.setdefault("parameters", {})
  params["type"] = "object"
  params["properties"] = _cast_properties(params.get("properties", {}), mapping)
  return {"type": "function", "function": fn}


# ---- call strings --------------------------------------------------------------------------------
def is_argument_name(key: Any) -> bool:
  return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def call_string(name: str, arguments: Mapping[str, Any], methods: frozenset[str]) -> str | None:
  """The call as BFCL's executor takes it, or None when it must not be executed.

  Built from parsed values only: `name(k1=repr(v1),k2=repr(v2))` like BFCL's
  convert_to_function_call; repr of JSON values is always a Python literal. None when `name` is
  not a public method of the entry's API classes (BFCL would `eval` it against its module globals
  and the builtins, e.g. `open(...)`) or an argument name is not an identifier (it would be spliced
  into the code).
  """
  if name not in methods or not all(is_argument_name(k) for k in arguments):
    return None
  return f"{name}({','.join(f'{k}={v!r}' for k, v in arguments.items())})"


def refusal(name: str, arguments: Mapping[str, Any], methods: frozenset[str]) -> str:
  """The observation for a call `call_string` refuses, worded like BFCL's execution errors."""
  if name not in methods:
    return f"Error during execution: name {name!r} is not defined"
  bad = [k for k in arguments if not is_argument_name(k)]
  return f"Error during execution: invalid argument name {bad[0]!r}"


def public_methods(instances: Mapping[str, Any]) -> frozenset[str]:
  """Method names BFCL maps onto the instances (public bound methods), as its executor does."""
  names = set()
  for instance in instances.values():
    names.update(n for n, _ in inspect.getmembers(instance, predicate=inspect.ismethod)
                 if not n.startswith("_"))
  return frozenset(names)


_CLASS_METHODS: dict[str, frozenset[str]] = {}


def class_methods(bfcl: types.SimpleNamespace, class_names: list[str]) -> frozenset[str]:
  """Public method names of the API classes (an unloaded instance each, cached per class)."""
  import importlib  # pylint: disable=import-outside-toplevel
  out = set()
  for cls_name in class_names:
    if cls_name not in _CLASS_METHODS:
      module = importlib.import_module(bfcl.backend.CLASS_FILE_PATH_MAPPING[cls_name])
      _CLASS_METHODS[cls_name] = public_methods({cls_name: getattr(module, cls_name)()})
    out |= _CLASS_METHODS[cls_name]
  return frozenset(out)


def unique_name(prefix: str) -> str:
  """A model name for BFCL's instance cache no other episode or scoring call uses."""
  return f"{prefix}_{uuid.uuid4().hex}"


def drop_cached(bfcl: types.SimpleNamespace, name: str) -> dict[str, Any]:
  """Removes (and returns) every instance BFCL cached in its module globals under `name`."""
  cache = vars(bfcl.exec)
  return {k: cache.pop(k) for k in list(cache) if k.startswith(name + "_")}


# ---- the ToolEnv -----------------------------------------------------------------------------
@dataclasses.dataclass
class World:
  """One episode's API instances (held here, outside BFCL's globals, between calls)."""

  name: str
  entry_id: str
  initial_config: dict
  involved_classes: list[str]
  long_context: bool
  instances: dict[str, Any]
  methods: frozenset[str]


class BfclToolEnv:
  """Executes parsed calls against the episode's own BFCL API instances; never raises for a bad
  call (BFCL's executor turns exceptions into "Error during execution: ..." strings)."""

  def __init__(self):
    self.bfcl = import_bfcl()

  def _execute(self, world: World, calls: list[str]) -> list[str]:
    cache = vars(self.bfcl.exec)
    cache.update(world.instances)
    try:
      results, _ = self.bfcl.exec.execute_multi_turn_func_call(
          calls, world.initial_config, world.involved_classes, world.name, world.entry_id,
          long_context=world.long_context, is_evaL_run=False)
    finally:
      world.instances.update(drop_cached(self.bfcl, world.name))
    return results

  def new_episode(self, task: Any) -> World:
    data = task.data
    world = World(unique_name("synthagent_env"), data["entry_id"], data["initial_config"],
                  list(data["involved_classes"]), data["category"] == "long_context", {},
                  frozenset())
    self._execute(world, [])  # creates and loads the instances
    world.methods = public_methods(world.instances)
    return world

  def call(self, task: Any, call: Any, world: World) -> str:
    text = call_string(call.name, call.arguments, world.methods)
    if text is None:
      return refusal(call.name, call.arguments, world.methods)
    (result,) = self._execute(world, [text])
    return result


# ---- scoring ---------------------------------------------------------------------------------
def _json_safe(value: Any, limit: int = 4000) -> str:
  try:
    text = json.dumps(value, default=str, ensure_ascii=False)
  except (TypeError, ValueError):  # e.g. non-string dict keys deeper than json handles
    text = str(value)
  return text if len(text) <= limit else text[:limit] + "...[truncated]"


def check(bfcl: types.SimpleNamespace, entry: dict, decoded_turns: list[list[list[str]]],
          ground_truth: list[list[str]]) -> dict:
  """BFCL's multi_turn_checker on one episode, under a model name of its own whose cached
  instances are deleted afterwards. Returns {"valid", "error_type", "error_message", "details"}
  (JSON-safe; details as truncated JSON text)."""
  name = unique_name("synthagent_score")
  try:
    result = bfcl.checker.multi_turn_checker(decoded_turns, ground_truth, entry,
                                             entry["id"].rsplit("_", 1)[0], name)
  except Exception as e:  # pylint: disable=broad-except  # the checker asserts on odd states
    result = {"valid": False, "error_type": "multi_turn:checker_error",
              "error_message": f"{e.__class__.__name__}: {e}"}
  finally:
    drop_cached(bfcl, name)
  out = {"valid": bool(result.get("valid")), "error_type": result.get("error_type"),
         "error_message": result.get("error_message")}
  details = {k: v for k, v in result.items() if k not in out}
  if details:
    out["details"] = _json_safe(details)
  return out

