"""parse_turn: exact parses of well-formed turns, clear errors for malformed ones, never raises."""

import json

import hypothesis
from hypothesis import strategies as st
import pytest

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.turns import Turn, parse_turn


def test_single_call():
  t = parse_turn('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
  assert t.kind == "tool_calls"
  assert t.calls == [ToolCall("get_weather", {"city": "Paris"})]
  assert t.errors == ()
  assert t.content == ""


def test_several_calls_and_text_and_think():
  text = ("<think>\nneed two cities\n</think>\nChecking both.\n"
          + cf.format_tool_call("get_weather", {"city": "Paris"}) + "\n"
          + cf.format_tool_call("get_weather", {"city": "Rome", "units": ["c", 1, None]}))
  t = parse_turn(text)
  assert t.kind == "tool_calls"
  assert t.calls == [ToolCall("get_weather", {"city": "Paris"}),
                     ToolCall("get_weather", {"city": "Rome", "units": ["c", 1, None]})]
  assert t.content == "Checking both."
  assert t.think == "need two cities"
  assert t.errors == ()


def test_answer():
  t = parse_turn("<think>done</think>All good. <answer> Booked flight AB12. </answer>")
  assert t.kind == "answer"
  assert t.answer == "Booked flight AB12."
  assert t.content == "All good."
  assert t.errors == ()


def test_message():
  t = parse_turn("  What is your booking id?  ")
  assert t.kind == "message"
  assert t.content == "What is your booking id?"
  assert t.errors == ()


def test_think_does_not_route():
  # A tool call or answer inside a think block is only thought about.
  t = parse_turn('<think><tool_call>{"name": "x", "arguments": {}}</tool_call><answer>a</answer>'
                 "</think>Which date?")
  assert t.kind == "message"
  assert t.content == "Which date?"


def test_unclosed_think_swallows_rest():
  t = parse_turn("Hello <think> <answer>no</answer>")
  assert t.kind == "message"
  assert t.content == "Hello"
  assert any("unclosed <think>" in e for e in t.errors)


@pytest.mark.parametrize("body,needle", [
    ("{not json}", "not valid JSON"),
    ('["get_weather"]', "must be a JSON object"),
    ('{"arguments": {}}', "missing a non-empty string \"name\""),
    ('{"name": "", "arguments": {}}', "missing a non-empty string \"name\""),
    ('{"name": 3, "arguments": {}}', "missing a non-empty string \"name\""),
    ('{"name": "f", "arguments": [1, 2]}', "must be a JSON object"),
    ('{"name": "f", "arguments": "{oops"}', "string that is not JSON"),
])
def test_malformed_call_is_an_error_block(body, needle):
  t = parse_turn(f"<tool_call>\n{body}\n</tool_call>")
  assert t.kind == "tool_calls"
  assert t.calls == []
  assert len(t.blocks) == 1 and t.blocks[0].call is None
  assert needle in t.blocks[0].error
  assert t.errors == (t.blocks[0].error,)


def test_good_and_bad_calls_keep_order():
  t = parse_turn(cf.format_tool_call("a", {}) + "<tool_call>oops</tool_call>"
                 + cf.format_tool_call("b", {"x": 1}))
  assert [b.call.name if b.call else None for b in t.blocks] == ["a", None, "b"]
  assert len(t.errors) == 1


def test_string_arguments_and_missing_arguments_accepted():
  t = parse_turn('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
                 '<tool_call>{"name": "g"}</tool_call>')
  assert t.calls == [ToolCall("f", {"a": 1}), ToolCall("g", {})]
  assert t.errors == ()


def test_unclosed_tool_call():
  t = parse_turn('Let me check <tool_call>{"name": "f", "arguments": {}')
  assert t.kind == "tool_calls"
  assert t.calls == []
  assert "unclosed <tool_call>" in t.errors[0]
  assert t.content == "Let me check"


def test_calls_win_over_answer():
  t = parse_turn(cf.format_tool_call("f", {}) + "<answer>x</answer>")
  assert t.kind == "tool_calls"
  assert any("answer was ignored" in e for e in t.errors)


def test_unclosed_answer_is_still_an_answer():
  t = parse_turn("<answer>The flight is booked")
  assert t.kind == "answer"
  assert t.answer == "The flight is booked"
  assert "unclosed <answer>" in t.errors[0]


def test_empty_and_non_string():
  assert parse_turn("").kind == "message"
  assert parse_turn("").errors
  t = parse_turn(None)
  assert t.kind == "message" and "must be a string" in t.errors[0]


def test_deep_nesting_does_not_raise():
  t = parse_turn("<tool_call>" + "[" * 100000 + "</tool_call>")
  assert t.kind == "tool_calls" and t.calls == [] and t.errors


_TAGS = [cf.TOOL_CALL_START, cf.TOOL_CALL_END, cf.THINK_START, cf.THINK_END, cf.ANSWER_START,
         cf.ANSWER_END, cf.IM_END, '{"name": ', '"arguments": ', "{", "}", "[", "]", '"', "\\",
         "\n", "null", "1e999", "\x00", "\ud800", "🤖"]
_hostile = st.lists(st.one_of(st.sampled_from(_TAGS), st.text(max_size=12)), max_size=40).map("".join)
# Format tags inside JSON strings are ambiguous in the Hermes format (as in Qwen's own parser), so
# well-formed text keeps "<" out of names, keys and values.
_plain = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _plain,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_plain, c, max_size=3),
    max_leaves=10)


def _check_invariants(t: Turn, text):
  assert isinstance(t, Turn)
  assert t.kind in ("tool_calls", "answer", "message")
  assert (t.kind == "tool_calls") == bool(t.blocks)
  assert (t.kind == "answer") == (t.answer is not None)
  for b in t.blocks:
    assert (b.call is None) != (b.error is None)
    if b.call is not None:
      assert isinstance(b.call.name, str) and b.call.name
      assert isinstance(b.call.arguments, dict)
  assert all(isinstance(e, str) and e for e in t.errors)


@hypothesis.settings(max_examples=2000, deadline=None)
@hypothesis.given(st.one_of(st.text(), _hostile))
def test_never_raises_on_random_and_hostile_text(text):
  _check_invariants(parse_turn(text), text)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.tuples(_plain.filter(str.strip),
                                     st.dictionaries(_plain, _json, max_size=4)),
                           min_size=1, max_size=4),
                  st.text(max_size=20).filter(lambda s: "<" not in s))
def test_well_formed_calls_parse_exactly(calls, prefix):
  text = prefix + "\n".join(cf.format_tool_call(n, a) for n, a in calls)
  t = parse_turn(text)
  assert t.kind == "tool_calls"
  assert t.errors == ()
  # JSON round trip is the reference (e.g. -0.0 vs 0.0 compare equal, tuples become lists).
  assert t.calls == [ToolCall(n.strip(), json.loads(json.dumps(a))) for n, a in calls]
  assert t.content == prefix.strip()


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text().filter(lambda s: "<" not in s), st.text().filter(lambda s: "<" not in s))
def test_well_formed_answers_parse_exactly(before, answer):
  t = parse_turn(f"{before}<answer>{answer}</answer>")
  assert t.kind == "answer"
  assert t.answer == answer.strip()
  assert t.content == before.strip()


# --- non-finite numbers (issue 19 item 5) ------------------------------------------------------

@pytest.mark.parametrize("body", [
    '{"name": "pay", "arguments": {"amount": NaN}}',
    '{"name": "pay", "arguments": {"amount": Infinity}}',
    '{"name": "pay", "arguments": {"amount": -Infinity}}',
    '{"name": "pay", "arguments": {"amount": 1e999}}',
    '{"name": "pay", "arguments": {"amounts": [1, {"x": -1e999}]}}',
    '{"name": "pay", "arguments": "{\\"amount\\": NaN}"}',  # arguments as a JSON string
    '{"name": "pay", "arguments": {"amount": 1}, "extra": NaN}',
])
def test_non_finite_numbers_make_a_malformed_call(body):
  t = parse_turn(f"<tool_call>{body}</tool_call>")
  assert t.kind == "tool_calls"
  assert t.calls == []
  assert len(t.blocks) == 1 and t.blocks[0].error
  assert "not valid JSON" in t.blocks[0].error or "not JSON" in t.blocks[0].error
  assert t.errors == (t.blocks[0].error,)


def test_finite_extremes_still_parse():
  t = parse_turn('<tool_call>{"name": "pay", "arguments": {"a": 1e308, "b": -1e-320, '
                 '"c": 12345678901234567890}}</tool_call>')
  assert t.errors == ()
  assert t.calls == [ToolCall("pay", {"a": 1e308, "b": -1e-320, "c": 12345678901234567890})]


def test_arguments_nested_too_deep_are_malformed():
  depth = 200  # parses as JSON, but deeper than any tool schema needs
  t = parse_turn('<tool_call>{"name": "f", "arguments": {"a": ' + "[" * depth + "]" * depth
                 + "}}</tool_call>")
  assert t.calls == [] and "nested deeper" in t.errors[0]
  ok = parse_turn('<tool_call>{"name": "f", "arguments": {"a": [[[1]]]}}</tool_call>')
  assert ok.errors == () and ok.calls[0].arguments == {"a": [[[1]]]}


def test_episode_with_non_finite_call_runs_on_and_logs_as_json(tmp_path):
  """A NaN/Infinity/1e999 call is an error observation; the episode goes on to its answer and the
  trajectory is written by the real rollout logger and read back."""
  import transformers  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rollout.agent_loop import INVALID_CALL_NAME, AgentLoop, AgentLoopConfig
  from synthagent_jax.rewards import rollout_log
  from synthagent_jax.utils import metrics
  from tests.rollout.test_agent_loop import (TOKENIZER_DIR, FakeTask, RecordingTools,
                                             ScriptedEngine, ScriptedUser)
  tok = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
  scripts = {"pay": ['<tool_call>{"name": "lookup", "arguments": {"key": NaN}}</tool_call>\n'
                     '<tool_call>{"name": "lookup", "arguments": {"key": 1e999}}</tool_call>\n'
                     '<tool_call>{"name": "lookup", "arguments": {"key": -Infinity}}</tool_call>',
                     cf.format_tool_call("lookup", {"key": "a"}),
                     "<answer>paid</answer>"]}
  tools = RecordingTools()
  loop = AgentLoop(ScriptedEngine(tok, scripts), tok, tools, ScriptedUser(), AgentLoopConfig())
  (traj,) = loop.run([FakeTask("t0", "pay")])
  assert traj.status == "answered" and traj.num_turns == 3
  assert tools.calls == [("t0", "lookup", {"key": "a"})]  # the malformed calls never ran
  observations = [m for m in traj.messages if m["role"] == "tool"]
  assert [m["name"] for m in observations[:3]] == [INVALID_CALL_NAME] * 3
  assert all(m["content"].startswith("Error: tool call is not valid JSON")
             for m in observations[:3])
  rec = rollout_log.rollout_record(5, traj, domain="d", reward=float("nan"), advantage=0.0)
  metrics.RolloutLogger(tmp_path, process_index=0).write(5, [rec])
  (back,) = metrics.read_rollouts(tmp_path, 5)
  assert back["messages"] == json.loads(json.dumps(traj.messages))
  assert back["status"] == "answered" and back["reward"] != back["reward"]  # NaN -> null -> NaN


# --- linear time on unclosed tags (issue 19 item 7) ----------------------------------------------

def _best_time(text, repeats=5):
  import time  # pylint: disable=g-import-not-at-top
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    parse_turn(text)
    best = min(best, time.perf_counter() - t0)
  return best


@pytest.mark.parametrize("unit", [cf.THINK_START, cf.TOOL_CALL_START, cf.ANSWER_START,
                                  cf.THINK_START + cf.TOOL_CALL_START + cf.ANSWER_START + "x"])
def test_time_is_linear_in_unclosed_tags(unit):
  n = 1000
  small, large = _best_time(unit * n), _best_time(unit * (4 * n))
  # Linear: 4x the text costs about 4x; the quadratic scan this replaces cost 16x.
  assert large / max(small, 1e-6) < 8, (small, large)
  assert parse_turn(unit * n).errors  # each is reported as unclosed
