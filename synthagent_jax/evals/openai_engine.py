"""An OpenAI-compatible /chat/completions endpoint as an `Engine` (the `openai:BASE_URL:MODEL`
policy of evals/policies.py).

OpenAIChatEngine approximates token-in/token-out over a chat API: it decodes the prompt ids back
into chat messages (system / user / assistant with tool_calls / tool, the tool schemas parsed from
the system prompt's <tools> block), sends them to /chat/completions with `tools`, and re-encodes
the reply (content + tool calls) in our turn format with our tokenizer. The hosted model renders
the conversation with its own chat template, so what it saw is not byte-identical to our prompt,
and logprobs are 0; scores are comparable, token statistics are not.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from synthagent_jax.inference.engine import Completion, SamplingParams

_TOOLS_RE = re.compile(r"<tools>\n(.*?)\n</tools>", re.DOTALL)
_TOOLS_HEADER = "\n\n# Tools\n"


def prompt_to_messages(text: str) -> tuple[list[dict], list[dict]]:
  """(chat messages, tool schemas) of a prompt our chat template rendered (Qwen2.5 layout).

  The system turn's "# Tools" section becomes the tool list; an assistant turn's <tool_call>
  blocks become `tool_calls`; a user turn made only of <tool_response> blocks becomes one `tool`
  message per block. The trailing generation prompt (an open assistant turn) is dropped.
  """
  from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rollout.turns import parse_turn  # pylint: disable=g-import-not-at-top
  turn_re = re.compile(re.escape(cf.IM_START) + r"(system|user|assistant|tool)\n(.*?)"
                       + re.escape(cf.IM_END), re.DOTALL)
  response_re = re.compile(re.escape(cf.TOOL_RESPONSE_START) + r"\n?(.*?)\n?"
                           + re.escape(cf.TOOL_RESPONSE_END), re.DOTALL)
  messages, tools = [], []
  for role, body in turn_re.findall(text):
    if role == "system":
      head, sep, rest = body.partition(_TOOLS_HEADER)
      if sep:
        found = _TOOLS_RE.search(rest)
        for line in (found.group(1).splitlines() if found else []):
          if line.strip():
            tools.append(json.loads(line))
      messages.append({"role": "system", "content": head})
    elif role == "user" and body.lstrip().startswith(cf.TOOL_RESPONSE_START):
      for content in response_re.findall(body):
        messages.append({"role": "tool", "content": content})
    elif role == "assistant":
      turn = parse_turn(body)
      msg = {"role": "assistant", "content": body}
      if turn.calls:
        content = body
        for block in turn.blocks:
          if block.call is not None:
            content = content.replace(f"{cf.TOOL_CALL_START}{block.raw}{cf.TOOL_CALL_END}", "", 1)
        msg = {"role": "assistant", "content": content.strip(),
               "tool_calls": [{"type": "function", "function": {"name": c.name,
                                                                "arguments": c.arguments}}
                              for c in turn.calls]}
      messages.append(msg)
    else:
      messages.append({"role": role, "content": body})
  return messages, tools


def reply_to_turn(content: str | None, tool_calls: Sequence[Any] | None) -> str:
  """A chat-completions reply (content + tool calls) as one assistant turn in our format."""
  from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
  parts = [content.strip()] if content and content.strip() else []
  for call in tool_calls or ():
    fn = call.function
    try:
      args = json.loads(fn.arguments) if isinstance(fn.arguments, str) else dict(fn.arguments or {})
    except json.JSONDecodeError:
      parts.append(f"{cf.TOOL_CALL_START}\n{{\"name\": {json.dumps(fn.name)}, \"arguments\": "
                   f"{fn.arguments}}}\n{cf.TOOL_CALL_END}")  # left malformed: the loop reports it
      continue
    parts.append(cf.format_tool_call(fn.name, args if isinstance(args, dict) else {}))
  return "\n".join(parts)


class OpenAIChatEngine:
  """An Engine over an OpenAI-compatible /chat/completions endpoint (see the module docstring)."""

  def __init__(self, base_url: str, model: str, tokenizer, *, api_key_env: str = "OPENAI_API_KEY",
               max_concurrency: int = 8, timeout_s: float = 300.0, client: Any = None):
    from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
    import openai  # pylint: disable=g-import-not-at-top
    from synthagent_jax.llm.openai_http import OpenAIChatLLM, OpenAIConfig  # pylint: disable=g-import-not-at-top
    self.model, self.tokenizer = model, tokenizer
    self.eot = cf.token_id(tokenizer, cf.IM_END)
    self.max_concurrency = max_concurrency
    self._client = client or openai.OpenAI(base_url=base_url,
                                           api_key=os.environ.get(api_key_env) or "EMPTY",
                                           timeout=timeout_s, max_retries=3)
    self.llm = OpenAIChatLLM(OpenAIConfig(base_url=base_url, model=model, api_key_env=api_key_env,
                                          timeout_s=timeout_s))

  def _one(self, prompt: Sequence[int], sampling: SamplingParams) -> Completion:
    from synthagent_jax.models import chat_format as cf  # pylint: disable=g-import-not-at-top
    from synthagent_jax.llm.openai_http import to_openai_messages  # pylint: disable=g-import-not-at-top
    text = self.tokenizer.decode(list(prompt), skip_special_tokens=False)
    messages, tools = prompt_to_messages(text)
    kwargs = {"model": self.model, "messages": to_openai_messages(messages),
              "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
              "top_p": sampling.top_p, "seed": sampling.seed}
    if tools:
      kwargs["tools"] = tools
    choice = self._client.chat.completions.create(**kwargs).choices[0]
    turn = reply_to_turn(choice.message.content, getattr(choice.message, "tool_calls", None))
    ids = cf.encode(self.tokenizer, turn)
    finish = "length" if choice.finish_reason == "length" else "stop"
    if finish == "stop":
      ids.append(self.eot)
    if len(ids) > sampling.max_new_tokens:
      ids, finish = ids[:sampling.max_new_tokens], "length"
    return Completion(ids, [0.0] * len(ids), finish)

  def update_weights(self, weights, step: int) -> dict[str, float]:
    return {}  # a served model we do not train

  def wait_ready(self) -> None:
    pass

  def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams
               ) -> list[Completion]:
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    if not prompt_ids:
      return []
    with concurrent.futures.ThreadPoolExecutor(min(self.max_concurrency, len(prompt_ids))) as pool:
      return list(pool.map(lambda p: self._one(p, sampling), prompt_ids))
