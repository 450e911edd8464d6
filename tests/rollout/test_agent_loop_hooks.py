"""The agent loop's hooks for outside benchmarks: per-task system prompt and opening (a user
simulator that speaks first), answers routed to a multi-turn user, a step limit per user turn,
named user stops, and tool calls that reach the environment as copies."""

import dataclasses

import pytest

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig
from tests.rollout.test_agent_loop import TOOLS, ScriptedEngine, check_alignment, tok  # noqa: F401


def call(name, **args):
  return cf.format_tool_call(name, args)


@dataclasses.dataclass
class OpeningTask:
  id: str
  instruction: str | None
  tools: list = dataclasses.field(default_factory=lambda: TOOLS)
  system_prompt: str | None = None
  opening: list = dataclasses.field(default_factory=list)


class MutatingTools:
  """Keeps argument objects and mutates them later, as some BFCL API classes do."""

  def __init__(self):
    self.kept = []

  def new_episode(self, task):
    return None

  def call(self, task, call: ToolCall, state) -> str:
    self.kept.append(call.arguments)
    for args in self.kept:
      args.setdefault("items", []).append("mutated")
    return "ok"


class QuestionsUser:
  """Speaks first when asked with no user message yet; then asks the next scripted question after
  every agent reply, and stops with a named token after the last."""

  def __init__(self, questions, stop_token="###STOP###"):
    self.questions, self.stop_token, self.seen = questions, stop_token, []

  def reply(self, task, messages):
    self.seen.append([dict(m) for m in messages])
    asked = sum(m["role"] == "user" for m in messages)
    if asked < len(self.questions):
      return self.questions[asked], False
    return self.stop_token, self.stop_token


def test_opening_user_speaks_first_and_prompt_renders_once(tok):
  greeting = {"role": "assistant", "content": "Hi! How can I help you today?"}
  task = OpeningTask("o", None, system_prompt="POLICY TEXT", opening=[greeting])
  user = QuestionsUser(["I want to cancel."])
  engine = ScriptedEngine(tok, {"I want to cancel.": ["<answer>cancelled</answer>"]})
  (traj,) = AgentLoop(engine, tok, MutatingTools(), user).run([task])
  assert traj.status == "answered"
  assert traj.messages[:3] == [{"role": "system", "content": "POLICY TEXT"}, greeting,
                               {"role": "user", "content": "I want to cancel."}]
  # The user saw system + greeting only, and the prompt is the template's own rendering.
  assert user.seen[0] == traj.messages[:2]
  assert traj.token_ids[:traj.prompt_len] == cf.render_prompt_ids(tok, traj.messages[:3], TOOLS)
  check_alignment(traj, engine.eot)


def test_user_can_stop_before_the_agent_speaks(tok):
  task = OpeningTask("o", None, opening=[{"role": "assistant", "content": "Hello"}])
  (traj,) = AgentLoop(ScriptedEngine(tok, {}), tok, MutatingTools(),
                      QuestionsUser([], "###OUT-OF-SCOPE###")).run([task])
  assert traj.status == "user_stopped" and traj.user_stop == "###OUT-OF-SCOPE###"
  assert traj.turns == [] and traj.token_ids == []
  assert traj.messages[-1] == {"role": "user", "content": "###OUT-OF-SCOPE###"}


def test_answers_go_to_a_multi_turn_user_who_stops_with_a_named_token(tok):
  questions = ["q one", "q two", "q three"]
  engine = ScriptedEngine(tok, {"q one": ["<answer>a1</answer>", "plain reply", call("lookup", key="k"),
                                          "<answer>a3</answer>"]})
  user = QuestionsUser(questions, "###TRANSFER###")
  cfg = AgentLoopConfig(answer_to_user=True)
  (traj,) = AgentLoop(engine, tok, MutatingTools(), user, cfg).run([OpeningTask("m", "q one")])
  assert traj.status == "user_stopped" and traj.user_stop == "###TRANSFER###"
  users = [m["content"] for m in traj.messages if m["role"] == "user"]
  assert users == ["q one", "q two", "q three", "###TRANSFER###"]
  assert [t.kind for t in traj.turns] == ["answer", "message", "tool_calls", "answer"]
  check_alignment(traj, engine.eot)
  # Without the hook an answer ends the episode, as in training.
  (plain,) = AgentLoop(engine, tok, MutatingTools(), QuestionsUser(questions)).run(
      [OpeningTask("m", "q one")])
  assert plain.status == "answered" and plain.num_turns == 1


def test_boolean_stop_is_recorded_as_stop(tok):
  class StopUser:
    def reply(self, task, messages):
      return "bye", True
  engine = ScriptedEngine(tok, {"hi": ["Who are you?"]})
  (traj,) = AgentLoop(engine, tok, MutatingTools(), StopUser()).run([OpeningTask("s", "hi")])
  assert traj.status == "user_stopped" and traj.user_stop == "stop"
  assert traj.to_dict()["user_stop"] == "stop"


@pytest.mark.parametrize("limit,expected_status,expected_turns", [(3, "max_steps", 3),
                                                                  (0, "max_turns", 6)])
def test_step_limit_per_user_turn(tok, limit, expected_status, expected_turns):
  engine = ScriptedEngine(tok, {"loop": [call("lookup", key="x")]})
  cfg = AgentLoopConfig(max_steps_per_user_turn=limit, max_turns=6)
  (traj,) = AgentLoop(engine, tok, MutatingTools(), QuestionsUser(["loop"]), cfg).run(
      [OpeningTask("l", "loop")])
  assert traj.status == expected_status and traj.num_turns == expected_turns


def test_step_count_restarts_after_each_user_message(tok):
  # Two tool steps then a reply, per user turn, with a limit of 3 steps: never force-terminated.
  script = [call("lookup", key="a"), call("lookup", key="b"), "<answer>r</answer>"]
  engine = ScriptedEngine(tok, {"q1": script})
  cfg = AgentLoopConfig(max_steps_per_user_turn=3, answer_to_user=True, max_turns=20)
  (traj,) = AgentLoop(engine, tok, MutatingTools(), QuestionsUser(["q1", "q2", "q3"]), cfg).run(
      [OpeningTask("r", "q1")])
  assert traj.status == "user_stopped" and traj.num_turns == 9


def test_tool_env_gets_copies_of_call_arguments(tok):
  engine = ScriptedEngine(tok, {"go": [call("lookup", key="a", items=["x"]),
                                       call("lookup", key="b", items=["y"]), "<answer>d</answer>"]})
  tools = MutatingTools()
  (traj,) = AgentLoop(engine, tok, tools, QuestionsUser(["go"])).run([OpeningTask("c", "go")])
  recorded = [m["tool_calls"][0]["function"]["arguments"] for m in traj.messages
              if m.get("tool_calls")]
  assert recorded == [{"key": "a", "items": ["x"]}, {"key": "b", "items": ["y"]}]
  assert tools.kept[0]["items"] == ["x", "mutated", "mutated"]  # the env's own copy changed


def test_config_rejects_negative_step_limit():
  with pytest.raises(ValueError, match="max_steps_per_user_turn"):
    AgentLoopConfig(max_steps_per_user_turn=-1)
