"""Tests for the metric and rollout writers (utils/metrics.py)."""

import json
import math
import pathlib
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from synthagent_jax.utils import metrics


def read_tb_scalars(workdir: pathlib.Path) -> list[tuple[str, int, float]]:
  """Parses TFRecord event files by hand: u64 length, u32 crc, payload, u32 crc per record."""
  out = []
  files = sorted((workdir / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
  assert files, "no TensorBoard event file written"
  for path in files:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      payload = data[pos + 12:pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for v in event.summary.value:
        out.append((v.tag, event.step, v.simple_value))
  return out


def make_verdict(item_id="s1", met=True):
  return {"section": "subgoals", "id": item_id, "text": "look up the order", "met": met,
          "score": 1.0 if met else 0.0, "source": "check"}


def make_record(step=1, sample_index=0, reward=0.5):
  return {"step": step, "task_id": "t0", "sample_index": sample_index, "domain": "retail",
          "messages": [{"role": "user", "content": "hi"}], "status": "answered", "num_turns": 1,
          "num_tool_calls": 0, "response_tokens": 7, "reward": reward, "advantage": 0.1,
          "verdicts": [make_verdict()]}


def test_write_jsonl_and_tensorboard(tmp_path):
  with metrics.MetricWriter(tmp_path, process_index=0) as w:
    w.write(1, {"rl/reward_mean": 0.25, "learner/loss": np.float32(1.5)})
    w.write(2, {"rl/reward_mean": 0.5, "eval/pass^k": 1})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2
  first = json.loads(lines[0])
  assert first["step"] == 1 and first["rl/reward_mean"] == 0.25 and first["learner/loss"] == 1.5
  assert isinstance(first["time"], float)
  recs = metrics.read_metrics(tmp_path)
  assert [r["step"] for r in recs] == [1, 2]
  assert recs[1]["eval/pass^k"] == 1.0
  scalars = read_tb_scalars(tmp_path)
  assert ("rl/reward_mean", 1, 0.25) in scalars
  assert ("rl/reward_mean", 2, 0.5) in scalars
  assert ("learner/loss", 1, 1.5) in scalars


def test_line_is_flushed_before_close(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(3, {"rl/reward_mean": 1.0})
  assert metrics.read_metrics(tmp_path)[0]["step"] == 3
  w.close()


def test_nan_round_trips_as_null(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(0, {"learner/loss": float("nan")})
  assert json.loads((tmp_path / "metrics.jsonl").read_text())["learner/loss"] is None
  assert math.isnan(metrics.read_metrics(tmp_path)[0]["learner/loss"])


def test_non_zero_process_writes_nothing(tmp_path):
  w = metrics.MetricWriter(tmp_path / "w", process_index=1)
  w.write(1, {"rl/reward_mean": 0.1})
  assert w.truncate_after(0) == 0
  assert not (tmp_path / "w").exists()
  logger = metrics.RolloutLogger(tmp_path / "w", process_index=1)
  assert logger.write(1, [make_record()]) is None
  assert not (tmp_path / "w").exists()


def test_default_process_index_is_jax(tmp_path):
  assert metrics.MetricWriter(tmp_path, tensorboard=False).active


@pytest.mark.parametrize("key", ["reward", "/x", "rl/", "rl/a b", 3])
def test_bad_key_rejected(tmp_path, key):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  with pytest.raises(ValueError, match="namespaced"):
    w.write(0, {key: 1.0})


def test_bad_value_and_step_rejected(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  with pytest.raises(ValueError, match="scalar"):
    w.write(0, {"rl/x": "high"})
  with pytest.raises(ValueError, match="scalar"):
    w.write(0, {"rl/x": np.zeros(3)})
  for step in (-1, 1.5, True, "3"):
    with pytest.raises(ValueError, match="step must be"):
      w.write(step, {"rl/x": 1.0})


def test_numpy_and_jax_steps_and_values(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(np.int64(4), {"rl/x": jnp.float32(0.5), "rl/y": jnp.array([2.0])})
  w.write(jnp.array(5, jnp.int32), {"rl/x": np.array(1.5)})
  recs = metrics.read_metrics(tmp_path)
  assert [(r["step"], r["rl/x"]) for r in recs] == [(4, 0.5), (5, 1.5)]
  assert recs[0]["rl/y"] == 2.0


def test_truncate_after_and_resume(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0)
  for step in range(1, 6):
    w.write(step, {"rl/reward_mean": float(step)})
  w.close()
  # A resumed run restored at step 3 continues the curve without duplicates.
  w = metrics.MetricWriter(tmp_path, process_index=0, resume_step=3)
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2, 3]
  w.write(4, {"rl/reward_mean": 40.0})
  w.close()
  recs = metrics.read_metrics(tmp_path)
  assert [(r["step"], r["rl/reward_mean"]) for r in recs] == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                              (4, 40.0)]
  assert w.truncate_after(2) == 2
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]
  with pytest.raises(ValueError, match="non-negative"):
    w.truncate_after(-1)
  assert w.truncate_after(np.int32(1)) == 1


def test_resume_purges_tensorboard(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0)
  w.write(1, {"rl/r": 1.0})
  w.write(2, {"rl/r": 2.0})
  w.close()
  w = metrics.MetricWriter(tmp_path, process_index=0, resume_step=1)
  w.write(2, {"rl/r": 20.0})
  w.close()
  files = sorted((tmp_path / metrics.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
  assert len(files) == 2  # Reopening in the same second must not overwrite the first file.
  scalars = read_tb_scalars(tmp_path)
  assert ("rl/r", 1, 1.0) in scalars and ("rl/r", 2, 20.0) in scalars
  # The second event file starts with a SessionLog START at the purge step (TensorBoard then
  # discards older events with step >= 2).
  found_purge = False
  for path in files:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        found_purge = found_purge or event.step == 2
  assert found_purge


def test_half_written_tail_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "time": 0.0, "rl/r": 1.0}\n{"step": 2, "ti')
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1]
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(2, {"rl/r": 2.0})
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]


def test_malformed_middle_line_is_an_error(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
    metrics.read_metrics(tmp_path)


def test_series_and_last_values():
  recs = [{"step": 1, "rl/r": 1.0}, {"step": 2, "rl/r": 2.0, "eval/x": 5.0}, {"step": 3, "rl/r": 3.0}]
  assert metrics.metric_series(recs, "eval/x") == ([2], [5.0])
  assert metrics.last_values(recs) == {"step": 3, "rl/r": 3.0, "eval/x": 5.0}


def test_rollout_logger_round_trip_and_resume(tmp_path):
  logger = metrics.RolloutLogger(tmp_path, process_index=0)
  path = logger.write(7, [make_record(7, 0), make_record(7, 1, reward=1.0)])
  assert path.name == "step_000007.jsonl"
  logger.write(9, [make_record(9)])
  assert metrics.list_rollout_steps(tmp_path) == [7, 9]
  recs = metrics.read_rollouts(tmp_path, 7)
  assert [r["reward"] for r in recs] == [0.5, 1.0]
  assert recs[0]["verdicts"][0]["met"] is True
  # Rewriting a step replaces it; truncate_after removes later steps.
  logger.write(7, [make_record(7)])
  assert len(metrics.read_rollouts(tmp_path, 7)) == 1
  assert logger.truncate_after(7) == [9]
  assert metrics.list_rollout_steps(tmp_path) == [7]
  with pytest.raises(FileNotFoundError, match="steps logged"):
    metrics.read_rollouts(tmp_path, 9)


def test_rollout_logger_rejects_bad_records(tmp_path):
  logger = metrics.RolloutLogger(tmp_path, process_index=0)
  bad = make_record()
  del bad["advantage"]
  with pytest.raises(ValueError, match="advantage"):
    logger.write(1, [bad])
  bad = make_record()
  bad["verdicts"][0]["met"] = "yes"
  with pytest.raises(ValueError, match=r"verdicts\[0\] field 'met'"):
    logger.write(1, [bad])
  with pytest.raises(ValueError, match="has step 2"):
    logger.write(1, [make_record(step=2)])
  bad = make_record()
  bad["num_turns"] = True
  with pytest.raises(ValueError, match="num_turns"):
    logger.write(1, [bad])


def test_rollout_logger_writes_non_finite_values_as_null(tmp_path):
  """Whatever reaches the rollout log is written (issue 19 item 5): non-finite floats anywhere in
  a record become null; reward / advantage / verdict score read back as NaN."""
  rec = make_record(3, reward=float("nan"))
  rec["advantage"] = float("-inf")
  rec["verdicts"][0]["score"] = float("inf")
  rec["messages"] = [{"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": {
          "x": float("nan"), "y": [1.5, float("inf"), {"z": float("-inf")}], "w": (2.0, "s")}}}]}]
  path = metrics.RolloutLogger(tmp_path, process_index=0).write(3, [rec])
  line = json.loads(path.read_text())  # strict JSON: no NaN / Infinity literals
  assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
  assert line["messages"][0]["tool_calls"][0]["function"]["arguments"] == {
      "x": None, "y": [1.5, None, {"z": None}], "w": [2.0, "s"]}
  (back,) = metrics.read_rollouts(tmp_path, 3)
  assert math.isnan(back["reward"]) and math.isnan(back["advantage"])
  assert math.isnan(back["verdicts"][0]["score"])
  assert rec["reward"] != rec["reward"]  # the caller's record is not modified
  assert math.isnan(rec["messages"][0]["tool_calls"][0]["function"]["arguments"]["x"])
