"""The agent loop on the real JAX sampler with a tiny random model: the learner, re-scoring the
final token ids in one teacher-forced forward pass, gets back exactly the sampler's logprobs on
every loss_mask position (token-in/token-out end to end)."""

import dataclasses
import pathlib

import numpy as np
import pytest
import transformers

from tests import toys
from synthagent_jax.envs.base import ToolCall
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

sampler = pytest.importorskip("synthagent_jax.inference.sampler")

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]


@dataclasses.dataclass
class Task:
  id: str
  instruction: str
  tools: list = dataclasses.field(default_factory=lambda: TOOLS)


class Tools:

  def new_episode(self, task):
    return None

  def call(self, task, call: ToolCall, state):
    return "ok"


class User:

  def reply(self, task, messages):
    return "Yes, go on.", False


@pytest.mark.slow  # ~30 s of CPU (sampler compilation); the scripted-engine tests cover alignment fast
def test_sampler_logprobs_match_teacher_forced_rescoring():
  tok = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
  model = toys.tiny_model(vocab_size=len(tok), seed=3)
  engine = sampler.JaxEngine(model)
  loop = AgentLoop(engine, tok, Tools(), User(),
                   AgentLoopConfig(max_turns=2, max_new_tokens=8, temperature=1.0, seed=5))
  trajs = loop.run([Task("a", "Find my booking."), Task("b", "Cancel it please.")], num_samples=2)
  assert len(trajs) == 4 and loop.stats.rounds == 2
  eot = cf.token_id(tok, cf.IM_END)
  for traj in trajs:
    assert traj.status == "max_turns" and traj.num_turns == 2
    ids = np.asarray(traj.token_ids, np.int32)
    logits_tv = np.asarray(model(ids[None])[0], np.float64)
    logp_tv = logits_tv - np.logaddexp.reduce(logits_tv, axis=-1, keepdims=True)
    mask = np.asarray(traj.loss_mask)
    positions = np.nonzero(mask)[0]
    assert len(positions) == traj.num_response_tokens > 0
    rescored = logp_tv[positions - 1, ids[positions]]
    np.testing.assert_allclose(np.asarray(traj.sampler_logprobs)[positions], rescored, atol=2e-4)
    assert not np.asarray(traj.sampler_logprobs)[mask == 0].any()
    for turn in traj.turns:  # each sampled span is followed by its end token (sampled or closing)
      end = turn.start + turn.num_sampled
      assert mask[turn.start:end].all()
      if ids[end - 1] != eot:
        assert ids[end] == eot and mask[end] == 0
  # Different samples of one task differ (the sampler is not reusing one key per row).
  assert trajs[0].token_ids != trajs[1].token_ids
