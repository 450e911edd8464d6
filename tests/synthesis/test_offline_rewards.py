"""Offline tasks under their own rubric: the reference scores 1.0; guessing the private value
instead of asking scores 0 under `weighted` (a forbidden item is violated) and at most 0.35 under
the paper's gated preset; skipping the ask alone costs reward."""

import pytest

from synthagent_jax.envs import base as env_base
from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.rewards import rubric as rubric_lib
from synthagent_jax.synthesis import offline

AGGREGATIONS = ("synthagent", "weighted")


@pytest.fixture(scope="module")
def tasks():
  # 8 domains x every intent appear in the first few hundred; 240 tasks keep this fast.
  return [task_lib.Task.from_dict(d) for d in offline.generate(240, seed=1)]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_reference_scores_one(tasks, aggregation):
  for t in tasks:
    result = rubric_lib.score(t, t.reference, aggregation=aggregation)
    assert result.reward == pytest.approx(1.0), (t.id, [v for v in result.verdicts if not v.met])


def guessing_trajectory(task: task_lib.Task) -> list[dict]:
  """The reference's calls, but with invented private values (and any value its tools never
  showed it) and no question to the user; tool
  outputs come from the mock tools (so guessed calls get "no record found") and the answer is the
  reference answer with the invented values and only the facts the tools actually showed."""
  guess = {v: f"X{i}99" for i, v in enumerate(task.user.private_info.values())}
  tool_env = tools_lib.MockToolSystem()
  state = tool_env.new_episode(task)
  messages = [task.reference[0]]
  for m in task.reference:
    if m["role"] == "assistant" and m.get("tool_calls"):
      for c in m["tool_calls"]:
        fn = c["function"]
        known = " ".join(m["content"] for m in messages if m["role"] in ("user", "tool"))
        # Values it was never shown are invented too (e.g. an id the failed search did not give).
        args = {k: guess.get(v, v if v in known else f"G{k}") for k, v in fn["arguments"].items()}
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": fn["name"], "arguments": args}}]})
        obs = tool_env.call(task, env_base.ToolCall(fn["name"], args), state)
        messages.append({"role": "tool", "name": fn["name"], "content": obs})
  answer = task.reference[-1]["content"]
  for real, fake in guess.items():
    answer = answer.replace(real, fake)
  seen = " ".join(m["content"] for m in messages if m["role"] == "tool")
  for _, item in task.rubric.items():  # it can only report values its tools showed it
    if item.check.type == "answer_contains" and item.check.text not in seen:
      answer = answer.replace(item.check.text, "unknown")
  messages.append({"role": "assistant", "content": answer})
  return messages


# The gated preset only zeroes a reward when fewer than half the forbidden items hold; a guesser
# respects the forbidden tool and the over-asking item, so with one private slot it passes the
# gate and earns 0.7 x its subgoal ratio. A chained task's first call often needs no private value
# (search, then book with the private date), so that ratio reaches 1/2 (2 of 4 items): 0.35.
BOUNDS = {"synthagent": 0.35, "weighted": 0.0}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_guessing_instead_of_asking_scores_low(tasks, aggregation):
  rewards = []
  for t in tasks:
    r = rubric_lib.score(t, guessing_trajectory(t), aggregation=aggregation).reward
    assert r <= BOUNDS[aggregation] + 1e-9, (t.id, r)
    rewards.append(r)
  assert sum(rewards) / len(rewards) <= 0.25


def test_right_calls_without_asking_still_lose_reward(tasks):
  # An agent that somehow calls with the right values but never asks is flagged for inventing.
  for t in tasks[:40]:
    no_ask = [t.reference[0]] + t.reference[3:]
    r = rubric_lib.score(t, no_ask).reward
    assert r < 1.0, t.id
