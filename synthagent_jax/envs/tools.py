"""`MockToolSystem`: answers tool calls from a task's world (shape documented in envs/task.py).

Order of resolution for one call:
  1. unknown tool / non-dict arguments / arguments failing the tool's JSON schema -> an error
     observation naming the problem (the episode goes on; the agent can retry);
  2. a scripted `world.responses` entry matching the normalised arguments -> its effects are applied
     to the episode's own state copy, then its `output` (or the state at `state_path`) is returned;
  3. otherwise the call is unscripted. If this episode already got a simulated answer to the same
     (tool, canonical arguments) and has made no write call since, that answer is repeated.
     Else the shared cache answers it if it has seen the key before; else the configured LLM
     simulates it and the first answer stored wins; with no LLM the answer is a deterministic
     "no record found" observation. A simulator failure (the LLM raised or replied nothing) is an
     error observation and is NOT cached, so a transient outage never becomes a task's
     permanent answer. The simulation (its prompt, cache and key) is envs/tool_sim.py.

Concurrency: `call_batch` resolves many calls at once and sends every simulation it needs in one
batched `LLM.chat` round (a rollout batch's unscripted calls are simulated together, not one by
one); calls of one episode stay in order, each seeing the answers before it.
Nothing from a task is ever executed as code: the world is data, effects are a closed set of ops.
Argument validation never reaches the network (`$ref`s resolve in an empty registry: only the
schema's own `#/...` pointers) and each `pattern` match is bounded by `PATTERN_TIMEOUT_S` (a
match that runs longer makes the arguments invalid), so a schema cannot stall a rollout; load-time
schema rules are in envs/validate.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import threading
from typing import Any, Sequence

import jsonschema
import referencing
import referencing.exceptions
import regex

from synthagent_jax.envs import tool_sim
from synthagent_jax.envs.base import ToolCall
from synthagent_jax.envs.task import Task, Tool, split_path
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import LLM


def normalize(value: Any) -> Any:
  """Canonical form for matching: strings stripped/collapsed/casefolded, 3.0 -> 3, keys sorted."""
  if isinstance(value, str):
    return " ".join(value.split()).casefold()
  if isinstance(value, bool) or value is None:
    return value
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(value, dict):
    return {str(k): normalize(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
  if isinstance(value, (list, tuple)):
    return [normalize(v) for v in value]
  return value


def canonical_arguments(arguments: dict) -> str:
  """The cache key text of a call's arguments."""
  return json.dumps(normalize(arguments), sort_keys=True, ensure_ascii=False)


def render_output(output: Any) -> str:
  return output if isinstance(output, str) else json.dumps(output, sort_keys=True,
                                                           ensure_ascii=False)


@dataclasses.dataclass
class EpisodeState:
  """One episode's own world: a deep copy of `world.state` plus the calls made so far."""

  task_id: str
  state: dict
  calls: list[dict] = dataclasses.field(default_factory=list)
  # (tool, canonical arguments) -> simulated/cached answer given in this episode since its last
  # write call: a repeated call gets the same answer.
  memo: dict = dataclasses.field(default_factory=dict)


def simulation_history(episode: EpisodeState, limit: int) -> list[tuple[str, str, str]]:
  """The episode's earlier calls a simulation sees: (tool, canonical arguments, observation) of
  the last `limit` calls that reached the world (errors and simulator failures left out)."""
  kept = [(c["name"], canonical_arguments(c["arguments"]), c["observation"])
          for c in episode.calls if c["source"] not in ("errors", "simulator_failures")]
  return kept[-limit:] if limit > 0 else []


def _get_path(state: Any, keys: list[str]) -> Any:
  node = state
  for k in keys:
    if isinstance(node, dict) and k in node:
      node = node[k]
    elif isinstance(node, list) and k.lstrip("-").isdigit() and -len(node) <= int(k) < len(node):
      node = node[int(k)]
    else:
      raise KeyError(".".join(keys))
  return node


def apply_effect(state: dict, effect: dict) -> None:
  """Applies one {"op": set|append|delete, "path", "value"} effect to `state` in place."""
  keys = split_path(effect["path"])
  parent = state
  for k in keys[:-1]:
    if isinstance(parent, list) and k.isdigit() and int(k) < len(parent):
      parent = parent[int(k)]
    else:
      if not isinstance(parent, dict):
        raise KeyError(effect["path"])
      parent = parent.setdefault(k, {})
  last = keys[-1]
  op = effect["op"]
  if isinstance(parent, list):
    if not (last.isdigit() and int(last) < len(parent)):
      raise KeyError(effect["path"])
    idx = int(last)
    if op == "set":
      parent[idx] = copy.deepcopy(effect["value"])
    elif op == "append":
      parent[idx].append(copy.deepcopy(effect["value"]))
    else:
      del parent[idx]
    return
  if not isinstance(parent, dict):
    raise KeyError(effect["path"])
  if op == "set":
    parent[last] = copy.deepcopy(effect["value"])
  elif op == "append":
    target = parent.setdefault(last, [])
    if not isinstance(target, list):
      raise KeyError(effect["path"])
    target.append(copy.deepcopy(effect["value"]))
  else:
    parent.pop(last, None)


def match_response(task: Task, name: str, arguments: dict) -> dict | None:
  """The scripted response for a call: entries whose normalised arguments are a subset of the
  call's; the one with the most arguments wins, ties go to the earliest."""
  norm = normalize(arguments)
  best, best_n = None, -1
  for entry in task.world.get("responses", []):
    if entry["tool"] != name:
      continue
    want = normalize(entry.get("arguments", {}))
    if all(k in norm and norm[k] == v for k, v in want.items()) and len(want) > best_n:
      best, best_n = entry, len(want)
  return best


PATTERN_TIMEOUT_S = 0.05  # per regex match of an argument against a schema `pattern`
# No retrieval: a reference outside the schema is unresolvable, never fetched.
_NO_REMOTE = referencing.Registry()


def _search(pattern: str, text: str) -> bool | None:
  """Whether `pattern` matches somewhere in `text`; None when that takes over the time bound."""
  try:
    return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None
  except TimeoutError:
    return None


def _too_slow(pattern: str) -> jsonschema.ValidationError:
  return jsonschema.ValidationError(f"matching pattern {pattern[:60]!r} took over "
                                    f"{PATTERN_TIMEOUT_S * 1000:.0f} ms; argument refused")


def _pattern(validator, pattern, instance, schema):
  del schema
  if validator.is_type(instance, "string"):
    found = _search(pattern, instance)
    if found is None:
      yield _too_slow(pattern)
    elif not found:
      yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
  del schema
  if not validator.is_type(instance, "object"):
    return
  for pattern, subschema in pattern_properties.items():
    for key, value in instance.items():
      found = _search(pattern, key)
      if found is None:
        yield _too_slow(pattern)
      elif found:
        yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@functools.cache
def _bounded(validator_cls):
  """The draft's validator with time-bounded `pattern` / `patternProperties`."""
  return jsonschema.validators.extend(validator_cls, {"pattern": _pattern,
                                                      "patternProperties": _pattern_properties})


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
  """None when `arguments` satisfies the tool's schema, else a message naming the problem."""
  if not isinstance(arguments, dict):
    return f"arguments must be a JSON object, got {type(arguments).__name__}"
  validator_cls = _bounded(jsonschema.validators.validator_for(tool.parameters))
  try:
    errors = sorted(validator_cls(tool.parameters, registry=_NO_REMOTE).iter_errors(arguments),
                    key=lambda e: (list(e.absolute_path), e.message))
  except referencing.exceptions.Unresolvable as e:
    return f"the tool's schema has a reference that cannot be resolved ({e})"
  except (regex.error, RecursionError) as e:
    return f"the tool's schema has an invalid pattern ({e.__class__.__name__}: {e})"
  if not errors:
    return None
  msgs = []
  for e in errors[:3]:
    where = ".".join(str(p) for p in e.absolute_path)
    msgs.append(f"{where}: {e.message}" if where else e.message)
  return "; ".join(msgs)


class MockToolSystem:
  """A `ToolEnv` over task worlds.

  Args:
    llm: simulates unscripted calls; None answers them with a "no record found" observation.
    cache_path: sqlite file shared by all rollouts/processes (None: in-memory, this process only).
    num_examples: scripted + cached examples of the same tool put in the simulation prompt.
    sampling: sampling for the simulator (greedy by default).
    history_limit: earlier calls of the episode shown to (and keyed for) a simulation.
  """

  def __init__(self, llm: LLM | None = None, cache_path: str | os.PathLike | None = None,
               num_examples: int = 3, sampling: SamplingParams | None = None,
               history_limit: int = 8):
    if num_examples < 0:
      raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    if history_limit < 0:
      raise ValueError(f"history_limit must be >= 0, got {history_limit}")
    self.llm = llm
    self.cache = tool_sim.ToolCache(cache_path)
    self.num_examples = num_examples
    self.history_limit = history_limit
    self.sampling = sampling or SamplingParams(max_new_tokens=256, temperature=0.0)
    self.stats = {"calls": 0, "errors": 0, "scripted": 0, "cache_hits": 0, "simulated": 0,
                  "not_found": 0, "simulator_failures": 0, "llm_batches": 0}
    self._stats_lock = threading.Lock()

  def new_episode(self, task: Task) -> EpisodeState:
    return EpisodeState(task_id=task.id, state=copy.deepcopy(task.world.get("state", {})))

  def call(self, task: Task, call: ToolCall, episode_state: EpisodeState) -> str:
    return self.call_batch([(task, call, episode_state)])[0]

  def call_batch(self, requests: Sequence[tuple[Task, ToolCall, EpisodeState]]) -> list[str]:
    """Observations for many calls, as if each were `call`ed in the order given.

    Calls of one episode run in order (each sees the answers before it); calls of different
    episodes are independent, so each round takes the next call of every episode and sends all
    the simulations the round needs to the LLM in one batched `chat` (one prompt per distinct
    key: two episodes asking the same thing after the same history share one simulation).
    """
    requests = list(requests)
    out: list[str | None] = [None] * len(requests)
    queues: dict[int, list[int]] = {}  # episode (by identity) -> its request indices, in order
    for i, (_, _, ep) in enumerate(requests):
      queues.setdefault(id(ep), []).append(i)
    while any(queues.values()):
      pending: dict[tuple[str, str, str], list] = {}  # cache key -> [prompt, tool, [indices]]
      for key in list(queues):
        if not queues[key]:
          continue
        i = queues[key].pop(0)
        task, call, ep = requests[i]
        resolved = self._resolve(task, call, ep)
        if resolved[0] == "simulate":
          _, cache_key, prompt, tool = resolved
          pending.setdefault(cache_key, [prompt, tool, []])[2].append(i)
        else:
          out[i] = self._record(*requests[i], *resolved)
      if pending:
        self._simulate(requests, pending, out)
    return out  # type: ignore[return-value]

  def _record(self, task: Task, call: ToolCall, episode: EpisodeState, kind: str,
              observation: str) -> str:
    self._count("calls")
    self._count(kind)
    episode.calls.append({"name": call.name, "arguments": call.arguments,
                          "observation": observation, "source": kind})
    tool = task.tool(call.name)
    if tool is not None and kind != "errors":
      if tool.kind == "write" and kind != "simulator_failures":
        episode.memo.clear()  # the world may have changed: reads are simulated afresh
      elif kind in ("simulated", "cache_hits"):
        episode.memo.setdefault((tool.name, canonical_arguments(call.arguments)), observation)
    return observation

  def _count(self, key: str):
    with self._stats_lock:
      self.stats[key] += 1

  def _resolve(self, task: Task, call: ToolCall, episode: EpisodeState) -> tuple:
    """(kind, observation), or ("simulate", cache key, prompt, tool) when the LLM must answer."""
    tool = task.tool(call.name)
    if tool is None:
      return "errors", (f"Error: unknown tool {call.name!r}. Available tools: "
                        f"{', '.join(task.tool_names)}.")
    problem = validate_arguments(tool, call.arguments)
    if problem is not None:
      return "errors", f"Error: invalid arguments for {tool.name}: {problem}"
    entry = match_response(task, tool.name, call.arguments)
    if entry is not None:
      return "scripted", self._answer_scripted(entry, episode)
    return self._answer_unscripted(task, tool, call.arguments, episode)

  def _answer_scripted(self, entry: dict, episode: EpisodeState) -> str:
    for effect in entry.get("effects", []):
      try:
        apply_effect(episode.state, effect)
      except KeyError:
        pass  # A path the episode has since deleted: the write has nothing to act on.
    if "state_path" in entry:
      try:
        return render_output(_get_path(episode.state, split_path(entry["state_path"])))
      except KeyError:
        return f"Error: no record found at {entry['state_path']}."
    return render_output(entry["output"])

  def _answer_unscripted(self, task: Task, tool: Tool, arguments: dict,
                         episode: EpisodeState) -> tuple:
    args_key = canonical_arguments(arguments)
    if (tool.name, args_key) in episode.memo:
      return "cache_hits", episode.memo[(tool.name, args_key)]
    history = simulation_history(episode, self.history_limit)
    digest = tool_sim.history_digest(history)
    # The digest rides in the args column, so cache files written before history was keyed stay
    # valid: their rows are exactly the no-history ("") keys.
    key = args_key if not digest else f"{args_key}{tool_sim.HISTORY_SEP}{digest}"
    cached = self.cache.get(task.id, tool.name, key)
    if cached is not None:
      return "cache_hits", cached
    if self.llm is None:
      return "not_found", f"No record found for {tool.name} with arguments {args_key}."
    examples = [(canonical_arguments(e.get("arguments", {})),
                 render_output(e["output"]) if "output" in e else f"<state {e['state_path']}>")
                for e in task.world.get("responses", []) if e["tool"] == tool.name]
    examples = (examples + self.cache.examples(task.id, tool.name, self.num_examples))
    examples = examples[:self.num_examples]
    prompt = tool_sim.render_simulation_prompt(task, tool, arguments, examples, history)
    return "simulate", (task.id, tool.name, key), prompt, tool

  def _simulate(self, requests, pending: dict, out: list):
    """One batched LLM round for `pending` ({cache key: [prompt, tool, indices]})."""
    keys = list(pending)
    self._count("llm_batches")
    answers = tool_sim.simulate_round(self.llm, [pending[k][0] for k in keys], self.sampling)
    for key, (text, error) in zip(keys, answers):
      _, tool, indices = pending[key]
      if error is not None:
        kind, obs = ("simulator_failures",
                     f"Error: the {tool.name} service is unavailable ({type(error).__name__}).")
      elif not text:
        kind, obs = "simulator_failures", f"Error: the {tool.name} service returned nothing."
      else:
        # The first answer stored wins, so concurrent simulations of one key still agree.
        kind, obs = "simulated", self.cache.put(*key, text)
      for i in indices:
        out[i] = self._record(*requests[i], kind, obs)
