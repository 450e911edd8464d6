"""Serve a JAX policy over HTTP: OpenAI chat completions + SGLang's native API.

    python -m launch.serve --checkpoint=/ckpt/policy_step_000100 --tokenizer=data/tokenizer
    python -m launch.serve --checkpoint=DIR --host=0.0.0.0 --port=30000   # reachable from others

Endpoints:
  POST /v1/chat/completions   OpenAI-compatible (messages + tools in; content / tool_calls out).
  POST /generate              SGLang-native (input_ids or text; output_ids + meta_info).
  GET  /health                200 once the model is loaded.
  POST /update_weights_from_disk {"model_path": DIR}  reloads weights (models.from_pretrained).
  GET  /get_model_info        model path and weight version.
  GET  /v1/models             the served model name.

Requests are queued and batched: a worker thread takes whatever is pending (up to
--max_batch_size, after waiting --batch_wait_ms for more) and generates every group of
requests with the same sampling settings in one JaxEngine call; each request keeps its own seed,
so its samples do not depend on what it was batched with. Binds 127.0.0.1 unless --host says
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Sequence

from absl import app as absl_app
from absl import flags
import fastapi
from fastapi import responses
import uvicorn

from synthagent_jax import models
from synthagent_jax.inference import sampler
from synthagent_jax.inference.batcher import Batcher
from synthagent_jax.inference.engine import Completion, Engine, SamplingParams
from synthagent_jax.models import chat_format
from synthagent_jax.rollout import turns

_SGLANG_KEYS = {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids",
                "sampling_seed"}


class RequestError(ValueError):
  """A bad request; answered with HTTP 400 and this message."""


# -- request parsing ------------------------------------------------------------------------------

def _number(body: dict, key: str, default, kind=float):
  value = body.get(key, default)
  if value is None:
    return default
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RequestError(f"{key} must be a number, got {value!r}")
  if kind is int and value != int(value):
    raise RequestError(f"{key} must be an integer, got {value!r}")
  return kind(value)


def sglang_sampling(params: Any) -> SamplingParams:
  """SamplingParams from SGLang `sampling_params` (top_k -1 means disabled, as in SGLang)."""
  params = {} if params is None else params
  if not isinstance(params, dict):
    raise RequestError(f"sampling_params must be an object, got {type(params).__name__}")
  unknown = sorted(set(params) - _SGLANG_KEYS)
  if unknown:
    raise RequestError(f"unsupported sampling_params {unknown}; this server understands "
                       f"{sorted(_SGLANG_KEYS)}")
  stop = params.get("stop_token_ids") or []
  if not isinstance(stop, list) or not all(isinstance(t, int) for t in stop):
    raise RequestError(f"stop_token_ids must be a list of ints, got {stop!r}")
  top_k = _number(params, "top_k", 0, int)
  try:
    return SamplingParams(max_new_tokens=_number(params, "max_new_tokens", 128, int),
                          temperature=_number(params, "temperature", 1.0),
                          top_p=_number(params, "top_p", 1.0),
                          top_k=0 if top_k == -1 else top_k, stop_token_ids=tuple(stop),
                          seed=_number(params, "sampling_seed", 0, int))
  except ValueError as e:
    raise RequestError(str(e)) from e


def _prompt_list(body: dict, tokenizer) -> tuple[list[list[int]], bool]:
  """(prompts, batched) from /generate's input_ids or text."""
  if "input_ids" in body and body["input_ids"] is not None:
    ids = body["input_ids"]
    batched = bool(ids) and isinstance(ids[0], list)
    prompts = ids if batched else [ids]
    for p in prompts:
      if not isinstance(p, list) or not p or not all(
          isinstance(t, int) and not isinstance(t, bool) for t in p):
        raise RequestError("input_ids must be a non-empty list of ints, or a list of such lists")
    return prompts, batched
  if "text" in body and body["text"] is not None:
    if tokenizer is None:
      raise RequestError("text prompts need a tokenizer; start the server with --tokenizer or "
                         "send input_ids")
    texts = body["text"]
    batched = isinstance(texts, list)
    texts = texts if batched else [texts]
    if not all(isinstance(t, str) and t for t in texts):
      raise RequestError("text must be a non-empty string or a list of them")
    return [chat_format.encode(tokenizer, t) for t in texts], batched
  raise RequestError("/generate needs input_ids or text")


def sglang_response(completion: Completion, prompt_len: int, return_logprob: bool, text: str,
                    weight_version: int) -> dict:
  """A /generate response in SGLang's format."""
  if completion.finish_reason == "stop":
    finish = {"type": "stop", "matched": completion.token_ids[-1]}
  else:
    finish = {"type": "length", "length": len(completion.token_ids)}
  meta = {"id": uuid.uuid4().hex, "finish_reason": finish, "prompt_tokens": prompt_len,
          "completion_tokens": len(completion.token_ids), "cached_tokens": 0,
          "weight_version": str(weight_version)}
  if return_logprob:
    meta["output_token_logprobs"] = [[lp, t, None] for lp, t in
                                     zip(completion.logprobs, completion.token_ids)]
  return {"text": text, "output_ids": completion.token_ids, "meta_info": meta}


def _normalize_messages(messages: Any) -> list[dict]:
  """OpenAI messages -> our chat messages (tool-call arguments as dicts)."""
  if not isinstance(messages, list) or not messages:
    raise RequestError("messages must be a non-empty list")
  out = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or message.get("role") not in ("system", "user",
                                                                     "assistant", "tool"):
      raise RequestError(f"messages[{i}] needs a role of system/user/assistant/tool")
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
      if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        raise RequestError(f"messages[{i}].content: only text parts are supported")
      message["content"] = "".join(p.get("text", "") for p in content)
    elif content is None:
      message["content"] = ""
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
      fn = call.get("function") if isinstance(call, dict) else None
      if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RequestError(f"messages[{i}].tool_calls[{j}] needs function.name")
      args = fn.get("arguments", {})
      if isinstance(args, str):
        try:
          args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
          raise RequestError(f"messages[{i}].tool_calls[{j}].function.arguments is not JSON: "
                             f"{e}") from e
      if not isinstance(args, dict):
        raise RequestError(f"messages[{i}].tool_calls[{j}].function.arguments must be an object")
      calls.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    if calls:
      message["tool_calls"] = calls
    else:
      message.pop("tool_calls", None)
    out.append(message)
  return out


def chat_sampling(body: dict, stop_ids: Sequence[int]) -> SamplingParams:
  """SamplingParams from an OpenAI chat request; unsupported features are refused."""
  if body.get("stream"):
    raise RequestError("stream=true is not supported")
  if body.get("n", 1) not in (1, None):
    raise RequestError("only n=1 is supported")
  if body.get("stop") is not None:
    raise RequestError("stop strings are not supported (generation stops at the end of turn)")
  for key in ("frequency_penalty", "presence_penalty"):
    if body.get(key) not in (None, 0, 0.0):
      raise RequestError(f"{key} is not supported")
  max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
  try:
    return SamplingParams(max_new_tokens=_number({"m": max_tokens}, "m", 256, int),
                          temperature=_number(body, "temperature", 1.0),
                          top_p=_number(body, "top_p", 1.0),
                          top_k=_number(body, "top_k", 0, int), stop_token_ids=tuple(stop_ids),
                          seed=_number(body, "seed", 0, int))
  except ValueError as e:
    raise RequestError(str(e)) from e


def chat_message(text: str) -> tuple[dict, bool]:
  """(OpenAI assistant message, has_tool_calls) for one generated turn (Qwen/Hermes format)."""
  turn = turns.parse_turn(text)
  calls = turn.calls if turn.kind == "tool_calls" else []
  if not calls:
    return {"role": "assistant", "content": text}, False
  tool_calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": c.name,
                              "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in calls]
  return {"role": "assistant", "content": turn.content or None, "tool_calls": tool_calls}, True


# -- the app --------------------------------------------------------------------------------------

@dataclasses.dataclass
class ServerState:
  engine: Engine
  tokenizer: Any
  batcher: Batcher
  model_name: str
  model_path: str | None
  dtype: str
  weight_version: int = 0
  failures_left: int = 0


def create_app(engine: Engine, tokenizer: Any = None, *, model_name: str = "synthagent_jax",
               model_path: str | None = None, dtype: str = "float32", max_batch_size: int = 64,
               batch_wait_s: float = 0.005, fail_first_requests: int = 0) -> fastapi.FastAPI:
  """The FastAPI app around an Engine.

  Args:
    engine: what generates (a JaxEngine for weight updates; any Engine otherwise).
    tokenizer: HF tokenizer for chat completions and text prompts (None: /generate with
      input_ids only).
    model_name: reported as "model" in OpenAI responses.
    model_path: checkpoint the weights came from (reported by /get_model_info).
    dtype: compute dtype used when /update_weights_from_disk loads a checkpoint.
    max_batch_size: prompts per engine call.
    batch_wait_s: how long the batcher waits for more requests after the first.
    fail_first_requests: TESTING ONLY: answer this many generation requests with HTTP 500
      before serving normally (exercises client retries).
  """
  batcher = Batcher(engine, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
  state = ServerState(engine=engine, tokenizer=tokenizer, batcher=batcher, model_name=model_name,
                      model_path=model_path, dtype=dtype, failures_left=fail_first_requests)
  @contextlib.asynccontextmanager
  async def lifespan(_):
    yield
    batcher.close()

  api = fastapi.FastAPI(title="synthagent_jax policy server", lifespan=lifespan)
  api.state.server = state

  @api.exception_handler(RequestError)
  async def _bad_request(request, exc):  # pylint: disable=unused-argument
    return responses.JSONResponse({"error": {"message": str(exc), "type": "invalid_request"}},
                                  status_code=400)

  async def _json(request: fastapi.Request) -> dict:
    try:
      body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise RequestError(f"request body is not JSON: {e}") from e
    if not isinstance(body, dict):
      raise RequestError("request body must be a JSON object")
    return body

  def _injected_failure():
    if state.failures_left > 0:
      state.failures_left -= 1
      return responses.JSONResponse({"error": {"message": "injected failure (testing)"}},
                                    status_code=500)
    return None

  async def _run(prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
    futures = [asyncio.wrap_future(batcher.submit(p, sampling)) for p in prompts]
    return list(await asyncio.gather(*futures))

  def _decode(ids: list[int]) -> str:
    return "" if tokenizer is None else tokenizer.decode(ids, skip_special_tokens=False)

  @api.get("/health")
  async def health():
    return {"status": "ok"}

  @api.get("/get_model_info")
  async def model_info():
    return {"model_path": state.model_path, "weight_version": str(state.weight_version),
            "is_generation": True}

  @api.get("/v1/models")
  async def list_models():
    return {"object": "list", "data": [{"id": model_name, "object": "model",
                                        "owned_by": "synthagent_jax"}]}

  @api.post("/generate")
  async def generate(request: fastapi.Request):
    failure = _injected_failure()
    if failure is not None:
      return failure
    body = await _json(request)
    prompts, batched = _prompt_list(body, tokenizer)
    sampling = sglang_sampling(body.get("sampling_params"))
    seeds = [sampling.seed + i for i in range(len(prompts))]
    futures = [asyncio.wrap_future(batcher.submit(p, dataclasses.replace(sampling, seed=s)))
               for p, s in zip(prompts, seeds)]
    completions = list(await asyncio.gather(*futures))
    out = [sglang_response(c, len(p), bool(body.get("return_logprob", False)),
                           _decode(c.token_ids), state.weight_version)
           for c, p in zip(completions, prompts)]
    return out if batched else out[0]

  @api.post("/v1/chat/completions")
  async def chat_completions(request: fastapi.Request):
    failure = _injected_failure()
    if failure is not None:
      return failure
    if tokenizer is None:
      raise RequestError("chat completions need a tokenizer; start the server with --tokenizer")
    body = await _json(request)
    messages = _normalize_messages(body.get("messages"))
    tools = body.get("tools") or None
    if body.get("tool_choice") not in (None, "auto", "none"):
      raise RequestError("tool_choice must be 'auto' or 'none'")
    if body.get("tool_choice") == "none":
      tools = None
    end_ids = [chat_format.token_id(tokenizer, chat_format.IM_END),
               chat_format.token_id(tokenizer, chat_format.ENDOFTEXT)]
    sampling = chat_sampling(body, end_ids)
    try:
      prompt = chat_format.render_prompt_ids(tokenizer, messages, tools=tools)
    except ValueError as e:
      raise RequestError(f"cannot render the conversation: {e}") from e
    (completion,) = await _run([prompt], sampling)
    ids = completion.token_ids
    if completion.finish_reason == "stop":
      ids = ids[:-1]  # the end-of-turn token is not part of the message
    message, has_calls = chat_message(_decode(ids))
    reason = "tool_calls" if has_calls else completion.finish_reason
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": reason,
                         "logprobs": None}],
            "usage": {"prompt_tokens": len(prompt),
                      "completion_tokens": len(completion.token_ids),
                      "total_tokens": len(prompt) + len(completion.token_ids)}}

  @api.post("/update_weights_from_disk")
  async def update_weights(request: fastapi.Request):
    body = await _json(request)
    path = body.get("model_path")
    if not isinstance(path, str) or not path:
      raise RequestError("update_weights_from_disk needs model_path")
    if not isinstance(engine, sampler.JaxEngine):
      raise RequestError("this server's engine cannot load weights")
    try:
      model = await asyncio.to_thread(models.from_pretrained, path, dtype=state.dtype)
    except (OSError, ValueError) as e:
      return {"success": False, "message": f"failed to load {path}: {e}",
              "num_paused_requests": 0}
    with batcher.lock:  # never swap weights in the middle of a batch
      engine.update_params(model)
      state.weight_version += 1
      state.model_path = path
    return {"success": True, "message": f"loaded {path}", "num_paused_requests": 0,
            "weight_version": str(state.weight_version)}

  return api


def build_app(checkpoint: str, tokenizer_dir: str | None = None, dtype: str = "float32",
              **kwargs: Any) -> fastapi.FastAPI:
  """Loads `checkpoint` (HF dir) and its tokenizer, and wraps them in `create_app`."""
  model = models.from_pretrained(checkpoint, dtype=dtype)
  tokenizer = None
  if tokenizer_dir is not None:
    import transformers  # pylint: disable=g-import-not-at-top
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  return create_app(sampler.JaxEngine(model), tokenizer, model_path=checkpoint, dtype=dtype,
                    **kwargs)


class BackgroundServer:
  """uvicorn running an app in a thread of this process (tests, notebooks)."""

  def __init__(self, api: fastapi.FastAPI, host: str = "127.0.0.1", port: int | None = None):
    self.host = host
    self.port = port or free_port(host)
    config = uvicorn.Config(api, host=host, port=self.port, log_level="warning")
    self.server = uvicorn.Server(config)
    self.thread = threading.Thread(target=self.server.run, daemon=True)

  @property
  def url(self) -> str:
    return f"http://{self.host}:{self.port}"

  def __enter__(self) -> BackgroundServer:
    self.thread.start()
    deadline = time.monotonic() + 60
    while not self.server.started:
      if not self.thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError(f"server on {self.url} did not start")
      time.sleep(0.02)
    return self

  def __exit__(self, *exc) -> None:
    self.server.should_exit = True
    self.thread.join(timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]





def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _CHECKPOINT.value:
    raise absl_app.UsageError("--checkpoint=DIR is required (a Hugging Face model directory)")
  tokenizer_dir = _TOKENIZER.value
  if tokenizer_dir is None and os.path.isfile(os.path.join(_CHECKPOINT.value,
                                                           "tokenizer_config.json")):
    tokenizer_dir = _CHECKPOINT.value
  if tokenizer_dir is None:
    logging.warning("no tokenizer (--tokenizer unset and none in the checkpoint): only /generate "
                    "with input_ids is available")
  api = build_app(_CHECKPOINT.value, tokenizer_dir, dtype=_DTYPE.value,
                  max_batch_size=_MAX_BATCH.value, batch_wait_s=_BATCH_WAIT_MS.value / 1000)
  logging.info("serving %s on http://%s:%d", _CHECKPOINT.value, _HOST.value, _PORT.value)
  uvicorn.run(api, host=_HOST.value, port=_PORT.value, log_level="info")


def _define_flags():
  """Flags of this entry point, defined only when it runs as __main__, so tests (and other
  launch modules) can import it without a second --config."""
  global _CHECKPOINT, _TOKENIZER, _HOST, _PORT, _DTYPE, _MAX_BATCH, _BATCH_WAIT_MS  # pylint: disable=global-statement
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "HF checkpoint directory to serve.")
  _TOKENIZER = flags.DEFINE_string("tokenizer", None,
                                   "Tokenizer directory (default: the checkpoint's own).")
  _HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (0.0.0.0 exposes it).")
  _PORT = flags.DEFINE_integer("port", 30000, "TCP port.")
  _DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
  _MAX_BATCH = flags.DEFINE_integer("max_batch_size", 64, "Prompts per engine call at most.")
  _BATCH_WAIT_MS = flags.DEFINE_float("batch_wait_ms", 5.0,
                                      "Wait this long for more requests before generating.")


if __name__ == "__main__":
  _define_flags()
  absl_app.run(main)
