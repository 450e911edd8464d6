"""Batches independent generation requests (e.g. concurrent HTTP requests) onto one Engine.

A worker thread takes whatever is pending (up to max_batch_size, after waiting batch_wait_s for
more) and generates every group of requests with the same sampling settings in one engine call.
With a JaxEngine the seed is not part of the grouping: each request keeps its own PRNG stream
(`row_seeds`), so its samples do not depend on what it was batched with.

Requests are checked by the caller before `submit` (see `server_requests`): one engine call
fails all of its requests together. A request whose future is cancelled before its batch starts
(its client went away) is dropped, never generated (`num_abandoned` counts them). At most
`max_pending` prompts wait or run at once (`submit` raises `BatcherFull` beyond). `problem()`
says when the worker is stuck in one engine call for longer than a watchdog, or gone. `close()`
fails every request still queued, so nothing waits on a closed batcher.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time

from synthagent_jax.inference import sampler
from synthagent_jax.inference.engine import Engine, SamplingParams


class BatcherFull(RuntimeError):
  """More prompts are pending than `max_pending` allows; retry later."""


class BatcherClosed(RuntimeError):
  """The batcher was closed (the server is shutting down)."""


@dataclasses.dataclass
class _Pending:
  prompt: list[int]
  sampling: SamplingParams
  future: concurrent.futures.Future


class Batcher:
  """Collects generation requests from many HTTP handlers into engine batches (one thread).

  Args:
    engine: any Engine; a JaxEngine gets per-request seeds (row_seeds), so requests that differ
      only in their seed share a batch.
    max_batch_size: prompts per engine call at most.
    batch_wait_s: after the first pending request, how long to wait for more.
    max_pending: prompts queued or generating at once at most; None = no limit.
  """

  def __init__(self, engine: Engine, max_batch_size: int = 64, batch_wait_s: float = 0.005,
               max_pending: int | None = None):
    if max_batch_size < 1 or batch_wait_s < 0 or (max_pending is not None and max_pending < 1):
      raise ValueError(f"Batcher needs max_batch_size >= 1, batch_wait_s >= 0 and max_pending "
                       f">= 1 or None; got {max_batch_size}, {batch_wait_s}, {max_pending}")
    self.engine = engine
    self.max_batch_size = max_batch_size
    self.batch_wait_s = batch_wait_s
    self.max_pending = max_pending
    self.lock = threading.Lock()  # held while generating; weight updates take it too
    self.num_abandoned = 0  # requests cancelled before their batch started (never generated)
    self._busy_since: float | None = None  # time.monotonic() when the running call started
    self._num_pending = 0
    self._count_lock = threading.Lock()
    self._closed = False
    self._queue: queue.Queue[_Pending | None] = queue.Queue()
    self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
    self._thread.start()

  def submit(self, prompt: list[int], sampling: SamplingParams) -> concurrent.futures.Future:
    """Queues one prompt; the future holds its Completion (cancel it to abandon the request).

    Raises:
      BatcherFull: `max_pending` prompts are already waiting or running.
      BatcherClosed: after `close()`.
    """
    with self._count_lock:
      if self._closed:
        raise BatcherClosed("the server is shutting down")
      if self.max_pending is not None and self._num_pending >= self.max_pending:
        raise BatcherFull(f"{self._num_pending} prompts are pending (limit {self.max_pending})")
      self._num_pending += 1
    future = concurrent.futures.Future()
    future.add_done_callback(self._release)
    self._queue.put(_Pending(prompt, sampling, future))
    return future

  def _release(self, _) -> None:
    with self._count_lock:
      self._num_pending -= 1

  @property
  def num_pending(self) -> int:
    return self._num_pending

  def problem(self, watchdog_s: float) -> str | None:
    """Why the batcher cannot serve (closed, worker gone, one call running > watchdog_s)."""
    if self._closed:
      return "shutting down"
    if not self._thread.is_alive():
      return "the batcher thread has exited"
    since = self._busy_since
    if since is not None and time.monotonic() - since > watchdog_s:
      return (f"one engine call has been running for {time.monotonic() - since:.1f}s "
              f"(watchdog {watchdog_s:g}s)")
    return None

  def close(self, timeout_s: float = 10.0) -> None:
    """Stops taking requests, fails every queued one with BatcherClosed, stops the worker (it
    finishes the engine call it is in, if any, within timeout_s or is left behind: daemon)."""
    with self._count_lock:
      self._closed = True
    while True:
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        break
      if item is not None and item.future.set_running_or_notify_cancel():
        item.future.set_exception(BatcherClosed("the server is shutting down"))
    self._queue.put(None)
    self._thread.join(timeout=timeout_s)

  def _take_batch(self) -> list[_Pending] | None:
    first = self._queue.get()
    if first is None:
      return None
    batch = [first]
    deadline = time.monotonic() + self.batch_wait_s
    while len(batch) < self.max_batch_size:
      try:
        item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
      except queue.Empty:
        break
      if item is None:
        self._queue.put(None)
        break
      batch.append(item)
    return batch

  def _group_key(self, sampling: SamplingParams) -> SamplingParams:
    if isinstance(self.engine, sampler.JaxEngine):
      return dataclasses.replace(sampling, seed=0)
    return sampling

  def _run(self) -> None:
    while True:
      batch = self._take_batch()
      if batch is None:
        return
      groups: dict[SamplingParams, list[_Pending]] = collections.defaultdict(list)
      for item in batch:
        groups[self._group_key(item.sampling)].append(item)
      for sampling, items in groups.items():
        self._generate_group(sampling, items)

  def _generate_group(self, sampling: SamplingParams, items: list[_Pending]) -> None:
    live = []
    for it in items:  # a cancelled future (client gone) is never generated
      if it.future.set_running_or_notify_cancel():
        live.append(it)
      else:
        self.num_abandoned += 1
    if not live:
      return
    try:
      with self.lock:
        self._busy_since = time.monotonic()
        prompts = [it.prompt for it in live]
        if isinstance(self.engine, sampler.JaxEngine):
          out = self.engine.generate(prompts, sampling,
                                     row_seeds=[it.sampling.seed for it in live])
        else:
          out = self.engine.generate(prompts, sampling)
      for it, completion in zip(live, out):
        it.future.set_result(completion)
    except Exception as e:  # pylint: disable=broad-except  # reported to every waiting request
      logging.exception("generation failed")
      for it in live:
        if not it.future.done():
          it.future.set_exception(e)
    finally:
      self._busy_since = None
