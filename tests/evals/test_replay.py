"""ReplayEngine through the real agent loop: the n-th assistant turn gets the n-th scripted text,
also after an opening with assistant messages; past the script it repeats `after`."""

import dataclasses
import pathlib

import transformers

from synthagent_jax.evals.replay import NULL_TURN, ReplayEngine
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"


@dataclasses.dataclass
class T:
  id: str
  instruction: str | None
  tools: list = dataclasses.field(default_factory=list)
  opening: list = dataclasses.field(default_factory=list)


class Tools:
  def new_episode(self, task):
    return None

  def call(self, task, call, state):
    return f"result of {call.name}"


class User:
  def reply(self, task, messages):
    n = sum(m["role"] == "user" for m in messages)
    return (f"question {n}", False) if n < 3 else ("done", "###STOP###")


def test_replays_turns_in_order_after_an_opening():
  tok = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
  turns = [cf.format_tool_call("look", {"k": 1}), "Which one?", "<answer>x</answer>"]
  task = T("a", None, opening=[{"role": "assistant", "content": "Hi! How can I help?"}])
  engine = ReplayEngine(tok, turns, skip=1)
  loop = AgentLoop(engine, tok, Tools(), User(), AgentLoopConfig(answer_to_user=True))
  (traj,) = loop.run([task], 1)
  assistant = [m for m in traj.messages[2:] if m["role"] == "assistant"]
  assert assistant[0]["tool_calls"][0]["function"] == {"name": "look", "arguments": {"k": 1}}
  assert [m["content"] for m in assistant[1:]] == ["Which one?", "<answer>x</answer>",
                                                    NULL_TURN]
  assert traj.status == "user_stopped" and traj.user_stop == "###STOP###"
  assert all(lp == 0.0 for lp in traj.sampler_logprobs)
