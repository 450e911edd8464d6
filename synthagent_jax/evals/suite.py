"""The contract of an outside benchmark: a `Suite` turns the benchmark's own data into EvalTasks,
gives the ToolEnv and UserEnv the agent loop runs them against, and scores each finished episode
with the benchmark's own checker.

One module per benchmark (`evals/bfcl.py`, `evals/tau2_airline.py`, `evals/math_sets.py`), each
registering its Suite class by name; `launch/eval.py` picks one with `--suite=NAME` and runs every
episode through `rollout.AgentLoop` (the path training uses):

    suite = suite_lib.get(name)(options)          # options: SuiteOptions
    tasks = suite.load()                          # list[EvalTask], already sliced by offset/limit
    loop = AgentLoop(engine, tokenizer, suite.tool_env(), suite.user_env(user_llm),
                     AgentLoopConfig.from_mapping(rollout_cfg, **suite.loop_overrides()))
    trajectories = loop.run(tasks, k)
    scores = [suite.score(task, traj) for ...]    # EpisodeScore per episode
    metrics = suite.metrics(tasks, scores_tk)     # the benchmark's own aggregate definitions

Every suite ships its adapter self-tests: `oracle_turns(task)` are the assistant turns (raw text in
the policy's turn format: `<tool_call>{json}</tool_call>` blocks, plain messages, `<answer>...`)
that replay the benchmark's ground truth; run through the loop by a scripted engine they must
score 100%. The null policy (never calls a tool, answers nothing useful) must score the floor.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

from synthagent_jax.envs.base import ToolEnv, UserEnv


@dataclasses.dataclass
class EvalTask:
  """One benchmark item, duck-typing `envs.task.Task` where the agent loop reads it.

  Attributes:
    id: the benchmark's own id (e.g. "multi_turn_base_0", "airline_12", "aime24_3").
    instruction: the first user message; None when the UserEnv opens the conversation (tau2).
    tools: tool schemas in the OpenAI shape ({"type": "function", "function": {...}}) or the
      Task shape ({"name", "description", "parameters"}).
    system_prompt: replaces the loop's system prompt for this task (None: the loop's default).
    opening: messages after the system message, before the first user message (tau2's greeting).
    data: suite-private payload (ground truth, initial environment config, answer, ...); must be
      JSON-serializable so episodes.jsonl can hold it.
  """

  id: str
  instruction: str | None
  tools: list[dict] = dataclasses.field(default_factory=list)
  system_prompt: str | None = None
  opening: list[dict] = dataclasses.field(default_factory=list)
  data: Any = None


@dataclasses.dataclass
class EpisodeScore:
  """How the benchmark's checker judged one episode.

  Attributes:
    score: the episode's score in [0, 1] under the benchmark's definition (BFCL: 1 if the
      multi-turn checker accepts it; tau2: the reward; math: 1 if the answer verifies).
    passed: whether it counts as a success (pass^k is computed from this).
    verdict: the checker's details (JSON-serializable), shown in episodes.jsonl and the notebook.
  """

  score: float
  passed: bool
  verdict: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
  """What `launch.eval` passes to a Suite.

  Attributes:
    category: a suite-specific subset (BFCL: base | miss_func | miss_param | long_context, or a
      comma-separated list; None = the suite's default set).
    dataset: the math suite's dataset name or a local file path.
    offset, limit: slice of the task list (after any fixed ordering); limit 0 = all.
    data_dir: where the benchmark's data lives when it is not in an installed package.
    extra: suite-specific settings from the config (`eval_bench.<suite>.*`), as a dict.
  """

  category: str | None = None
  dataset: str | None = None
  offset: int = 0
  limit: int = 0
  data_dir: str | None = None
  extra: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.offset < 0:
      raise ValueError(f"offset must be >= 0, got {self.offset}")
    if self.limit < 0:
      raise ValueError(f"limit must be >= 0 (0 = all), got {self.limit}")

  def slice(self, items: Sequence[Any]) -> list[Any]:
    items = list(items)[self.offset:]
    return items[:self.limit] if self.limit else items


class Suite(Protocol):
  """One outside benchmark. Constructed with SuiteOptions; raises SuiteError on bad options or
  missing data (one clear line, shown to the user without a traceback)."""

  name: str

  def load(self) -> list[EvalTask]:
    """The benchmark's tasks for these options, in a fixed order, sliced by offset/limit."""
    ...

  def tool_env(self) -> ToolEnv:
    """The benchmark's tool environment (a fresh state per episode via `new_episode`)."""
    ...

  def user_env(self, user_llm: Any | None) -> UserEnv:
    """The user side (scripted follow-up turns for BFCL, an LLM user simulator for tau2, a
    stopper for single-turn math). `user_llm` is an `llm.LLM` or None where none is needed."""
    ...

  def loop_overrides(self) -> dict:
    """AgentLoopConfig fields the benchmark fixes (e.g. answer_to_user, max_steps_per_user_turn,
    max_turns)."""
    ...

  def score(self, task: EvalTask, trajectory: Any) -> EpisodeScore:
    """Scores one finished episode (a rollout.Trajectory) with the benchmark's own checker."""
    ...

  def metrics(self, tasks: Sequence[EvalTask], scores: Sequence[Sequence[EpisodeScore]]
              ) -> dict[str, float]:
    """The benchmark's aggregate metrics from per-task lists of k scores."""
    ...

  def oracle_turns(self, task: EvalTask) -> list[str]:
    """The assistant turns that replay the ground truth (the adapter's self-test)."""
    ...

  # Optional (looked up with getattr):
  #   selftest_user_llm() -> llm.LLM: the user the oracle / null self-tests talk to when no --user
  #     is given (tau2: states its scenario, then stops).
  #   notes() -> list[str]: lines printed under the table and stored in results.json as "notes"
  #     (e.g. tau2's "not comparable to the gpt-4.1-user leaderboard" label).


class SuiteError(ValueError):
  """Bad suite options or missing benchmark data; the message is one line for the user."""


SUITES: dict[str, Callable[[SuiteOptions], Suite]] = {}


def register(name: str):
  """Registers a Suite class (or factory taking SuiteOptions) under `name`."""
  def deco(factory):
    if name in SUITES:
      raise ValueError(f"eval suite {name!r} registered twice")
    SUITES[name] = factory
    return factory
  return deco


def get(name: str) -> Callable[[SuiteOptions], Suite]:
  if name not in SUITES:
    raise SuiteError(f"unknown suite {name!r}; known: {', '.join(sorted(SUITES)) or 'none'}")
  return SUITES[name]
