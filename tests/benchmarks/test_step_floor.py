"""benchmarks/step_floor as a user runs it: one JSON line, each part at or above its FLOP time."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the tests' 8 fake devices
  return subprocess.run([sys.executable, "-m", "benchmarks.step_floor", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


def test_parts_run_no_faster_than_their_flops_at_the_peak():
  """The ratios divide by the same FLOP count as grpo_step_flops; none can fall below 1 (the
  peak is the best matmul rate this process reached) unless the count is too large."""
  out = _run("--seq=128", "--repeats=1")
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["seq"] == 128 and result["attention"] == "blocked"
  for part in ("learner", "prefill", "decode_step"):
    assert result[f"{part}_vs_peak"] > 1.0, result


def test_a_length_the_prefill_would_pad_is_refused():
  out = _run("--seq=300")
  assert out.returncode == 2
  assert "--seq=300 is not a prompt bucket" in out.stderr and "take 512" in out.stderr
