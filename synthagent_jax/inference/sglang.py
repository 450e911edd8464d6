"""`Engine` over SGLang's native HTTP API, with weight sync through HF safetensors on disk.

Requests (one per prompt, so the server batches them continuously):

    POST {url}/generate
    {"input_ids": [...], "return_logprob": true,
     "sampling_params": {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids"}}
    -> {"output_ids": [...], "meta_info": {"finish_reason": {"type": "stop"|"length"|"abort", ...},
        "output_token_logprobs": [[logprob, token_id, text|null], ...], ...}}

Weight sync: `sync_weights(model, step)` writes an HF checkpoint (bf16 by default) to
`export_dir/step_XXXXXX` (a directory every server can read: shared disk, or the same machine)
with `models.hf_export.save_pretrained_streaming` (tensor by tensor from the shards, never the whole
model on one host; with several processes each writes its share of the files) and POSTs
`/update_weights_from_disk {"model_path", "flush_cache": true}` to every server of this process.
What it cost is in the returned `SyncStats` (also `engine.last_sync_stats`). Why disk and not
SGLang's `update_weights_from_tensor` / distributed endpoints: docs/sglang.md.

Authentication: servers started with `--api-key KEY` (ours: `--api_key` / SYNTHAGENT_API_KEY)
want `Authorization: Bearer KEY` on every request; `api_key=` (default: $SGLANG_API_KEY) sends it.

Failures: connection errors, timeouts, HTTP 5xx/429 and aborted generations are retried with
exponential backoff on the next server in the round-robin; other HTTP 4xx fail at once (the
request is wrong, retrying cannot help). SGLang is an optional dependency: this module only
needs httpx.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import os
import shutil
import threading
import time
from typing import Any, Sequence

import httpx

from synthagent_jax.inference.engine import Completion, SamplingParams

_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


SYNC_DTYPES = ("bfloat16", "float32", "float16")


@dataclasses.dataclass(frozen=True)
class SyncStats:
  """One `sync_weights` call.

  Attributes:
    path: the exported checkpoint directory.
    step: the learner step of the weights.
    dtype: tensor dtype on disk.
    bytes_written: tensor bytes this process wrote.
    total_bytes: tensor bytes of the whole export (all processes).
    export_s: seconds spent writing the export (this process, barriers included).
    load_s: seconds until every server of this process answered the reload.
  """

  path: str
  step: int
  dtype: str
  bytes_written: int
  total_bytes: int
  export_s: float
  load_s: float

  @property
  def seconds(self) -> float:
    return self.export_s + self.load_s

  def metrics(self) -> dict[str, float]:
    """`perf/sync_bytes` (this process's bytes written) and `perf/sync_s` (export + reload)."""
    return {"perf/sync_bytes": float(self.bytes_written), "perf/sync_s": self.seconds}


class SGLangError(RuntimeError):
  """A request that failed for good (non-retryable, or out of retries)."""


class _Retryable(Exception):
  """Internal: this attempt failed in a way another attempt may not."""


def sampling_payload(sampling: SamplingParams, send_seed: bool = False) -> dict[str, Any]:
  """SGLang `sampling_params` for our SamplingParams (top_k 0 -> SGLang's -1, "disabled")."""
  params = {
      "max_new_tokens": sampling.max_new_tokens,
      "temperature": sampling.temperature,
      "top_p": sampling.top_p,
      "top_k": sampling.top_k if sampling.top_k > 0 else -1,
      "stop_token_ids": list(sampling.stop_token_ids),
  }
  if send_seed:
    params["sampling_seed"] = sampling.seed
  return params


def parse_generate_response(body: Any, stop_token_ids: Sequence[int] = ()) -> Completion:
  """Turns one /generate response into a Completion.

  Token ids come from `meta_info.output_token_logprobs` (they are paired with their logprobs);
  `output_ids` must agree with them when present.

  Raises:
    SGLangError: for a malformed body.
    _Retryable: for an aborted generation (e.g. paused by a weight update).
  """
  if not isinstance(body, dict) or not isinstance(body.get("meta_info"), dict):
    raise SGLangError(f"/generate response has no meta_info object: {str(body)[:300]}")
  meta = body["meta_info"]
  finish = meta.get("finish_reason")
  kind = finish.get("type") if isinstance(finish, dict) else finish
  if kind == "abort":
    raise _Retryable(f"generation aborted by the server: {finish}")
  if kind not in ("stop", "length"):
    raise SGLangError(f"/generate finish_reason {finish!r} is not stop/length")
  entries = meta.get("output_token_logprobs")
  if not isinstance(entries, list):
    raise SGLangError("/generate response lacks meta_info.output_token_logprobs; "
                      "was return_logprob sent?")
  try:
    logprobs = [float(e[0]) for e in entries]
    token_ids = [int(e[1]) for e in entries]
  except (TypeError, ValueError, IndexError) as e:
    raise SGLangError(f"malformed output_token_logprobs entry: {e}") from e
  output_ids = body.get("output_ids")
  if output_ids is not None and [int(t) for t in output_ids] != token_ids:
    raise SGLangError(f"output_ids {output_ids[:20]} disagree with the ids in "
                      f"output_token_logprobs {token_ids[:20]}")
  reason = "stop" if kind == "stop" else "length"
  if reason == "length" and token_ids and token_ids[-1] in set(stop_token_ids):
    reason = "stop"
  return Completion(token_ids=token_ids, logprobs=logprobs, finish_reason=reason)


class SGLangEngine:
  """`Engine` over one or more SGLang servers (round-robin), see the module docstring.

  Args:
    urls: base URL(s), e.g. "http://10.0.0.2:30000".
    max_concurrency: requests in flight at once (over all servers).
    timeout_s: per-request timeout.
    max_retries: extra attempts per request after the first.
    backoff_s: first retry delay; doubles per attempt up to max_backoff_s.
    max_backoff_s: cap on one retry delay.
    export_dir: where `sync_weights` writes checkpoints (must be readable by the servers).
    sync_dtype: tensor dtype of the exports: "bfloat16" (default: half of fp32's bytes; SGLang
      serves bf16 anyway), "float32" (bit-exact weights, e.g. for fp32 parity tests) or "float16".
    keep_exports: how many exported checkpoints to keep on disk (older ones are deleted after
      every server loaded a newer one).
    send_seed: also send `sampling_seed` (needs a server that accepts it; our launch.serve does).
    api_key: sent as `Authorization: Bearer KEY` on every request (servers started with
      `--api-key`); default: the SGLANG_API_KEY environment variable, else no key.
    transport: optional httpx transport (tests).
  """

  def __init__(self, urls: str | Sequence[str], *, max_concurrency: int = 64,
               timeout_s: float = 600.0, max_retries: int = 5, backoff_s: float = 0.5,
               max_backoff_s: float = 30.0, export_dir: str | None = None, keep_exports: int = 2,
               sync_dtype: str = "bfloat16", send_seed: bool = False, api_key: str | None = None,
               transport: httpx.BaseTransport | None = None):
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
      raise ValueError("SGLangEngine needs at least one server URL")
    for url in urls:
      if not url.startswith(("http://", "https://")):
        raise ValueError(f"SGLangEngine URL {url!r} must start with http:// or https://")
    if max_concurrency < 1:
      raise ValueError(f"SGLangEngine.max_concurrency must be >= 1, got {max_concurrency}")
    if max_retries < 0 or backoff_s < 0 or timeout_s <= 0:
      raise ValueError("SGLangEngine needs max_retries >= 0, backoff_s >= 0 and timeout_s > 0")
    if keep_exports < 1:
      raise ValueError(f"SGLangEngine.keep_exports must be >= 1, got {keep_exports}")
    if sync_dtype not in SYNC_DTYPES:
      raise ValueError(f"SGLangEngine.sync_dtype must be one of {SYNC_DTYPES}, got {sync_dtype!r}")
    self.urls = [u.rstrip("/") for u in urls]
    self.max_concurrency = max_concurrency
    self.max_retries = max_retries
    self.backoff_s = backoff_s
    self.max_backoff_s = max_backoff_s
    self.export_dir = export_dir
    self.keep_exports = keep_exports
    self.sync_dtype = sync_dtype
    self.last_sync_stats: SyncStats | None = None
    self.send_seed = send_seed
    self.weight_version: int | None = None
    self._exports: list[str] = []
    self._next_url = itertools.cycle(range(len(self.urls)))
    self._lock = threading.Lock()
    limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
    api_key = api_key if api_key is not None else os.environ.get("SGLANG_API_KEY") or None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    self._client = httpx.Client(timeout=timeout_s, limits=limits, transport=transport,
                                headers=headers)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_concurrency,
                                                       thread_name_prefix="sglang")

  def close(self) -> None:
    self._pool.shutdown(wait=True)
    self._client.close()

  def __enter__(self) -> SGLangEngine:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- health ---------------------------------------------------------------------------------

  def wait_healthy(self, timeout_s: float = 600.0, poll_s: float = 1.0) -> None:
    """Blocks until GET /health answers 200 on every server.

    Raises:
      TimeoutError: naming the servers still unhealthy after timeout_s.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(self.urls)
    while True:
      still = []
      for url in pending:
        try:
          ok = self._client.get(f"{url}/health", timeout=min(poll_s * 5, 30.0)).status_code == 200
        except httpx.HTTPError:
          ok = False
        if not ok:
          still.append(url)
      pending = still
      if not pending:
        return
      if time.monotonic() > deadline:
        raise TimeoutError(f"SGLang servers not healthy after {timeout_s}s: {pending}")
      time.sleep(poll_s)

  def wait_ready(self) -> None:
    """`Engine.wait_ready`: `wait_healthy` with its default timeout."""
    self.wait_healthy()

  # -- generation -----------------------------------------------------------------------------

  def generate(self, prompt_ids: Sequence[Sequence[int]],
               sampling: SamplingParams) -> list[Completion]:
    """Returns one Completion per prompt, in prompt order (see `engine.Engine`)."""
    prompts = [[int(t) for t in p] for p in prompt_ids]
    for i, prompt in enumerate(prompts):
      if not prompt:
        raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    params = sampling_payload(sampling, self.send_seed)
    futures = []
    for i, prompt in enumerate(prompts):
      # Distinct but reproducible seeds per prompt.
      req_params = dict(params, sampling_seed=sampling.seed + i) if self.send_seed else params
      payload = {"input_ids": prompt, "sampling_params": req_params, "return_logprob": True}
      futures.append(self._pool.submit(self._generate_one, payload, sampling.stop_token_ids))
    return [f.result() for f in futures]

  def _generate_one(self, payload: dict[str, Any], stop_token_ids: Sequence[int]) -> Completion:
    return self._with_retries(
        "/generate", payload, lambda body: parse_generate_response(body, stop_token_ids))

  def _pick_url(self) -> str:
    with self._lock:
      return self.urls[next(self._next_url)]

  def _with_retries(self, path: str, payload: dict[str, Any], parse, url: str | None = None):
    """POSTs payload (to `url`, or round-robin) until `parse` accepts a response."""
    errors = []
    for attempt in range(self.max_retries + 1):
      target = url or self._pick_url()
      try:
        response = self._client.post(f"{target}{path}", json=payload)
        if response.status_code in _RETRYABLE_STATUS:
          raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
          hint = (" (the server wants an API key: pass api_key= or set SGLANG_API_KEY)"
                  if response.status_code == 401 else "")
          raise SGLangError(f"POST {target}{path} failed with HTTP {response.status_code}: "
                            f"{response.text[:500]}{hint}")
        try:
          body = response.json()
        except ValueError as e:
          raise _Retryable(f"response is not JSON: {response.text[:200]}") from e
        return parse(body)
      except (_Retryable, httpx.TransportError) as e:
        errors.append(f"{target}: {type(e).__name__}: {e}")
        logging.warning("SGLang %s attempt %d/%d failed: %s", path, attempt + 1,
                        self.max_retries + 1, errors[-1])
        if attempt < self.max_retries:
          time.sleep(min(self.backoff_s * 2 ** attempt, self.max_backoff_s))
    raise SGLangError(f"POST {path} failed after {self.max_retries + 1} attempts: "
                      + " | ".join(errors[-3:]))

  # -- weight sync ----------------------------------------------------------------------------

  def sync_weights(self, model_or_params: Any, step: int) -> SyncStats:
    """Exports the policy and makes every server load it.

    With several JAX processes, every process must call this (the export is collective); each
    then reloads its own servers. Exports beyond `keep_exports` are deleted by process 0.

    Args:
      model_or_params: an nnx model, or a `(graphdef, params)` pair (params may be sharded).
      step: the learner step these weights come from (becomes `weight_version`).

    Returns:
      SyncStats (also kept as `last_sync_stats`); log `stats.metrics()`.
    """
    if self.export_dir is None:
      raise ValueError("SGLangEngine.sync_weights needs export_dir (a directory the servers can "
                       "read) to be set")
    import jax  # pylint: disable=g-import-not-at-top
    from synthagent_jax.models import hf_export  # pylint: disable=g-import-not-at-top
    path = os.path.abspath(os.path.join(self.export_dir, f"step_{int(step):06d}"))
    export = hf_export.save_pretrained_streaming(model_or_params, path, dtype=self.sync_dtype)
    t0 = time.perf_counter()
    self.load_weights_from_disk(path)
    load_s = time.perf_counter() - t0
    self.weight_version = int(step)
    if path not in self._exports:
      self._exports.append(path)
    while len(self._exports) > self.keep_exports:
      old = self._exports.pop(0)
      if jax.process_index() == 0:  # the directory is shared: one process cleans it
        shutil.rmtree(old, ignore_errors=True)
    stats = SyncStats(path=path, step=int(step), dtype=self.sync_dtype,
                      bytes_written=export.bytes_written, total_bytes=export.total_bytes,
                      export_s=export.seconds, load_s=load_s)
    self.last_sync_stats = stats
    logging.info("weight sync step %d: %.1f MB (%s) written in %.2fs, servers reloaded in %.2fs",
                 step, stats.bytes_written / 1e6, self.sync_dtype, stats.export_s, load_s)
    return stats

  def update_weights(self, weights: Any, step: int) -> dict[str, float]:
    """`Engine.update_weights`: `sync_weights`; returns perf/sync_bytes and perf/sync_s."""
    return self.sync_weights(weights, step).metrics()

  def load_weights_from_disk(self, path: str) -> None:
    """POSTs /update_weights_from_disk to every server (each retried on its own)."""

    def check(body):
      if not isinstance(body, dict) or not body.get("success", False):
        raise SGLangError(f"update_weights_from_disk({path}) refused: {body}")
      return body

    payload = {"model_path": path, "flush_cache": True}
    for url in self.urls:
      self._with_retries("/update_weights_from_disk", payload, check, url=url)
