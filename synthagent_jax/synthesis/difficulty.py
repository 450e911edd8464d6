"""The policy's pass rate on a candidate task, for the difficulty filter (`filters.difficulty_filter`).

    pass_rate = make_pass_rate(policy, tool_env, user_env, judge, max_turns=10, pass_reward=1.0)
    rate = pass_rate(task_dict, n)   # share of n policy episodes whose rubric reward >= pass_reward

The policy is any `LLM` (an OpenAI-compatible endpoint, or `llm.jax_llm` over an in-process
engine). It plays the agent exactly as the solve stage's teacher does (`stage_solve.solve`: the
same tool format, mock tools and user simulator, n episodes in lockstep, one batched call per
turn), and its episodes are scored like training rewards (`rewards.rubric.score_batch`:
structured checks in code, the rest by `judge`, one batched judge call). Tasks the policy always
solves or never solves give GRPO groups without signal; the filter keeps the band in between.
"""

from __future__ import annotations

from typing import Callable

from synthagent_jax.envs import task as task_lib
from synthagent_jax.rewards import rubric as rubric_lib
from synthagent_jax.synthesis import stage_solve


def make_pass_rate(policy, tool_env, user_env, judge=None, *, max_turns: int = 10,
                   pass_reward: float = 1.0, aggregation: str = "synthagent",
                   sampling=None) -> Callable[[dict, int], float]:
  """`pass_rate(task_dict, n) -> float in [0, 1]` (see the module doc).

  An episode that ends without an answer (turn budget, policy endpoint error) scores whatever its
  rubric gives, as in training; one that errors is a failure, never a pass.
  """
  if max_turns < 1:
    raise ValueError(f"max_turns must be >= 1, got {max_turns}")
  if not 0.0 < pass_reward <= 1.0:
    raise ValueError(f"pass_reward must be in (0, 1], got {pass_reward}")

  def pass_rate(task: dict, n: int) -> float:
    if n < 1:
      raise ValueError(f"difficulty samples must be >= 1, got {n}")
    t = task_lib.Task.from_dict(task)
    (episodes,) = stage_solve.solve([t], policy, tool_env, user_env, n, max_turns, sampling)
    results = rubric_lib.score_batch([t] * len(episodes), [e["messages"] for e in episodes],
                                     judge, aggregation)
    passed = sum(r.reward >= pass_reward and e["status"] != "error"
                 for r, e in zip(results, episodes))
    return passed / len(episodes)

  return pass_rate
