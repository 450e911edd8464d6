"""The chat and tool-call *format* (Qwen2.5 / Hermes style) and token-in/token-out rendering helpers.

Text format of one assistant turn that calls tools (what the chat template renders and what
`rollout.turns.parse_turn` reads back)::

    optional text
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call><|im_end|>

Token-in/token-out: a conversation's token ids are built once, piece by piece. The prompt is
rendered with the chat template; every later environment message is rendered as a *delta* (the
text the template would add after the last sampled turn's end token) and tokenized on its own, so
sampled tokens are never re-tokenized. Works with any HF tokenizer whose chat template renders a
conversation as a prefix-stable string (Qwen2.5, Qwen3, our data/tokenizer).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_RESPONSE_START = "<tool_response>"
TOOL_RESPONSE_END = "</tool_response>"
THINK_START = "<think>"
THINK_END = "</think>"
ANSWER_START = "<answer>"
ANSWER_END = "</answer>"


def dump_arguments(arguments: Mapping[str, Any]) -> str:
  """JSON text of a call's arguments, byte-identical to the template's `tojson` filter."""
  return json.dumps(dict(arguments), ensure_ascii=False)


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
  """One tool call as the chat template renders it (and as the policy should emit it)."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"tool call name must be a non-empty string, got {name!r}")
  if not isinstance(arguments, Mapping):
    raise ValueError(f"tool call arguments must be a mapping, got {type(arguments).__name__}")
  return (f'{TOOL_CALL_START}\n{{"name": {json.dumps(name, ensure_ascii=False)}, '
          f'"arguments": {dump_arguments(arguments)}}}\n{TOOL_CALL_END}')


def format_answer(text: str) -> str:
  return f"{ANSWER_START}{text}{ANSWER_END}"


def tool_schema(tool: Any) -> dict:
  """A tool as the chat template expects it: {"type": "function", "function": {...}}.

  Accepts `envs.task.Tool` (anything with `openai_schema()`) or a dict in the Task/OpenAI shape;
  keys the template must not see (e.g. the Task schema's "kind") are dropped.
  """
  if hasattr(tool, "openai_schema"):
    return tool.openai_schema()
  if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
    return {"type": "function", "function": dict(tool["function"])}
  raise ValueError(f"cannot use {tool!r} as a tool schema: expected a Tool or "
                   "{'type': 'function', 'function': {...}}")


def compact_tool_schema(tool: Any) -> dict:
  """A shorter rendering of a tool for small-context policies: name, description and parameters
  as {name: type} (optional ones marked), without the JSON-schema wrapper. Still one JSON line in
  the template's <tools> block; about half the tokens of `tool_schema` for our toy worlds."""
  fn = tool_schema(tool)["function"]
  params = fn.get("parameters") or {}
  required = set(params.get("required") or ())
  props = {}
  for name, spec in (params.get("properties") or {}).items():
    kind = spec.get("type", "any") if isinstance(spec, Mapping) else "any"
    props[name] = kind if name in required else f"{kind}, optional"
  out = {"name": fn["name"], "description": fn.get("description", "")}
  out["parameters"] = props
  return out


def _template_ids(tokenizer, messages, tools=None, add_generation_prompt=False) -> list[int]:
  text = render_text(tokenizer, messages, tools=tools, add_generation_prompt=add_generation_prompt)
  return encode(tokenizer, text)


def render_text(tokenizer, messages: Sequence[Mapping], tools: Sequence[Any] | None = None,
                add_generation_prompt: bool = False) -> str:
  """The chat template's text for a whole conversation. `tools` are Tools / tool dicts (rendered
  with `tool_schema`) or already-rendered dicts without a "function" key (passed as they are)."""
  schemas = ([t if isinstance(t, Mapping) and "name" in t and "function" not in t
              else tool_schema(t) for t in tools] if tools else None)
  return tokenizer.apply_chat_template(list(messages), tools=schemas, tokenize=False,
                                       add_generation_prompt=add_generation_prompt)


def encode(tokenizer, text: str) -> list[int]:
  """Plain text -> ids, no BOS/EOS added (special-token strings in the text map to their ids)."""
  return list(tokenizer.encode(text, add_special_tokens=False))


def render_prompt_ids(tokenizer, messages: Sequence[Mapping], tools: Sequence[Any] | None = None
                      ) -> list[int]:
  """Token ids of the opening conversation, ending with the assistant generation prompt."""
  return _template_ids(tokenizer, messages, tools=tools, add_generation_prompt=True)


# A fixed conversation ending in an assistant turn; deltas are rendered after it. Its own text is
# irrelevant: only where its last end-of-turn token sits matters.
_ANCHOR = ({"role": "system", "content": "S"}, {"role": "user", "content": "U"},
           {"role": "assistant", "content": "A"})


def render_delta_text(tokenizer, new_messages: Sequence[Mapping], add_generation_prompt: bool = True,
                      end_of_turn: str = IM_END) -> str:
  """Text the chat template adds after an assistant turn's end token for `new_messages`.

  E.g. for one tool result with our template:
  "\\n<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n".
  The leading "\\n" follows the sampled <|im_end|>, which the sampler produced itself.

  The delta is what follows the anchor assistant turn's end token in the rendering of
  anchor + new_messages. The anchor turn's own text may render differently once it is no longer
  last (Qwen3's template adds an empty think block only to a final assistant turn); that text is
  never used, but everything before the anchor turn must be unchanged.

  Raises:
    ValueError: if `new_messages` is empty, the template does not end turns with `end_of_turn`,
      or it is not prefix-stable (appending messages changed the turns before the anchor turn).
  """
  if not new_messages:
    raise ValueError("render_delta_text needs at least one new message")
  head = render_text(tokenizer, _ANCHOR[:2])
  base = render_text(tokenizer, _ANCHOR)
  full = render_text(tokenizer, list(_ANCHOR) + list(new_messages),
                     add_generation_prompt=add_generation_prompt)
  num_ends = base.count(end_of_turn)
  if num_ends == 0 or not base.rstrip().endswith(end_of_turn):
    raise ValueError(f"the chat template does not end an assistant turn with {end_of_turn!r}")
  if not (base.startswith(head) and full.startswith(head)):
    raise ValueError("the chat template is not prefix-stable: appending messages changed the "
                     "rendering of earlier turns, so deltas cannot be rendered token-in/token-out")
  cut = -1
  for _ in range(num_ends):
    cut = full.find(end_of_turn, cut + 1)
    if cut < 0:
      raise ValueError(f"the chat template dropped an {end_of_turn!r} when messages were appended")
  return full[cut + len(end_of_turn):]


def render_delta_ids(tokenizer, new_messages: Sequence[Mapping], add_generation_prompt: bool = True,
                     end_of_turn: str = IM_END) -> list[int]:
  """`render_delta_text` tokenized on its own (never together with earlier history)."""
  return encode(tokenizer, render_delta_text(tokenizer, new_messages, add_generation_prompt,
                                             end_of_turn))


@functools.lru_cache(maxsize=32)
def _token_id_cached(tokenizer, token: str) -> int:
  ids = encode(tokenizer, token)
  if len(ids) != 1:
    raise ValueError(f"{token!r} is not a single token in this tokenizer (got ids {ids})")
  return ids[0]


def token_id(tokenizer, token: str) -> int:
  """The id of a token that must encode to exactly one id (e.g. IM_END)."""
  try:
    return _token_id_cached(tokenizer, token)
  except TypeError:  # unhashable tokenizer object
    return _token_id_cached.__wrapped__(tokenizer, token)
