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
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _plain,
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
