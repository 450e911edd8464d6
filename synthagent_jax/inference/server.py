"""Serve an Engine over HTTP: OpenAI chat completions + SGLang's native API (`launch.serve`).

Endpoints:
  POST /v1/chat/completions   OpenAI-compatible (messages + tools in; content / tool_calls out;
                              `stream: true` answers server-sent events in the chunk format).
  POST /generate              SGLang-native (input_ids or text; output_ids + meta_info).
  GET  /health                200 while the engine serves; 503 when its worker is gone or one
                              engine call has run longer than the watchdog.
  POST /update_weights_from_disk {"model_path": DIR}  reloads weights (needs an API key).
  GET  /get_model_info        model path, weight version and context length.
  GET  /v1/models             the served model name.

Safety, in the order a request meets it:
  * `Origin` headers: a browser page can POST to a local server ("simple" cross-origin
    requests); any request carrying an Origin not in `ServerConfig.allowed_origins` gets 403.
  * API key: with `api_key` set, every endpoint but /health needs `Authorization: Bearer KEY`
    (401), as SGLang's own `--api-key`. Without a key, weight updates are refused (403).
  * Bodies: POSTs must be `application/json` (415), at most `Limits.max_body_bytes` (413), and
    every field is checked before batching (`server_requests`, 400 naming the field and limit).
  * Work: prompts must fit the context with their max_new_tokens, which is capped; at most
    `Limits.max_pending` prompts wait (503 beyond); a request whose client disconnects before
    its batch starts is never generated; SIGTERM fails what is queued and exits.
  * Weight updates load only directories under `model_root` (default: the served checkpoint's
    parent) whose vocabulary matches the served one; a bad checkpoint is `success: false`.

Streaming: the JAX engine generates a whole turn in one compiled call, so a stream sends the
role chunk at once, then the content and tool-call deltas when the turn is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Any, Callable

import fastapi
from fastapi import responses

from synthagent_jax import models
from synthagent_jax.inference import sampler
from synthagent_jax.inference import server_http as http
from synthagent_jax.inference import server_requests as req
from synthagent_jax.inference.batcher import Batcher, BatcherClosed, BatcherFull
from synthagent_jax.inference.engine import Completion, Engine, SamplingParams
from synthagent_jax.models import chat_format

RequestError = req.RequestError
Limits = req.Limits
# text -> (content, [(tool name, arguments dict), ...]); launch.serve passes rollout.turns'.
ToolParser = Callable[[str], tuple[str | None, list[tuple[str, dict]]]]


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """How the server behaves (each field is a flag of `launch.serve`).

  Attributes:
    model_name: reported as "model" in OpenAI responses.
    api_key: required as `Authorization: Bearer KEY` on every endpoint but /health when set;
      weight updates are refused without one.
    model_root: weight updates load only directories under it (None: the served checkpoint's
      parent directory; no checkpoint either: updates refused).
    allowed_origins: browser Origins allowed to call the server (exact "scheme://host:port").
    dtype: compute dtype used when /update_weights_from_disk loads a checkpoint.
    max_batch_size: prompts per engine call.
    batch_wait_s: how long the batcher waits for more requests after the first.
    limits: per-request caps (see `server_requests.Limits`).
  """

  model_name: str = "synthagent_jax"
  api_key: str | None = None
  model_root: str | None = None
  allowed_origins: tuple[str, ...] = ()
  dtype: str = "float32"
  max_batch_size: int = 64
  batch_wait_s: float = 0.005
  limits: Limits = Limits()

  def __post_init__(self):
    if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
      raise ValueError("ServerConfig.api_key must be a non-empty string or None")
    if self.max_batch_size < 1 or self.batch_wait_s < 0:
      raise ValueError(f"ServerConfig needs max_batch_size >= 1 and batch_wait_s >= 0, got "
                       f"{self.max_batch_size}, {self.batch_wait_s}")
    object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))


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


def _model_facts(engine: Engine) -> tuple[int | None, int | None]:
  """(vocab_size, max_position_embeddings) of a JaxEngine's model; (None, None) otherwise."""
  if not isinstance(engine, sampler.JaxEngine):
    return None, None
  from flax import nnx  # pylint: disable=g-import-not-at-top
  cfg = getattr(nnx.merge(*engine.split()), "config", None)
  return getattr(cfg, "vocab_size", None), getattr(cfg, "max_position_embeddings", None)


def _inside(path: str, root: str) -> bool:
  path, root = os.path.realpath(path), os.path.realpath(root)
  return os.path.commonpath([path, root]) == root


def create_app(engine: Engine, tokenizer: Any = None, *, config: ServerConfig = ServerConfig(),
               model_path: str | None = None, vocab_size: int | None = None,
               tool_parser: ToolParser | None = None) -> fastapi.FastAPI:
  """The FastAPI app around an Engine.

  Args:
    engine: what generates; /update_weights_from_disk hands it the loaded model
      (`Engine.update_weights`).
    tokenizer: HF tokenizer for chat completions and text prompts (None: /generate with
      input_ids only).
    config: keys, limits and batching (see ServerConfig).
    model_path: checkpoint the weights came from (reported by /get_model_info; its parent is the
      default model_root).
    vocab_size: token ids must be below it (default: a JaxEngine's model's); None skips the check.
    tool_parser: finds tool calls in a generated turn (None: turns are returned as text).
  """
  limits = config.limits
  model_vocab, model_context = _model_facts(engine)
  vocab_size = vocab_size or model_vocab
  context_len = limits.context_len or model_context
  model_root = config.model_root or (os.path.dirname(os.path.abspath(model_path))
                                     if model_path else None)
  batcher = Batcher(engine, max_batch_size=config.max_batch_size,
                    batch_wait_s=config.batch_wait_s, max_pending=limits.max_pending)
  state = {"weight_version": 0, "model_path": model_path}
  end_ids = ([chat_format.token_id(tokenizer, chat_format.IM_END),
              chat_format.token_id(tokenizer, chat_format.ENDOFTEXT)] if tokenizer else [])

  @contextlib.asynccontextmanager
  async def lifespan(_):
    yield
    batcher.close(timeout_s=2.0)  # fails what is queued; a running engine call is left behind

  api = fastapi.FastAPI(title="synthagent_jax policy server", lifespan=lifespan)
  api.add_middleware(http.Guard, api_key=config.api_key, allowed_origins=config.allowed_origins)
  api.state.batcher = batcher

  @api.exception_handler(RequestError)
  async def _bad_request(request, exc):  # pylint: disable=unused-argument
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return responses.JSONResponse({"error": {"message": str(exc), "type": "invalid_request"}},
                                  status_code=exc.status, headers=headers)

  async def _complete(request: fastapi.Request, jobs: list[tuple[list[int], SamplingParams]]
                      ) -> list[Completion]:
    """Generates through the batcher; abandons (never generates) what a gone client asked."""
    futures = []
    try:
      for prompt, sampling in jobs:
        futures.append(batcher.submit(prompt, sampling))
    except (BatcherFull, BatcherClosed) as e:
      for f in futures:  # all of a request's prompts or none of them
        f.cancel()
      raise RequestError(f"server busy or stopping: {e}; retry later", 503) from e
    gathered = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    try:
      while True:
        done, _ = await asyncio.wait({gathered}, timeout=0.1)
        if done:
          return gathered.result()
        if await request.is_disconnected():
          raise RequestError("client disconnected", 499)
    except BatcherClosed as e:
      raise RequestError(str(e), 503) from e
    except (RequestError, asyncio.CancelledError):
      raise
    except Exception as e:  # pylint: disable=broad-except  # the engine failed this batch
      raise RequestError(f"generation failed: {type(e).__name__}: {e}", 500) from e
    finally:
      for f in futures:
        f.cancel()  # no-op for finished ones; a queued one is then dropped by the batcher
      if not gathered.done():
        gathered.cancel()
      gathered.add_done_callback(lambda g: g.cancelled() or g.exception())

  def _decode(ids: list[int]) -> str:
    return "" if tokenizer is None else tokenizer.decode(ids, skip_special_tokens=False)

  @api.get("/health")
  async def health():
    problem = batcher.problem(limits.watchdog_s)
    if problem is not None:
      return responses.JSONResponse({"status": "unhealthy", "reason": problem}, status_code=503)
    return {"status": "ok"}

  @api.get("/get_model_info")
  async def model_info():
    return {"model_path": state["model_path"], "weight_version": str(state["weight_version"]),
            "is_generation": True, "context_length": context_len}

  @api.get("/v1/models")
  async def list_models():
    return {"object": "list", "data": [{"id": config.model_name, "object": "model",
                                        "owned_by": "synthagent_jax"}]}

  @api.post("/generate")
  async def generate(request: fastapi.Request):
    body = await http.read_json(request, limits)
    prompts, batched, is_text = req.generate_prompts(body, limits, vocab_size)
    sampling = req.sglang_sampling(body.get("sampling_params"), limits, vocab_size)
    if is_text:
      if tokenizer is None:
        raise RequestError("text prompts need a tokenizer; start the server with --tokenizer or "
                           "send input_ids")
      prompts = await asyncio.to_thread(lambda: [chat_format.encode(tokenizer, t)
                                                 for t in prompts])
    for i, p in enumerate(prompts):
      req.check_prompt(p, sampling.max_new_tokens, limits, context_len,
                       f"prompt {i}" if batched else "the prompt")
    jobs = [(p, dataclasses.replace(sampling, seed=sampling.seed + i))
            for i, p in enumerate(prompts)]
    completions = await _complete(request, jobs)
    out = [sglang_response(c, len(p), bool(body.get("return_logprob", False)),
                           _decode(c.token_ids), state["weight_version"])
           for c, p in zip(completions, prompts)]
    return out if batched else out[0]

  def _chat_result(completion: Completion) -> tuple[dict, str]:
    ids = completion.token_ids
    if completion.finish_reason == "stop":
      ids = ids[:-1]  # the end-of-turn token is not part of the message
    message, has_calls = req.chat_message(_decode(ids), tool_parser)
    return message, "tool_calls" if has_calls else completion.finish_reason

  @api.post("/v1/chat/completions")
  async def chat_completions(request: fastapi.Request):
    body = await http.read_json(request, limits)
    if tokenizer is None:
      raise RequestError("chat completions need a tokenizer; start the server with --tokenizer")
    messages = req.chat_messages(body.get("messages"))
    tools = req.chat_tools(body)
    sampling, max_given = req.chat_sampling(body, end_ids, limits, vocab_size)
    try:
      prompt = await asyncio.to_thread(chat_format.render_prompt_ids, tokenizer, messages,
                                       tools=tools)
    except Exception as e:  # pylint: disable=broad-except  # template errors come from the request
      raise RequestError(f"cannot render the conversation: {type(e).__name__}: {e}") from e
    if not max_given and context_len is not None and len(prompt) < context_len:
      sampling = dataclasses.replace(
          sampling, max_new_tokens=min(sampling.max_new_tokens, context_len - len(prompt)))
    req.check_prompt(prompt, sampling.max_new_tokens, limits, context_len, "the conversation")
    if body.get("stream"):
      options = body.get("stream_options") or {}
      return responses.StreamingResponse(
          _stream(request, prompt, sampling, bool(options.get("include_usage"))),
          media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    (completion,) = await _complete(request, [(prompt, sampling)])
    message, reason = await asyncio.to_thread(_chat_result, completion)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": config.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": reason,
                         "logprobs": None}],
            "usage": _usage(len(prompt), len(completion.token_ids))}

  async def _stream(request, prompt, sampling, include_usage):
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with [DONE]."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": config.model_name}

    def event(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
      chunk = dict(head, choices=[] if delta is None else [
          {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
      if include_usage:
        chunk["usage"] = usage
      return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
      (completion,) = await _complete(request, [(prompt, sampling)])
    except RequestError as e:
      yield f"data: {json.dumps({'error': {'message': str(e), 'code': e.status}})}\n\n"
      return
    message, reason = await asyncio.to_thread(_chat_result, completion)
    if message.get("content"):
      yield event({"content": message["content"]})
    for i, call in enumerate(message.get("tool_calls") or []):
      fn = call["function"]
      yield event({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                   "function": {"name": fn["name"], "arguments": ""}}]})
      yield event({"tool_calls": [{"index": i, "function": {"arguments": fn["arguments"]}}]})
    yield event({}, reason)
    if include_usage:
      yield event(None, usage=_usage(len(prompt), len(completion.token_ids)))
    yield "data: [DONE]\n\n"

  @api.post("/update_weights_from_disk")
  async def update_weights(request: fastapi.Request):
    if config.api_key is None:
      raise RequestError("weight updates need an API key: start the server with --api_key (or "
                         "SYNTHAGENT_API_KEY)", 403)
    body = await http.read_json(request, limits)
    path = body.get("model_path")
    if not isinstance(path, str) or not path:
      raise RequestError("update_weights_from_disk needs model_path")
    if model_root is None:
      raise RequestError("weight updates are disabled: no --model_root and no served checkpoint",
                         403)
    if not _inside(path, model_root):
      raise RequestError(f"model_path {path!r} is outside the model root {model_root!r} "
                         "(--model_root)", 403)
    try:
      model = await asyncio.to_thread(models.from_pretrained, path, dtype=config.dtype)
    except Exception as e:  # pylint: disable=broad-except  # any bad checkpoint: success false
      logging.warning("update_weights_from_disk(%s) failed: %s: %s", path, type(e).__name__, e)
      return {"success": False, "message": f"failed to load {path}: {type(e).__name__}: {e}",
              "num_paused_requests": 0}
    new_vocab = model.config.vocab_size
    problems = []
    if vocab_size is not None and new_vocab != vocab_size:
      problems.append(f"its vocab_size {new_vocab} differs from the served model's {vocab_size}")
    if tokenizer is not None and new_vocab < len(tokenizer):
      problems.append(f"its vocab_size {new_vocab} is smaller than the tokenizer's "
                      f"{len(tokenizer)} tokens")
    if problems:
      return {"success": False, "message": f"refused {path}: " + "; ".join(problems),
              "num_paused_requests": 0}
    with batcher.lock:  # never swap weights in the middle of a batch
      engine.update_weights(model, state["weight_version"] + 1)
      state["weight_version"] += 1
      state["model_path"] = path
    return {"success": True, "message": f"loaded {path}", "num_paused_requests": 0,
            "weight_version": str(state["weight_version"])}

  return api


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens}


def build_app(checkpoint: str, tokenizer_dir: str | None = None,
              config: ServerConfig = ServerConfig(), tool_parser: ToolParser | None = None
              ) -> fastapi.FastAPI:
  """Loads `checkpoint` (HF dir) and its tokenizer, and wraps them in `create_app`.

  Raises:
    ValueError: the tokenizer has more tokens than the model's vocabulary.
  """
  model = models.from_pretrained(checkpoint, dtype=config.dtype)
  tokenizer = None
  if tokenizer_dir is not None:
    import transformers  # pylint: disable=g-import-not-at-top
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) > model.config.vocab_size:
      raise ValueError(f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens, more than "
                       f"the model's vocab_size {model.config.vocab_size}")
  return create_app(sampler.JaxEngine(model), tokenizer, config=config, model_path=checkpoint,
                    vocab_size=model.config.vocab_size, tool_parser=tool_parser)


# Re-exported: tests and notebooks start the app with these.
BackgroundServer = http.BackgroundServer
free_port = http.free_port
