"""Agent loop with a scripted Engine and in-test environments: token-in/token-out bookkeeping,
routing, limits and every episode status."""

import dataclasses
import json
import pathlib

import hypothesis
from hypothesis import strategies as st
import pytest
import transformers

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.inference.engine import Completion, SamplingParams
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import (INVALID_CALL_NAME, TRUNCATION_NOTE, AgentLoop,
                                               AgentLoopConfig)
from synthagent_jax.rollout.trajectory import STATUSES, Trajectory

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"
TOOLS = [
    {"type": "function", "kind": "read", "function": {
        "name": "lookup", "description": "Look a record up",
        "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}}},
    {"type": "function", "kind": "write", "function": {
        "name": "big", "description": "Returns a long report",
        "parameters": {"type": "object", "properties": {}}}},
]


@dataclasses.dataclass
class FakeTask:
  id: str
  instruction: str
  tools: list = dataclasses.field(default_factory=lambda: TOOLS)


def fake_logprob(position: int, token: int) -> float:
  """What the scripted engine reports for `token` sampled at absolute `position`."""
  return -((token * 31 + position * 7) % 1000) / 997.0 - 1e-3


class ScriptedEngine:
  """Plays a fixed script per task: turn k of the episode with instruction I is script[I][k % len].

  It sees only token ids (like a real engine): it decodes the prompt to find the instruction and
  counts the assistant turns so far. Honors max_new_tokens and the stop token.
  """

  def __init__(self, tok, scripts: dict[str, list[str]]):
    self.tok, self.scripts, self.batch_sizes = tok, scripts, []
    self.eot = cf.token_id(tok, cf.IM_END)

  def generate(self, prompt_ids, sampling: SamplingParams):
    assert sampling.stop_token_ids == (self.eot,)
    self.batch_sizes.append(len(prompt_ids))
    out = []
    for prompt in prompt_ids:
      text = self.tok.decode(prompt)
      instruction = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
      k = text.count("<|im_start|>assistant\n") - 1
      script = self.scripts[instruction]
      ids = cf.encode(self.tok, script[k % len(script)]) + [self.eot]
      finish = "stop"
      if len(ids) > sampling.max_new_tokens:
        ids, finish = ids[:sampling.max_new_tokens], "length"
      out.append(Completion(ids, [fake_logprob(len(prompt) + j, t) for j, t in enumerate(ids)],
                            finish))
    return out

  def update_weights(self, weights, step):
    return {}  # a script has no weights

  def wait_ready(self):
    pass


class RecordingTools:

  def __init__(self):
    self.calls = []

  def new_episode(self, task):
    return {"task": task.id, "n": 0}

  def call(self, task, call: ToolCall, state) -> str:
    state["n"] += 1
    self.calls.append((task.id, call.name, call.arguments))
    if call.arguments.get("key") == "boom":
      raise RuntimeError("tool backend down")
    if call.name == "big":
      return "report " * 400
    return json.dumps({"key": call.arguments.get("key"), "value": len(call.arguments), "n": state["n"]})


class ScriptedUser:

  def reply(self, task, messages):
    last = messages[-1]
    assert last["role"] == "assistant"
    if "bye" in last["content"]:
      return "###STOP###", True
    if "explode" in last["content"]:
      raise ValueError("user simulator crashed")
    return f"My key is K{len(messages)}.", False


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def call(name, **args):
  return cf.format_tool_call(name, args)


SCRIPTS = {
    "two calls then answer": [
        "Looking it up.\n" + call("lookup", key="a") + "\n" + call("lookup", key="b"),
        "<answer>a and b found</answer>"],
    "ask then answer": ["What is your key?", call("lookup", key="K4"), "<think>ok</think><answer>done</answer>"],
    "answer now": ["<answer>42</answer>"],
    "user stops": ["Anything else? bye"],
    "chatty": ["Hello?", "Still there?", "Hello again?", "And again?"],
    "tool error": [call("lookup", key="boom")],
    "user error": ["please explode"],
    "malformed": ['<tool_call>\n{"name": "lookup", "arguments": [1]}\n</tool_call>\n'
                  "<tool_call>{oops</tool_call>", "<answer>recovered</answer>"],
    "big": [call("big"), "<answer>read it</answer>"],
    "long turn": ["word " * 200, "<answer>x</answer>"],
}


def run(tok, instructions, num_samples=1, **cfg):
  engine = ScriptedEngine(tok, SCRIPTS)
  tools = RecordingTools()
  loop = AgentLoop(engine, tok, tools, ScriptedUser(), AgentLoopConfig(**cfg))
  trajs = loop.run([FakeTask(f"t{i}", s) for i, s in enumerate(instructions)], num_samples)
  return trajs, engine, tools, loop


def check_alignment(traj: Trajectory, eot: int):
  """loss_mask is 1 exactly on each turn's sampled span; logprobs are the engine's, else 0."""
  assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.sampler_logprobs)
  expected = [0] * len(traj.token_ids)
  for turn in traj.turns:
    for p in range(turn.start, turn.start + turn.num_sampled):
      expected[p] = 1
    if turn.finish_reason == "stop":
      assert traj.token_ids[turn.start + turn.num_sampled - 1] == eot
  assert traj.loss_mask == expected
  for p, (t, m, lp) in enumerate(zip(traj.token_ids, traj.loss_mask, traj.sampler_logprobs)):
    assert lp == (fake_logprob(p, t) if m else 0.0)
  assert traj.num_response_tokens == sum(traj.loss_mask)
  assert traj.prompt_len == traj.turns[0].start if traj.turns else True
  for turn, nxt in zip(traj.turns, traj.turns[1:]):
    closing = 0 if traj.token_ids[turn.start + turn.num_sampled - 1] == eot else 1
    assert turn.start + turn.num_sampled + closing + turn.num_env_tokens == nxt.start


def retokenize(tok, traj, task_tools=TOOLS):
  return cf.encode(tok, cf.render_text(tok, traj.messages, task_tools))


def test_tool_calls_then_answer(tok):
  (traj,), engine, tools, _ = run(tok, ["two calls then answer"])
  assert traj.status == "answered"
  assert traj.num_turns == 2 and traj.num_tool_calls == 2
  assert [c[1:] for c in tools.calls] == [("lookup", {"key": "a"}), ("lookup", {"key": "b"})]
  check_alignment(traj, engine.eot)
  roles = [m["role"] for m in traj.messages]
  assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
  assert traj.messages[2]["content"] == "Looking it up."
  assert traj.messages[2]["tool_calls"][1]["function"] == {"name": "lookup", "arguments": {"key": "b"}}
  # Re-rendering the decoded conversation gives the same ids (plus the template's final "\n").
  assert retokenize(tok, traj) == traj.token_ids + cf.encode(tok, "\n")


def test_user_turn_then_tool_then_answer(tok):
  (traj,), engine, _, _ = run(tok, ["ask then answer"])
  assert traj.status == "answered"
  assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "user", "assistant",
                                                "tool", "assistant"]
  assert traj.messages[3]["content"] == "My key is K3."
  check_alignment(traj, engine.eot)
  assert retokenize(tok, traj) == traj.token_ids + cf.encode(tok, "\n")


def test_loop_does_not_rely_on_retokenization(tok):
  # Sampled ids that are NOT the canonical tokenization of their text are kept verbatim.
  engine = ScriptedEngine(tok, SCRIPTS)
  word = cf.encode(tok, "<answer>42</answer>")
  odd = [i for ch in "<answer>42</answer>" for i in cf.encode(tok, ch)]  # one id per character
  assert odd != word

  class OddEngine:
    def generate(self, prompt_ids, sampling):
      return [Completion(odd + [engine.eot], [-0.5] * (len(odd) + 1), "stop") for _ in prompt_ids]

  loop = AgentLoop(OddEngine(), tok, RecordingTools(), ScriptedUser(), AgentLoopConfig())
  (traj,) = loop.run([FakeTask("t", "answer now")])
  assert traj.status == "answered"
  assert traj.token_ids[traj.prompt_len:] == odd + [engine.eot]
  assert retokenize(tok, traj)[traj.prompt_len:-1] != traj.token_ids[traj.prompt_len:]


def test_every_status_reachable_in_one_batch(tok):
  names = ["answer now", "user stops", "chatty", "tool error", "user error"]
  trajs, engine, _, _ = run(tok, names, max_turns=3)
  status = {t.task_id: t.status for t in trajs}
  assert status == {"t0": "answered", "t1": "user_stopped", "t2": "max_turns", "t3": "error",
                    "t4": "error"}
  assert "tool backend down" in trajs[3].error and "user simulator crashed" in trajs[4].error
  assert trajs[1].messages[-1] == {"role": "user", "content": "###STOP###"}
  assert trajs[2].num_turns == 3
  for t in trajs:
    check_alignment(t, engine.eot)
  (full,), _, _, _ = run(tok, ["chatty"], max_total_tokens=420, max_turns=10)
  assert full.status == "context_full"
  assert len(full.token_ids) <= 420
  check_alignment(full, engine.eot)
  reached = {t.status for t in trajs} | {full.status}
  assert reached == set(STATUSES) - {"max_steps"}  # max_steps: test_agent_loop_hooks.py


def test_prompt_longer_than_context_is_context_full(tok):
  (traj,), engine, _, _ = run(tok, ["answer now"], max_total_tokens=50)
  assert traj.status == "context_full" and traj.turns == [] and engine.batch_sizes == []
  assert traj.num_response_tokens == 0


def test_context_full_on_truncated_turn(tok):
  (traj,), engine, _, _ = run(tok, ["long turn"], max_total_tokens=460, max_new_tokens=400)
  assert traj.status == "context_full"
  assert len(traj.token_ids) == 460
  assert traj.turns[-1].finish_reason == "length"
  assert traj.token_ids[-1] == engine.eot and traj.loss_mask[-1] == 0
  check_alignment(traj, engine.eot)


def test_malformed_calls_become_error_observations(tok):
  (traj,), engine, tools, _ = run(tok, ["malformed"])
  assert traj.status == "answered"
  assert tools.calls == []
  obs = [m for m in traj.messages if m["role"] == "tool"]
  assert [m["name"] for m in obs] == [INVALID_CALL_NAME, INVALID_CALL_NAME]
  assert "must be a JSON object" in obs[0]["content"] and "not valid JSON" in obs[1]["content"]
  assert obs[0]["content"].startswith("Error: ")
  assert traj.turns[0].num_call_errors == 2 and traj.turns[0].num_calls == 0
  assert traj.num_tool_calls == 0
  # The agent saw the error observations: they are in its token stream.
  text = tok.decode(traj.token_ids)
  assert "Error: arguments of 'lookup' must be a JSON object" in text
  check_alignment(traj, engine.eot)


def test_tool_response_truncated_and_recorded(tok):
  (traj,), engine, _, _ = run(tok, ["big"], max_tool_response_tokens=20)
  assert traj.status == "answered"
  assert traj.truncated_tool_responses == 1 and traj.turns[0].truncated_tool_responses == 1
  obs = traj.messages[3]
  assert obs["content"].endswith(TRUNCATION_NOTE)
  assert len(cf.encode(tok, obs["content"][:-len(TRUNCATION_NOTE)])) <= 21
  check_alignment(traj, engine.eot)


def test_per_turn_length_limit_closes_turn_untrained(tok):
  (traj,), engine, _, _ = run(tok, ["long turn"], max_new_tokens=30)
  first = traj.turns[0]
  assert first.finish_reason == "length" and first.num_sampled == 30
  closing = first.start + first.num_sampled
  assert traj.token_ids[closing] == engine.eot and traj.loss_mask[closing] == 0
  assert traj.status == "answered"
  check_alignment(traj, engine.eot)


def test_no_episode_waits_for_the_slowest(tok):
  # Episodes of 1, 2 and 3 turns, 2 samples each: each round carries only unfinished episodes.
  trajs, engine, _, loop = run(tok, ["answer now", "two calls then answer", "ask then answer"],
                               num_samples=2)
  assert engine.batch_sizes == [6, 4, 2]
  assert [t.sample_index for t in trajs] == [0, 1, 0, 1, 0, 1]
  assert [t.task_id for t in trajs] == ["t0", "t0", "t1", "t1", "t2", "t2"]
  assert loop.stats.rounds == 3
  assert loop.stats.sampled_tokens == sum(t.num_response_tokens for t in trajs)
  assert loop.stats.prefill_tokens > sum(t.prompt_len for t in trajs)


def test_trajectory_round_trips_through_json(tok):
  (traj,), _, _, _ = run(tok, ["malformed"])
  again = Trajectory.from_dict(json.loads(json.dumps(traj.to_dict())))
  assert again == traj


def test_real_task_objects(tok):
  task_mod = pytest.importorskip("synthagent_jax.envs.task")
  task = task_mod.Task.from_dict({
      "id": "real-1", "domain": "weather", "instruction": "answer now", "full_task": "Say 42.",
      "tools": TOOLS, "world": {"facts": {}, "state": {}, "responses": []},
      "user": {"persona": "p", "private_info": {}, "reason": "r"},
      "rubric": {"subgoals": [{"id": "s1", "text": "answers", "weight": 1.0, "check": None}],
                 "interactions": [], "forbidden": []},
      "reference": None, "metadata": {}})
  engine = ScriptedEngine(tok, SCRIPTS)
  loop = AgentLoop(engine, tok, RecordingTools(), ScriptedUser(), AgentLoopConfig())
  (traj,) = loop.run([task])
  assert traj.status == "answered" and traj.task_id == "real-1"
  prompt = tok.decode(traj.token_ids[:traj.prompt_len])
  assert '"name": "lookup"' in prompt and '"kind"' not in prompt


class BatchUser(ScriptedUser):
  """A user with reply_batch (like envs.user.LLMUserSimulator): one call per round."""

  def __init__(self):
    self.batch_sizes = []

  def reply_batch(self, tasks, conversations):
    self.batch_sizes.append(len(tasks))
    return [self.reply(t, m) for t, m in zip(tasks, conversations)]


def test_user_replies_batched_per_round(tok):
  user = BatchUser()
  loop = AgentLoop(ScriptedEngine(tok, SCRIPTS), tok, RecordingTools(), user,
                   AgentLoopConfig(max_turns=3))
  trajs = loop.run([FakeTask("a", "chatty"), FakeTask("b", "ask then answer")], num_samples=2)
  # Round 1: all 4 episodes message the user; round 2: only "chatty" (the others call a tool).
  assert user.batch_sizes == [4, 2]
  assert [t.status for t in trajs] == ["max_turns", "max_turns", "answered", "answered"]
  assert trajs[2].messages[3] == {"role": "user", "content": "My key is K3."}


def test_failing_batch_falls_back_to_per_episode(tok):
  # "user error" raises inside reply(): the batch call fails, each episode then asks alone and
  # only the failing one ends with "error".
  user = BatchUser()
  loop = AgentLoop(ScriptedEngine(tok, SCRIPTS), tok, RecordingTools(), user, AgentLoopConfig())
  trajs = loop.run([FakeTask("a", "user error"), FakeTask("b", "ask then answer")])
  assert [t.status for t in trajs] == ["error", "answered"]
  assert "user simulator crashed" in trajs[0].error


def test_bad_user_reply_shape_is_an_error(tok):
  class BadUser:
    def reply(self, task, messages):
      return "just text"

  loop = AgentLoop(ScriptedEngine(tok, SCRIPTS), tok, RecordingTools(), BadUser(), AgentLoopConfig())
  (traj,) = loop.run([FakeTask("a", "chatty")])
  assert traj.status == "error" and "(text, stop)" in traj.error


def test_seeds_vary_per_round_and_run_unless_given(tok):
  seeds = []

  class SeedEngine(ScriptedEngine):
    def generate(self, prompt_ids, sampling):
      seeds.append(sampling.seed)
      return super().generate(prompt_ids, sampling)

  loop = AgentLoop(SeedEngine(tok, SCRIPTS), tok, RecordingTools(), ScriptedUser(),
                   AgentLoopConfig(seed=3))
  tasks = [FakeTask("a", "two calls then answer")]
  loop.run(tasks)
  loop.run(tasks)
  loop.run(tasks, seed=3)
  assert seeds[0] != seeds[1]  # rounds differ
  assert len(set(seeds[:4])) == 4  # the second run does not repeat the first
  assert seeds[4:6] == seeds[0:2]  # an explicit seed reproduces


# No "e"/"y": ScriptedUser reacts to "bye" and "explode".
_word = st.text(alphabet="abcdfghijklmnopqrstuvwxzABCDEFGHIJ0123456789", min_size=1, max_size=8)
_sentence = st.lists(_word, min_size=1, max_size=6).map(" ".join)
_turn = st.one_of(
    _sentence,  # a message to the user
    st.lists(st.tuples(st.sampled_from(["lookup", "big"]),
                       st.dictionaries(_word, st.one_of(_word, st.integers(-99, 99)), max_size=2)),
             min_size=1, max_size=3).map(lambda cs: "\n".join(call(n, **a) for n, a in cs)))


@hypothesis.settings(max_examples=100, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(st.lists(_turn, max_size=4), _sentence, _sentence)
def test_retokenizing_random_conversations_reproduces_ids(tok, turns, instruction, answer):
  # With canonically tokenized turns that start with a word, the template is deterministic:
  # re-rendering the decoded messages gives back the loop's ids exactly.
  scripts = {instruction: turns + [f"<answer>{answer}</answer>"]}
  loop = AgentLoop(ScriptedEngine(tok, scripts), tok, RecordingTools(), ScriptedUser(),
                   AgentLoopConfig(max_turns=10, max_total_tokens=8192,
                                   max_tool_response_tokens=4096))
  (traj,) = loop.run([FakeTask("r", instruction)])
  assert traj.status == "answered" and traj.num_turns == len(turns) + 1
  check_alignment(traj, loop.eot_id)
  assert retokenize(tok, traj) == traj.token_ids + cf.encode(tok, "\n")
