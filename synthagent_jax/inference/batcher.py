"""Batches independent generation requests (e.g. concurrent HTTP requests) onto one Engine.

A worker thread takes whatever is pending (up to max_batch_size, after waiting batch_wait_s for
more) and generates every group of requests with the same sampling settings in one engine call.
With a JaxEngine the seed is not part of the grouping: each request keeps its own PRNG stream
(`row_seeds`), so its samples do not depend on what it was batched with.
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
  """

  def __init__(self, engine: Engine, max_batch_size: int = 64, batch_wait_s: float = 0.005):
    self.engine = engine
    self.max_batch_size = max_batch_size
    self.batch_wait_s = batch_wait_s
    self.lock = threading.Lock()  # held while generating; weight updates take it too
    self._queue: queue.Queue[_Pending | None] = queue.Queue()
    self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
    self._thread.start()

  def submit(self, prompt: list[int], sampling: SamplingParams) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    self._queue.put(_Pending(prompt, sampling, future))
    return future

  def close(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=10)

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
    try:
      with self.lock:
        prompts = [it.prompt for it in items]
        if isinstance(self.engine, sampler.JaxEngine):
          out = self.engine.generate(prompts, sampling,
                                     row_seeds=[it.sampling.seed for it in items])
        else:
          out = self.engine.generate(prompts, sampling)
      for it, completion in zip(items, out):
        it.future.set_result(completion)
    except Exception as e:  # pylint: disable=broad-except  # reported to every waiting request
      logging.exception("generation failed")
      for it in items:
        if not it.future.done():
          it.future.set_exception(e)
