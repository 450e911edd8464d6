"""models/chat_format: the tool-call text matches the chat template; deltas are prefix-stable."""

import copy
import pathlib

import pytest
import transformers

from synthagent_jax.models import chat_format as cf

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


def test_format_tool_call_hand_written():
  assert cf.format_tool_call("book", {"city": "Zürich", "n": 2, "tags": ["a"]}) == (
      '<tool_call>\n{"name": "book", "arguments": {"city": "Zürich", "n": 2, "tags": ["a"]}}\n'
      "</tool_call>")


def test_format_tool_call_rejects_bad_input():
  with pytest.raises(ValueError, match="non-empty string"):
    cf.format_tool_call("", {})
  with pytest.raises(ValueError, match="mapping"):
    cf.format_tool_call("f", [1])


def test_format_tool_call_equals_template_rendering(tok):
  args = {"city": "Paris", "when": {"d": "2026-01-02", "flex": True}, "x": None}
  msgs = [{"role": "user", "content": "q"},
          {"role": "assistant", "content": "",
           "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": args}}]}]
  text = cf.render_text(tok, msgs)
  assert f"<|im_start|>assistant\n{cf.format_tool_call('f', args)}<|im_end|>\n" in text


def test_tool_schema_drops_kind():
  t = {"type": "function", "kind": "write", "function": {"name": "f", "description": "",
                                                        "parameters": {"type": "object"}}}
  assert cf.tool_schema(t) == {"type": "function", "function": t["function"]}
  with pytest.raises(ValueError, match="tool schema"):
    cf.tool_schema({"name": "f"})


def test_delta_text_tool_results(tok):
  delta = cf.render_delta_text(tok, [{"role": "tool", "name": "f", "content": "r1"},
                                     {"role": "tool", "name": "f", "content": "r2"}])
  assert delta == ("\n<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n"
                   "</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_delta_text_user_no_generation_prompt(tok):
  delta = cf.render_delta_text(tok, [{"role": "user", "content": "hi"}], add_generation_prompt=False)
  assert delta == "\n<|im_start|>user\nhi<|im_end|>\n"


def test_prompt_plus_deltas_equal_whole_rendering(tok):
  tools = [{"type": "function", "function": {"name": "f", "description": "d",
                                             "parameters": {"type": "object", "properties": {}}}}]
  head = [{"role": "system", "content": "sys"}, {"role": "user", "content": "do it"}]
  ids = cf.render_prompt_ids(tok, head, tools)
  turn1 = cf.format_tool_call("f", {}) + cf.IM_END
  ids += cf.encode(tok, turn1)
  obs = [{"role": "tool", "name": "f", "content": "ok"}]
  ids += cf.render_delta_ids(tok, obs)
  turn2 = "<answer>done</answer>" + cf.IM_END
  ids += cf.encode(tok, turn2)
  msgs = head + [{"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": {}}}]}] + obs + [
          {"role": "assistant", "content": "<answer>done</answer>"}]
  whole = cf.encode(tok, cf.render_text(tok, msgs, tools))
  assert whole == ids + cf.encode(tok, "\n")


def test_delta_rejects_empty(tok):
  with pytest.raises(ValueError, match="at least one"):
    cf.render_delta_text(tok, [])


def test_token_id(tok):
  assert cf.token_id(tok, cf.IM_END) == tok.convert_tokens_to_ids(cf.IM_END)
  with pytest.raises(ValueError, match="not a single token"):
    cf.token_id(tok, "hello world, this is long")


# Like Qwen3's template in the one respect that matters here: only a *final* assistant turn gets an
# (empty) think block, so the anchor turn renders differently once messages follow it.
_LAST_TURN_THINK_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + m.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def _with_template(tok, template):
  other = copy.deepcopy(tok)
  other.chat_template = template
  return other


def test_delta_with_template_that_renders_last_turn_differently(tok):
  other = _with_template(tok, _LAST_TURN_THINK_TEMPLATE)
  delta = cf.render_delta_text(other, [{"role": "tool", "name": "f", "content": "r"}])
  assert delta == ("\n<|im_start|>user\n<tool_response>\nr\n</tool_response><|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_delta_rejects_template_that_is_not_prefix_stable(tok):
  unstable = ("{{- '<|im_start|>system\\n' + (messages | length | string) + '<|im_end|>\\n' }}"
              "{%- for m in messages[1:] %}{{- '<|im_start|>' + m.role + '\\n' + m.content"
              " + '<|im_end|>\\n' }}{%- endfor %}")
  with pytest.raises(ValueError, match="not prefix-stable"):
    cf.render_delta_text(_with_template(tok, unstable), [{"role": "user", "content": "x"}])


def test_compact_tool_schema_keeps_name_description_and_parameters():
  tool = {"type": "function", "kind": "write", "function": {
      "name": "book", "description": "Book a table.",
      "parameters": {"type": "object", "properties": {"date": {"type": "string"},
                                                      "size": {"type": "integer"}},
                     "required": ["date"]}}}
  assert cf.compact_tool_schema(tool) == {
      "name": "book", "description": "Book a table.",
      "parameters": {"date": "string", "size": "integer, optional"}}


def test_render_text_passes_compact_schemas_through(tok):
  compact = {"name": "f", "description": "d", "parameters": {"a": "string"}}
  text = cf.render_text(tok, [{"role": "user", "content": "hi"}], [compact])
  assert '{"name": "f", "description": "d", "parameters": {"a": "string"}}' in text
