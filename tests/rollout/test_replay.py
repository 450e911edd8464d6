"""Reference trajectories replayed through the real agent loop: same token layout as rollouts."""

import os

import pytest
import transformers

from synthagent_jax.envs.task import Task
from synthagent_jax.envs.tools import MockToolSystem
from synthagent_jax.envs.user import RuleUserSimulator
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rewards import rubric
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig
from synthagent_jax.rollout.replay import ReplayEngine, assistant_text, reference_trajectory
from synthagent_jax.synthesis import offline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tokenizer():
  return transformers.AutoTokenizer.from_pretrained(os.path.join(ROOT, "data", "tokenizer"))


def test_assistant_text_matches_template_format():
  msg = {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}
  assert assistant_text(msg) == '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


def test_references_replay_to_full_reward_with_masks_on_assistant_text(tokenizer):
  tasks = [Task.from_dict(d) for d in offline.generate(24, seed=3)]
  loop = AgentLoop(None, tokenizer, MockToolSystem(), RuleUserSimulator(),
                   AgentLoopConfig(max_turns=8, max_new_tokens=256, max_total_tokens=4096))
  for task in tasks:
    traj = reference_trajectory(loop, task)
    assert traj.status == "answered"
    assert rubric.score(task, traj.messages).reward == 1.0
    # The masked tokens decode to exactly the reference's assistant turns, each closed by <|im_end|>.
    trained = [t for t, m in zip(traj.token_ids, traj.loss_mask) if m]
    expected = "".join(assistant_text(m) + cf.IM_END for m in task.reference
                       if m["role"] == "assistant")
    assert tokenizer.decode(trained, skip_special_tokens=False) == expected


def test_replay_engine_refuses_running_past_the_reference(tokenizer):
  from synthagent_jax.inference.engine import SamplingParams
  engine = ReplayEngine(tokenizer, ["hi"])
  engine.generate([[1]], SamplingParams(max_new_tokens=8))
  with pytest.raises(ValueError, match="no assistant turn left"):
    engine.generate([[1]], SamplingParams(max_new_tokens=8))


def test_replay_engines_satisfy_the_engine_protocol(tokenizer):
  """Both replaying engines take (and ignore) weight updates, so any caller may sync them."""
  from synthagent_jax.evals import replay as evals_replay
  from synthagent_jax.inference.engine import Engine
  for engine in (ReplayEngine(tokenizer, ["hi"]), evals_replay.ReplayEngine(tokenizer, ["hi"])):
    assert isinstance(engine, Engine)
    assert engine.update_weights(None, 3) == {}
    engine.wait_ready()
