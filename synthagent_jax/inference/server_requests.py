"""Request parsing and validation for the policy server (`inference/server.py`).

Every request is checked here, on its own, BEFORE it reaches the batcher: a malformed body, an
out-of-vocabulary token id, a NaN temperature or a prompt longer than the model's context is
answered 400 (413 for a body over the size limit, 415 for a body that is not JSON) naming the
field and the limit, and never fails the other requests it would have been batched with.

    parse_json(raw_bytes)                     -> dict (400 for anything that is not a JSON object)
    sglang_sampling(sampling_params, ...)     -> SamplingParams  (SGLang /generate)
    generate_prompts(body, tokenizer)         -> (prompts, batched)
    chat_messages(messages) / chat_tools(tools) / chat_sampling(body, stop_ids, ...)
    check_prompt(prompt, ...)                 -> prompt ids in range and within the context
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from typing import Any, Sequence

from synthagent_jax.inference.engine import SamplingParams

_SGLANG_KEYS = {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids",
                "sampling_seed"}
_ROLES = ("system", "user", "assistant", "tool")
_MAX_STOP_IDS = 64
_MAX_SEED = 2**63


class RequestError(ValueError):
  """A bad request; answered with HTTP `status` (400 unless said otherwise) and this message."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask of the server (each is a flag of `launch.serve`).

  Attributes:
    max_new_tokens: cap on a request's max_new_tokens / max_tokens.
    default_max_tokens: chat completion tokens when a request names none (clipped to the room
      left in the context).
    context_len: prompt + new tokens at most; None: the model's max_position_embeddings.
    max_prompts: prompts in one /generate request.
    max_body_bytes: request body size (413 beyond).
    max_pending: prompts queued or generating at once (503 beyond, which clients retry).
    watchdog_s: /health answers 503 once one engine call has run longer than this.
  """

  max_new_tokens: int = 4096
  default_max_tokens: int = 256
  context_len: int | None = None
  max_prompts: int = 64
  max_body_bytes: int = 4 * 2**20
  max_pending: int = 1024
  watchdog_s: float = 600.0

  def __post_init__(self):
    for name in ("max_new_tokens", "default_max_tokens", "max_prompts", "max_body_bytes",
                 "max_pending"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
    if self.context_len is not None and (not isinstance(self.context_len, int)
                                         or self.context_len < 2):
      raise ValueError(f"Limits.context_len must be an int >= 2 or None, got {self.context_len!r}")
    if not (isinstance(self.watchdog_s, (int, float)) and math.isfinite(self.watchdog_s)
            and self.watchdog_s > 0):
      raise ValueError(f"Limits.watchdog_s must be a positive number, got {self.watchdog_s!r}")


# -- JSON bodies ----------------------------------------------------------------------------------

def _reject_constant(name: str):
  raise RequestError(f"request body contains {name}, which is not JSON (numbers must be finite)")


def parse_json(raw: bytes) -> dict:
  """The request body as a JSON object; 400 for invalid UTF-8, NaN/Infinity literals, nesting
  too deep for the parser, integers too long to convert, unpaired surrogates, or a non-object."""
  try:
    body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
  except RequestError:
    raise
  except UnicodeDecodeError as e:
    raise RequestError(f"request body is not UTF-8: {e}") from e
  except RecursionError as e:
    raise RequestError("request body is nested too deeply") from e
  except ValueError as e:  # JSONDecodeError, and int() of a number with too many digits
    raise RequestError(f"request body is not JSON: {e}") from e
  if not isinstance(body, dict):
    raise RequestError("request body must be a JSON object")
  try:  # a lone surrogate ("\ud800") decodes but breaks the tokenizer and every later encode
    json.dumps(body, ensure_ascii=False).encode("utf-8")
  except UnicodeEncodeError as e:
    raise RequestError(f"request body contains a string that is not valid Unicode: {e}") from e
  except (ValueError, RecursionError) as e:
    raise RequestError(f"request body cannot be re-encoded: {e}") from e
  return body


# -- numbers and sampling -------------------------------------------------------------------------

def number(body: dict, key: str, default, kind=float, label: str | None = None):
  """body[key] as a finite float (or int for kind=int); `default` when absent or null."""
  label = label or key
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RequestError(f"{label} must be a number, got {value!r}"[:300])
  if not math.isfinite(value):
    raise RequestError(f"{label} must be finite, got {value!r}")
  if kind is int:
    if value != int(value):
      raise RequestError(f"{label} must be an integer, got {value!r}")
    return int(value)
  return float(value)


def _max_new_tokens(value: int | None, limits: Limits, label: str) -> int | None:
  if value is None:
    return None
  if value < 1:
    raise RequestError(f"{label} must be >= 1, got {value}")
  if value > limits.max_new_tokens:
    raise RequestError(f"{label}={value} exceeds this server's limit of {limits.max_new_tokens} "
                       "new tokens per request (--max_new_tokens)")
  return value


def _sampling(max_new_tokens: int, temperature: float, top_p: float, top_k: int,
              stop_ids: Sequence[int], seed: int, vocab_size: int | None) -> SamplingParams:
  if top_k > (vocab_size or 2**31 - 1):
    top_k = 0  # keeping more tokens than the vocabulary holds is no filter at all
  if abs(seed) >= _MAX_SEED:
    raise RequestError(f"seed must be below 2**63 in magnitude, got {seed}")
  try:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                          top_k=top_k, stop_token_ids=tuple(stop_ids), seed=seed)
  except ValueError as e:
    raise RequestError(str(e)) from e


def check_token_ids(ids: Any, label: str, vocab_size: int | None, allow_empty: bool = False
                    ) -> list[int]:
  """ids as a list of ints in [0, vocab_size); 400 naming `label` otherwise."""
  if not isinstance(ids, list) or (not ids and not allow_empty):
    raise RequestError(f"{label} must be a {'' if allow_empty else 'non-empty '}list of token "
                       f"ids, got {type(ids).__name__}")
  for i, t in enumerate(ids):
    if isinstance(t, bool) or not isinstance(t, int):
      raise RequestError(f"{label}[{i}] must be an int token id, got {t!r}"[:300])
    if t < 0 or (vocab_size is not None and t >= vocab_size):
      raise RequestError(f"{label}[{i}] = {t} is outside the vocabulary [0, {vocab_size})")
  return ids


def sglang_sampling(params: Any, limits: Limits, vocab_size: int | None) -> SamplingParams:
  """SamplingParams from SGLang `sampling_params` (top_k -1 means disabled, as in SGLang)."""
  params = {} if params is None else params
  if not isinstance(params, dict):
    raise RequestError(f"sampling_params must be an object, got {type(params).__name__}")
  unknown = sorted(set(params) - _SGLANG_KEYS)
  if unknown:
    raise RequestError(f"unsupported sampling_params {unknown}; this server understands "
                       f"{sorted(_SGLANG_KEYS)}")
  stop = params.get("stop_token_ids")
  stop = check_token_ids([] if stop is None else stop, "sampling_params.stop_token_ids",
                         vocab_size, allow_empty=True)
  if len(stop) > _MAX_STOP_IDS:
    raise RequestError(f"sampling_params.stop_token_ids has {len(stop)} ids; at most "
                       f"{_MAX_STOP_IDS}")
  top_k = number(params, "top_k", 0, int, "sampling_params.top_k")
  max_new = _max_new_tokens(number(params, "max_new_tokens", None, int,
                                   "sampling_params.max_new_tokens"),
                            limits, "sampling_params.max_new_tokens")
  if max_new is None:  # SGLang's default, within this server's cap
    max_new = min(128, limits.max_new_tokens)
  return _sampling(max_new, number(params, "temperature", 1.0, label="sampling_params.temperature"),
                   number(params, "top_p", 1.0, label="sampling_params.top_p"),
                   0 if top_k == -1 else top_k, stop,
                   number(params, "sampling_seed", 0, int, "sampling_params.sampling_seed"),
                   vocab_size)


def check_prompt(prompt: list[int], max_new_tokens: int, limits: Limits, context_len: int | None,
                 label: str = "prompt") -> None:
  """400 when prompt + max_new_tokens does not fit the context (both numbers named)."""
  if context_len is None:
    return
  if len(prompt) >= context_len:
    raise RequestError(f"{label} has {len(prompt)} tokens; the model's context is {context_len} "
                       "tokens (--context_len), prompt and completion included")
  if len(prompt) + max_new_tokens > context_len:
    raise RequestError(f"{label} has {len(prompt)} tokens and asks for {max_new_tokens} new "
                       f"tokens: {len(prompt) + max_new_tokens} exceeds the model's context of "
                       f"{context_len} tokens (--context_len)")


def generate_prompts(body: dict, limits: Limits, vocab_size: int | None
                     ) -> tuple[list[list[int]] | list[str], bool, bool]:
  """(prompts, batched, is_text) from /generate's input_ids or text (texts are encoded later)."""
  ids = body.get("input_ids")
  if ids is not None:
    if not isinstance(ids, list) or not ids:
      raise RequestError("input_ids must be a non-empty list of ints, or a list of such lists")
    batched = isinstance(ids[0], list)
    prompts = ids if batched else [ids]
    if len(prompts) > limits.max_prompts:
      raise RequestError(f"{len(prompts)} prompts in one request; at most {limits.max_prompts} "
                         "(--max_prompts)")
    for i, p in enumerate(prompts):
      check_token_ids(p, f"input_ids[{i}]" if batched else "input_ids", vocab_size)
    return prompts, batched, False
  texts = body.get("text")
  if texts is not None:
    batched = isinstance(texts, list)
    texts = texts if batched else [texts]
    if not texts or not all(isinstance(t, str) and t for t in texts):
      raise RequestError("text must be a non-empty string or a non-empty list of them")
    if len(texts) > limits.max_prompts:
      raise RequestError(f"{len(texts)} prompts in one request; at most {limits.max_prompts} "
                         "(--max_prompts)")
    return texts, batched, True
  raise RequestError("/generate needs input_ids or text")


# -- chat completions -----------------------------------------------------------------------------

def chat_messages(messages: Any) -> list[dict]:
  """OpenAI messages -> our chat messages (text content; tool-call arguments as dicts)."""
  if not isinstance(messages, list) or not messages:
    raise RequestError("messages must be a non-empty list")
  out = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
      raise RequestError(f"messages[{i}] needs a role of system/user/assistant/tool")
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
      if not all(isinstance(p, dict) and p.get("type") == "text"
                 and isinstance(p.get("text", ""), str) for p in content):
        raise RequestError(f"messages[{i}].content: only text parts are supported")
      message["content"] = "".join(p.get("text", "") for p in content)
    elif content is None:
      message["content"] = ""
    elif not isinstance(content, str):
      raise RequestError(f"messages[{i}].content must be a string, a list of text parts or null")
    for key in ("name", "tool_call_id"):
      if message.get(key) is not None and not isinstance(message[key], str):
        raise RequestError(f"messages[{i}].{key} must be a string")
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
      raise RequestError(f"messages[{i}].tool_calls must be a list")
    calls = []
    for j, call in enumerate(raw_calls):
      fn = call.get("function") if isinstance(call, dict) else None
      if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RequestError(f"messages[{i}].tool_calls[{j}] needs function.name")
      args = fn.get("arguments", {})
      if isinstance(args, str):
        try:
          args = (json.loads(args, parse_constant=_reject_constant) if args.strip() else {})
        except (ValueError, RecursionError) as e:
          raise RequestError(f"messages[{i}].tool_calls[{j}].function.arguments is not JSON: "
                             f"{e}"[:300]) from e
      if not isinstance(args, dict):
        raise RequestError(f"messages[{i}].tool_calls[{j}].function.arguments must be an object")
      calls.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    if calls:
      message["tool_calls"] = calls
    else:
      message.pop("tool_calls", None)
    out.append(message)
  return out


def chat_tools(body: dict) -> list[dict] | None:
  """The request's tools (OpenAI function tools), or None with none or tool_choice 'none'."""
  choice = body.get("tool_choice")
  if choice is not None and choice not in ("auto", "none"):
    raise RequestError("tool_choice must be 'auto' or 'none'")
  tools = body.get("tools")
  if tools is None or choice == "none":
    return None
  if not isinstance(tools, list):
    raise RequestError("tools must be a list of function tools")
  for i, tool in enumerate(tools):
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
      raise RequestError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}")
    if tool.get("type", "function") != "function":
      raise RequestError(f"tools[{i}].type must be 'function'")
    if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
      raise RequestError(f"tools[{i}].function.parameters must be an object")
  return tools or None


def chat_sampling(body: dict, stop_ids: Sequence[int], limits: Limits, vocab_size: int | None
                  ) -> tuple[SamplingParams, bool]:
  """(SamplingParams, max_tokens_given) from an OpenAI chat request; unsupported features are
  refused. Without max_tokens the default is used (and may be clipped to the context later)."""
  if body.get("n", 1) not in (1, None):
    raise RequestError("only n=1 is supported")
  if body.get("stop") is not None:
    raise RequestError("stop strings are not supported (generation stops at the end of turn)")
  if not isinstance(body.get("stream", False), (bool, type(None))):
    raise RequestError("stream must be true or false")
  options = body.get("stream_options")
  if options is not None and not isinstance(options, dict):
    raise RequestError("stream_options must be an object")
  for key in ("frequency_penalty", "presence_penalty"):
    if body.get(key) not in (None, 0, 0.0):
      raise RequestError(f"{key} is not supported")
  key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
  given = _max_new_tokens(number(body, key, None, int), limits, key)
  max_new = given if given is not None else min(limits.default_max_tokens, limits.max_new_tokens)
  return _sampling(max_new, number(body, "temperature", 1.0), number(body, "top_p", 1.0),
                   number(body, "top_k", 0, int), stop_ids, number(body, "seed", 0, int),
                   vocab_size), given is not None


def chat_message(text: str, tool_parser) -> tuple[dict, bool]:
  """(OpenAI assistant message, has_tool_calls) for one generated turn.

  `tool_parser(text) -> (content, [(name, arguments_dict), ...])` finds the tool calls; None
  leaves the text as content. Arguments that are not strict JSON (NaN, Infinity) keep the whole
  turn as text: the client would not be able to parse them.
  """
  calls = []
  content = text
  if tool_parser is not None:
    content, calls = tool_parser(text)
  if not calls:
    return {"role": "assistant", "content": text}, False
  tool_calls = []
  for name, arguments in calls:
    try:
      args = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError):
      return {"role": "assistant", "content": text}, False
    tool_calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                       "function": {"name": name, "arguments": args}})
  return {"role": "assistant", "content": content or None, "tool_calls": tool_calls}, True

