"""BFCL v4 multi-turn (suite `bfcl_multi_turn`): the benchmark's own entries, API classes and
checker (package bfcl-eval, imported lazily through `evals/bfcl_exec.py`), run through our agent
loop.

Options (`SuiteOptions`): `category` is base | miss_func | miss_param | long_context, a comma list
of them, or None/"all" for all four (in that order); `offset`/`limit` slice EACH category's entries
(in BFCL's order), so `limit=3` runs the first three entries of every category. `extra` may set
the token budget (`DEFAULTS`: max_new_tokens, max_total_tokens, max_tool_response_tokens).

One EvalTask per entry:
  id           BFCL's id ("multi_turn_base_0").
  instruction  the entry's first user turn.
  tools        the entry's function docs as OpenAI tool schemas (BFCL's loader adds its
               "Note that the provided function is in Python 3 syntax." hint), minus miss_func's
               held-back functions.
  data         {"category", "entry_id", "turns": the user text of every turn, "ground_truth",
               "initial_config", "involved_classes"}; a miss_func turn's text is BFCL's
               prompting-mode message: the held-back function docs (JSON, as OpenAI tools), then
               "I have updated some more functions you can choose from. What about now?".

The episode, as BFCL's multi-turn inference runs it: the agent takes steps until it hands the turn
back (any turn without a tool call: a message or an <answer>, `answer_to_user=True`); the UserEnv
then sends the next turn, and stops ("###STOP###") after the last. BFCL force-quits a turn after
MAXIMUM_STEP_LIMIT (20) executed tool steps, i.e. when the 21st tool step comes:
`max_steps_per_user_turn = 21` ends the episode on the 21st tool-calling step of a turn.

Scoring (`score`), as BFCL's eval runner: the model's calls are decoded per user turn and per step
from the trajectory's messages (well-formed calls only; a step without calls is skipped, as BFCL
skips undecodable steps) and checked by BFCL's `multi_turn_checker` against possible_answer. An
episode that did not reach every turn (max_steps before the last turn, context_full, max_turns,
error) fails as BFCL's "multi_turn:force_terminated"; a max_steps on the LAST turn is checked
normally, as in BFCL (the forced turn is still recorded, so the turn counts match).

Metrics: `accuracy/<category>` (mean over entries of the mean over the k samples), `overall` (the
unweighted mean over the categories run, as BFCL's multi-turn overall), `episodes/<category>`,
`episodes`.

`oracle_turns`: each turn's ground-truth calls (parsed with `ast`, never `eval`; positional
arguments named from the API method's signature) as tool-call turns, one call per step (grouped
when a turn has more calls than the step limit), then a short message ending the turn.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from typing import Any, Sequence

from synthagent_jax.evals import bfcl_exec
from synthagent_jax.evals import suite as suite_lib
from synthagent_jax.evals.suite import EpisodeScore, EvalTask, SuiteError, SuiteOptions
from synthagent_jax.models import chat_format as cf

CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
STOP = "###STOP###"
END_OF_TURN_MESSAGE = "I have done what I can for this request."
FORCE_TERMINATED = "multi_turn:force_terminated"
# BFCL never truncates an execution result. The longest one the ground truth produces is 31,676
# tokens (a long_context entry; Qwen2.5 tokenizer), so this cuts none of them and only guards
# against a runaway result (benchmarks/bfcl_oracle.py prints the maximum).
# BFCL's budget is the model's own: its local-model handlers sample min(4096, context - prompt)
# tokens per step and stop at the context length. max_total_tokens is therefore large here (the
# ground truth's longest episode is 75,509 tokens) and launch.eval caps it to the policy's context.
DEFAULTS = {"max_tool_response_tokens": 32768, "max_new_tokens": 4096,
            "max_total_tokens": 131072}


def parse_categories(spec: str | None) -> list[str]:
  """"base,miss_func" -> ["base", "miss_func"]; None / "" / "all" -> all four. The "multi_turn_"
  prefix is accepted. Unknown names are a SuiteError listing the known ones."""
  if spec is None or spec.strip() in ("", "all"):
    return list(CATEGORIES)
  out = []
  for raw in spec.split(","):
    name = raw.strip().removeprefix("multi_turn_")
    if name not in CATEGORIES:
      raise SuiteError(f"unknown BFCL multi-turn category {raw.strip()!r}; known: "
                       f"{', '.join(CATEGORIES)} (or a comma list, or all)")
    if name not in out:
      out.append(name)
  return out


def parse_ground_truth_call(text: str, signature_of) -> tuple[str, dict]:
  """BFCL's answer string "mv(source='a', destination='b')" -> ("mv", {...}) without eval: the
  call is parsed with `ast` and each argument read with `ast.literal_eval`; positional arguments
  get their names from `signature_of(name)` (the API method's parameter names)."""
  try:
    node = ast.parse(text.strip(), mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"ground-truth call {text!r} does not parse: {e}") from None
  if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
    raise ValueError(f"ground-truth call {text!r} is not a plain function call")
  name = node.func.id
  arguments = {}
  if node.args:
    params = signature_of(name)
    if len(node.args) > len(params):
      raise ValueError(f"ground-truth call {text!r} has more positional arguments than {name}")
    for param, arg in zip(params, node.args):
      arguments[param] = ast.literal_eval(arg)
  for kw in node.keywords:
    if kw.arg is None:
      raise ValueError(f"ground-truth call {text!r} uses **kwargs")
    arguments[kw.arg] = ast.literal_eval(kw.value)
  return name, arguments


def split_steps(calls: Sequence[Any], max_steps: int) -> list[list[Any]]:
  """One call per step, or `max_steps` contiguous groups of near-equal size when there are more."""
  n = min(len(calls), max_steps)
  if n == 0:
    return []
  size, extra = divmod(len(calls), n)
  out, start = [], 0
  for i in range(n):
    end = start + size + (1 if i < extra else 0)
    out.append(list(calls[start:end]))
    start = end
  return out


def decoded_turns(messages: Sequence[dict], methods: frozenset[str], stopped: bool
                  ) -> list[list[list[str]]]:
  """Per user turn, per assistant step with calls, the call strings BFCL's checker executes.

  Every user message starts a turn; with `stopped`, the user's final stop message is not one. A
  call that must not be executed becomes `bfcl_exec.BLOCKED_CALL` (an error, not a skipped call)."""
  turns: list[list[list[str]]] = []
  for m in messages:
    if m.get("role") == "user":
      turns.append([])
    elif m.get("role") == "assistant" and m.get("tool_calls") and turns:
      step = []
      for tc in m["tool_calls"]:
        fn = tc["function"]
        text = bfcl_exec.call_string(fn["name"], fn["arguments"], methods)
        step.append(bfcl_exec.BLOCKED_CALL if text is None else text)
      turns[-1].append(step)
  if stopped and turns:
    turns.pop()
  return turns


class BfclUser:
  """Sends the entry's next user turn whenever the agent hands the turn back; stops after the
  last."""

  def reply(self, task: EvalTask, messages: Sequence[dict]) -> tuple[str, Any]:
    asked = sum(m.get("role") == "user" for m in messages)
    turns = task.data["turns"]
    if asked < len(turns):
      return turns[asked], False
    return STOP, STOP


@suite_lib.register("bfcl_multi_turn")
class BfclMultiTurn:
  """The BFCL v4 multi-turn categories (see the module docstring)."""

  name = "bfcl_multi_turn"

  def __init__(self, options: SuiteOptions):
    self.options = options
    self.categories = parse_categories(options.category)
    unknown = sorted(set(options.extra) - set(DEFAULTS))
    if unknown:
      raise SuiteError(f"bfcl_multi_turn: unknown settings {unknown}; known: {sorted(DEFAULTS)}")
    self.budget = {k: options.extra.get(k, v) for k, v in DEFAULTS.items()}
    for key, value in self.budget.items():
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SuiteError(f"bfcl_multi_turn: {key} must be an integer >= 1, got {value!r}")
    self._bfcl = None
    self._raw: dict[str, list[dict]] = {}

  @property
  def bfcl(self):
    if self._bfcl is None:
      self._bfcl = bfcl_exec.import_bfcl()
    return self._bfcl

  # ---- data ----------------------------------------------------------------------------------
  def raw_entries(self, category: str) -> list[dict]:
    """A category's entries as stored (BFCL's order), before BFCL adds the function docs."""
    if category not in self._raw:
      u = self.bfcl.utils
      path = u.PROMPT_PATH / f"{u.VERSION_PREFIX}_multi_turn_{category}.json"
      try:
        self._raw[category] = u.load_file(path)
      except (OSError, ValueError) as e:
        raise SuiteError(f"BFCL data file {path} cannot be read ({e.__class__.__name__}: {e}); "
                         f"reinstall with: {bfcl_exec.INSTALL_COMMAND}") from None
    return self._raw[category]

  def entries(self, category: str) -> list[tuple[dict, list]]:
    """(entry, ground truth) pairs of the sliced entries of a category, prepared by BFCL's own
    loader steps (those of `utils.load_dataset_entry`, run on the slice only: adding the function
    docs reads them from disk per entry)."""
    u = self.bfcl.utils
    entries = copy.deepcopy(self.options.slice(self.raw_entries(category)))
    entries = u.add_language_specific_hint_to_function_doc(
        u.populate_test_cases_with_predefined_functions(u.process_agentic_test_case(entries)))
    truth = {g["id"]: g["ground_truth"]
             for g in u.load_ground_truth_entry("multi_turn_" + category)}
    missing = [e["id"] for e in entries if e["id"] not in truth]
    if missing:
      raise SuiteError(f"BFCL multi_turn_{category}: no possible_answer for {missing[:3]}")
    return [(e, truth[e["id"]]) for e in entries]

  def _task(self, category: str, entry: dict, ground_truth: list) -> EvalTask:
    mapping = self.bfcl.type_mappings.GORILLA_TO_OPENAPI
    held = entry.get("missed_function", {})
    turns = []
    for i, msgs in enumerate(entry["question"]):
      if str(i) in held:
        if msgs:
          raise SuiteError(f"BFCL {entry['id']} turn {i}: a held-back-function turn has messages")
        docs = json.dumps([bfcl_exec.openai_tool(d, mapping) for d in held[str(i)]],
                          ensure_ascii=False)
        turns.append(self.bfcl.prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING
                     .format(functions=docs))
      elif len(msgs) == 1 and msgs[0].get("role") == "user":
        turns.append(msgs[0]["content"])
      else:
        raise SuiteError(f"BFCL {entry['id']} turn {i}: expected one user message, got roles "
                         f"{[m.get('role') for m in msgs]}")
    if len(ground_truth) != len(turns):
      raise SuiteError(f"BFCL {entry['id']}: {len(turns)} turns but {len(ground_truth)} "
                       "ground-truth turns")
    return EvalTask(
        id=entry["id"], instruction=turns[0],
        tools=[bfcl_exec.openai_tool(d, mapping) for d in entry["function"]],
        data={"category": category, "entry_id": entry["id"], "turns": turns,
              "ground_truth": ground_truth, "initial_config": entry["initial_config"],
              "involved_classes": list(entry["involved_classes"])})

  def load(self) -> list[EvalTask]:
    return [self._task(category, entry, truth) for category in self.categories
            for entry, truth in self.entries(category)]

  # ---- environments --------------------------------------------------------------------------
  def tool_env(self) -> bfcl_exec.BfclToolEnv:
    return bfcl_exec.BfclToolEnv()

  def user_env(self, user_llm: Any | None = None) -> BfclUser:
    del user_llm  # BFCL's user turns are scripted
    return BfclUser()

  def loop_overrides(self) -> dict:
    step_limit = self.bfcl.prompts.MAXIMUM_STEP_LIMIT
    max_user_turns = max(len(e["question"]) for c in self.categories for e in self.raw_entries(c))
    return {"answer_to_user": True,
            "max_steps_per_user_turn": step_limit + 1,
            "max_turns": (step_limit + 1) * max_user_turns,
            **self.budget}

  # ---- scoring -------------------------------------------------------------------------------
  def score(self, task: EvalTask, trajectory: Any) -> EpisodeScore:
    data = task.data
    expected = len(data["turns"])
    methods = bfcl_exec.class_methods(self.bfcl, data["involved_classes"])
    status = trajectory.status
    turns = decoded_turns(trajectory.messages, methods, stopped=status == "user_stopped")
    finished = status == "user_stopped" and trajectory.user_stop == STOP
    forced_on_last_turn = status == "max_steps"
    if len(turns) == expected and (finished or forced_on_last_turn):
      entry = {"id": data["entry_id"], "initial_config": data["initial_config"],
               "involved_classes": data["involved_classes"]}
      verdict = bfcl_exec.check(self.bfcl, entry, turns, data["ground_truth"])
    else:
      verdict = {"valid": False, "error_type": FORCE_TERMINATED,
                 "error_message": f"episode ended with status {status!r} after {len(turns)} of "
                                  f"{expected} user turns (BFCL: force-terminated)"}
    verdict.update(status=status, turns=len(turns), expected_turns=expected,
                   category=data["category"])
    return EpisodeScore(score=1.0 if verdict["valid"] else 0.0, passed=verdict["valid"],
                        verdict=verdict)

  def metrics(self, tasks: Sequence[EvalTask], scores: Sequence[Sequence[EpisodeScore]]
              ) -> dict[str, float]:
    per_category: dict[str, list[float]] = {}
    episodes: dict[str, int] = {}
    for task, samples in zip(tasks, scores):
      if not samples:
        continue
      category = task.data["category"]
      per_category.setdefault(category, []).append(sum(s.score for s in samples) / len(samples))
      episodes[category] = episodes.get(category, 0) + len(samples)
    out: dict[str, float] = {}
    for category, values in per_category.items():
      out[f"accuracy/{category}"] = sum(values) / len(values)
      out[f"episodes/{category}"] = episodes[category]
    accuracies = [out[f"accuracy/{c}"] for c in per_category]
    out["overall"] = sum(accuracies) / len(accuracies) if accuracies else 0.0
    out["episodes"] = sum(episodes.values())
    return out

  # ---- the adapter's self-test ---------------------------------------------------------------
  def _signature_of(self, class_names: list[str]):
    classes = [getattr(importlib.import_module(self.bfcl.backend.CLASS_FILE_PATH_MAPPING[c]), c)
               for c in class_names]

    def signature_of(name: str) -> list[str]:
      for cls in classes:
        method = getattr(cls, name, None)
        if method is not None and not name.startswith("_"):
          return [p for p in inspect.signature(method).parameters if p != "self"]
      raise ValueError(f"no API method {name!r} in {class_names}")
    return signature_of

  def oracle_turns(self, task: EvalTask) -> list[str]:
    signature_of = self._signature_of(task.data["involved_classes"])
    limit = self.bfcl.prompts.MAXIMUM_STEP_LIMIT
    out = []
    for calls in task.data["ground_truth"]:
      parsed = [parse_ground_truth_call(c, signature_of) for c in calls]
      for step in split_steps(parsed, limit):
        out.append("\n".join(cf.format_tool_call(name, args) for name, args in step))
      out.append(END_OF_TURN_MESSAGE)
    return out
