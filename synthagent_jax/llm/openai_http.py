"""OpenAI-compatible chat backend (vLLM, SGLang, OpenAI, ...) through the `openai` package.

Each conversation is its own request, sent from a bounded thread pool (`max_concurrency`). Failed
requests are retried with exponential backoff when the failure is transient (connection refused or
reset, timeout, HTTP 408/409/429/5xx) and given up at once otherwise (other 4xx). `chat_results`
reports every item (text or error, attempts); `chat` returns texts and raises `LLMBatchError`
(carrying all results, successes included) if any item failed, so nothing is silently lost.
The API key is read from the environment variable named in the config and never logged or shown
in `repr`. It travels in cleartext over `http://`, so a key is sent over plain HTTP only to a
loopback host (127.0.0.0/8, ::1, localhost); any other `http://` endpoint with the key variable
set is refused at construction unless `allow_insecure_key=True` says the network is trusted. Use
`https://` for remote endpoints. Which variable each endpoint reads is its config's
`api_key_env` (configs/base.py: env.llm, reward.judge_llm; configs/synth_teacher.py: teacher).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import ipaddress
import json
import logging
import os
import random
import time
from typing import Sequence
import urllib.parse

import openai

from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import Message

_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclasses.dataclass(frozen=True)
class OpenAIConfig:
  """Attributes:
    base_url: e.g. "http://127.0.0.1:30000/v1".
    model: model name the server expects.
    api_key_env: environment variable holding the key; if it is unset, the placeholder "EMPTY" is
      sent (what local vLLM/SGLang servers accept).
    max_concurrency: requests in flight at once.
    max_retries: retries after the first attempt, for transient failures only.
    timeout_s: per-request timeout (seconds).
    backoff_s: first backoff; doubles each retry (with +-25% jitter), capped at backoff_max_s.
    allow_insecure_key: send the key over plain http:// to a non-loopback host (a trusted
      private network only); off by default.
  """

  base_url: str
  model: str
  api_key_env: str = "OPENAI_API_KEY"
  max_concurrency: int = 8
  max_retries: int = 3
  timeout_s: float = 60.0
  backoff_s: float = 1.0
  backoff_max_s: float = 30.0
  allow_insecure_key: bool = False

  def __post_init__(self):
    if not self.base_url.startswith(("http://", "https://")):
      raise ValueError(f"OpenAIConfig.base_url must start with http:// or https://, "
                       f"got {self.base_url!r}")
    if not self.model:
      raise ValueError("OpenAIConfig.model must be non-empty")
    if self.max_concurrency < 1:
      raise ValueError(f"OpenAIConfig.max_concurrency must be >= 1, got {self.max_concurrency}")
    if self.max_retries < 0:
      raise ValueError(f"OpenAIConfig.max_retries must be >= 0, got {self.max_retries}")
    if self.timeout_s <= 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
      raise ValueError("OpenAIConfig timeout_s must be > 0 and backoff_s, backoff_max_s >= 0")


@dataclasses.dataclass
class ChatResult:
  """One conversation's outcome: `text` on success, else `error` (a one-line description)."""

  text: str | None
  error: str | None
  attempts: int

  @property
  def ok(self) -> bool:
    return self.error is None


class LLMBatchError(RuntimeError):
  """Some conversations of a batch failed after retries. `results` holds every item."""

  def __init__(self, results: list[ChatResult]):
    failed = [(i, r.error) for i, r in enumerate(results) if not r.ok]
    super().__init__(f"{len(failed)} of {len(results)} chat requests failed: "
                     + "; ".join(f"#{i}: {e}" for i, e in failed[:5]))
    self.results = results
    self.failed_indices = [i for i, _ in failed]


def to_openai_messages(conversation: Sequence[Message]) -> list[dict]:
  """Our chat messages -> OpenAI wire format (tool-call arguments as JSON strings, call ids)."""
  out, pending, n = [], [], 0
  for m in conversation:
    m = dict(m)
    if m.get("role") == "assistant" and m.get("tool_calls"):
      calls = []
      for call in m["tool_calls"]:
        fn = dict(call.get("function", {}))
        args = fn.get("arguments", {})
        fn["arguments"] = args if isinstance(args, str) else json.dumps(args)
        call_id = call.get("id") or f"call_{n}"
        n += 1
        pending.append(call_id)
        calls.append({"id": call_id, "type": "function", "function": fn})
      m["tool_calls"] = calls
    elif m.get("role") == "tool":
      m.setdefault("tool_call_id", pending.pop(0) if pending else f"call_{n}")
    out.append(m)
  return out


def _is_retryable(exc: Exception) -> bool:
  if isinstance(exc, openai.APIConnectionError):  # Includes APITimeoutError.
    return True
  if isinstance(exc, openai.APIStatusError):
    return exc.status_code >= 500 or exc.status_code in _RETRYABLE_STATUS
  return False


def _describe(exc: Exception) -> str:
  if isinstance(exc, openai.APIStatusError):
    return f"HTTP {exc.status_code} ({type(exc).__name__})"
  return f"{type(exc).__name__}: {str(exc)[:200]}"


def is_loopback_host(host: str | None) -> bool:
  """127.0.0.0/8, ::1 or the name localhost."""
  if not host:
    return False
  if host.lower() == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_key_transport(config: OpenAIConfig, key_set: bool) -> None:
  """Raises ValueError when a key would go in cleartext to a host that is not this machine."""
  url = urllib.parse.urlsplit(config.base_url)
  if (key_set and url.scheme == "http" and not is_loopback_host(url.hostname)
      and not config.allow_insecure_key):
    raise ValueError(
        f"refusing to send the API key from ${config.api_key_env} over plain http:// to "
        f"{url.hostname!r} (not a loopback host): use an https:// base_url, unset "
        f"{config.api_key_env} (for a keyless server), or pass allow_insecure_key=True on a "
        "trusted network")


class OpenAIChatLLM:
  """An `LLM` over an OpenAI-compatible /chat/completions endpoint."""

  def __init__(self, config: OpenAIConfig, logger: logging.Logger | None = None):
    self.config = config
    self._log = logger or logging.getLogger(__name__)
    key = os.environ.get(config.api_key_env)
    check_key_transport(config, bool(key))
    self._client = openai.OpenAI(base_url=config.base_url, api_key=key or "EMPTY",
                                 timeout=config.timeout_s, max_retries=0)

  def __repr__(self) -> str:
    c = self.config
    return f"OpenAIChatLLM(base_url={c.base_url!r}, model={c.model!r}, key_env={c.api_key_env!r})"

  def chat(self, conversations: Sequence[Sequence[Message]],
           sampling: SamplingParams | None = None) -> list[str]:
    results = self.chat_results(conversations, sampling)
    if any(not r.ok for r in results):
      raise LLMBatchError(results)
    return [r.text for r in results]  # type: ignore[misc]

  def chat_results(self, conversations: Sequence[Sequence[Message]],
                   sampling: SamplingParams | None = None) -> list[ChatResult]:
    """One ChatResult per conversation, in order; never raises for a failed request."""
    sampling = sampling or SamplingParams()
    if not conversations:
      return []
    workers = min(self.config.max_concurrency, len(conversations))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return list(pool.map(lambda c: self._one(c, sampling), conversations))

  def _request_kwargs(self, sampling: SamplingParams) -> dict:
    kwargs = {"model": self.config.model, "max_tokens": sampling.max_new_tokens,
              "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
    extra = {}
    if sampling.top_k > 0:
      extra["top_k"] = sampling.top_k
    if sampling.stop_token_ids:
      extra["stop_token_ids"] = list(sampling.stop_token_ids)
    if extra:
      kwargs["extra_body"] = extra
    return kwargs

  def _one(self, conversation: Sequence[Message], sampling: SamplingParams) -> ChatResult:
    messages = to_openai_messages(conversation)
    kwargs = self._request_kwargs(sampling)
    attempts, delay = 0, self.config.backoff_s
    while True:
      attempts += 1
      try:
        resp = self._client.chat.completions.create(messages=messages, **kwargs)
        return ChatResult(text=resp.choices[0].message.content or "", error=None,
                          attempts=attempts)
      except Exception as exc:  # noqa: BLE001 - every failure is reported on its item.
        retry = _is_retryable(exc) and attempts <= self.config.max_retries
        self._log.warning("chat request failed (attempt %d, %s): %s", attempts,
                          "retrying" if retry else "giving up", _describe(exc))
        if not retry:
          return ChatResult(text=None, error=_describe(exc), attempts=attempts)
      time.sleep(min(delay, self.config.backoff_max_s) * random.uniform(0.75, 1.25))
      delay *= 2
