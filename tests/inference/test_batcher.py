"""Batcher: pending requests with equal sampling settings share one engine call; cancelled
requests are never generated; the watchdog and close() report and release what waits."""

import threading
import time

import pytest

from synthagent_jax.inference import batcher as batcher_lib
from synthagent_jax.inference import engine as engine_lib


class RecordingEngine:
  """Echoes each prompt's last token + 1; records every call."""

  def __init__(self, fail=False):
    self.calls = []
    self.fail = fail

  def generate(self, prompt_ids, sampling):
    self.calls.append(([list(p) for p in prompt_ids], sampling))
    if self.fail:
      raise RuntimeError("engine broke")
    return [engine_lib.Completion([p[-1] + 1], [-1.0], "length") for p in prompt_ids]

  def update_weights(self, weights, step):
    return {}  # echoes: no weights

  def wait_ready(self):
    pass


def test_requests_are_grouped_by_sampling_params():
  engine = RecordingEngine()
  b = batcher_lib.Batcher(engine, max_batch_size=8, batch_wait_s=0.2)
  greedy = engine_lib.SamplingParams(max_new_tokens=1, temperature=0.0)
  hot = engine_lib.SamplingParams(max_new_tokens=1, temperature=1.0)
  futures = [b.submit([1], greedy), b.submit([2], hot), b.submit([3], greedy)]
  results = [f.result(timeout=30) for f in futures]
  b.close()
  assert [r.token_ids for r in results] == [[2], [3], [4]]
  assert sorted((prompts, sp.temperature) for prompts, sp in engine.calls) == [
      ([[1], [3]], 0.0), ([[2]], 1.0)]


def test_max_batch_size_splits_calls():
  engine = RecordingEngine()
  b = batcher_lib.Batcher(engine, max_batch_size=2, batch_wait_s=0.2)
  sp = engine_lib.SamplingParams(max_new_tokens=1)
  futures = [b.submit([i], sp) for i in range(5)]
  assert [f.result(timeout=30).token_ids for f in futures] == [[1], [2], [3], [4], [5]]
  b.close()
  assert all(len(prompts) <= 2 for prompts, _ in engine.calls)


def test_engine_errors_reach_every_waiting_request():
  b = batcher_lib.Batcher(RecordingEngine(fail=True), batch_wait_s=0.05)
  sp = engine_lib.SamplingParams(max_new_tokens=1)
  futures = [b.submit([1], sp), b.submit([2], sp)]
  for f in futures:
    with pytest.raises(RuntimeError, match="engine broke"):
      f.result(timeout=30)
  b.close()


class GatedEngine(RecordingEngine):
  """RecordingEngine whose calls wait at a gate."""

  def __init__(self):
    super().__init__()
    self.gate = threading.Event()
    self.entered = threading.Event()

  def generate(self, prompt_ids, sampling):
    self.entered.set()
    assert self.gate.wait(30)
    return super().generate(prompt_ids, sampling)


def test_cancelled_requests_are_never_generated_and_close_fails_the_queue():
  engine = GatedEngine()
  b = batcher_lib.Batcher(engine, batch_wait_s=0.0, max_pending=3)
  sp = engine_lib.SamplingParams(max_new_tokens=1)
  running = b.submit([1], sp)
  assert engine.entered.wait(30)
  abandoned, kept = b.submit([2], sp), b.submit([3], sp)
  with pytest.raises(batcher_lib.BatcherFull):
    b.submit([4], sp)
  assert abandoned.cancel()
  assert b.num_pending == 2
  assert b.problem(watchdog_s=60) is None
  time.sleep(0.05)
  assert "watchdog" in b.problem(watchdog_s=0.01)
  engine.gate.set()
  assert running.result(timeout=30).token_ids == [2]
  assert kept.result(timeout=30).token_ids == [4]
  assert [p for prompts, _ in engine.calls for p in prompts] == [[1], [3]]
  assert b.num_abandoned == 1
  engine.gate.clear()
  engine.entered.clear()
  busy = b.submit([5], sp)
  assert engine.entered.wait(30)
  queued = b.submit([6], sp)
  closer = threading.Thread(target=b.close, kwargs={"timeout_s": 30})
  closer.start()
  with pytest.raises(batcher_lib.BatcherClosed):
    queued.result(timeout=30)
  assert b.problem(watchdog_s=60) == "shutting down"
  with pytest.raises(batcher_lib.BatcherClosed):
    b.submit([7], sp)
  engine.gate.set()
  closer.join(30)
  assert busy.result(timeout=30).token_ids == [6]
