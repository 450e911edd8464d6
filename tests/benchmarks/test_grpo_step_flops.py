"""benchmarks/grpo_step_flops: the FLOP count of a step, against values derived by hand."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from benchmarks import grpo_step_flops as gsf

# hidden 4, 2 heads of 2 (1 kv head), MLP 8, 1 layer, vocab 10.
DIMS = dict(hidden=4, intermediate=8, layers=1, heads=2, kv_heads=1, head_dim=2, vocab=10)
# q: 4x4, k and v: 4x2 each, o: 4x4 -> 48; MLP 3 x 4 x 8 = 96: 144 body parameters.
BODY = 144


@dataclasses.dataclass
class _Traj:
  token_ids: list
  loss_mask: list
  prompt_len: int
  num_turns: int = 1


def test_span_flops_by_hand():
  # Positions 0..2: 3 tokens, (1 + 2 + 3) = 6 query-key pairs, head at 2 of them.
  want = 2 * BODY * 3 + 2 * 10 * 4 * 2 + 4 * 1 * 2 * 2 * 6
  assert gsf.span_flops(DIMS, 0, 3, 2) == want
  # Positions 3..4 after a cached prefix of 3: pairs 4 + 5.
  assert gsf.span_flops(DIMS, 3, 5, 0) == 2 * BODY * 2 + 16 * 9


def test_step_flops_counts_a_groups_prompt_once_and_trains_kept_groups():
  prompt = [1, 2, 3]
  a = _Traj(prompt + [4, 5], [0, 0, 0, 1, 1], 3)
  b = _Traj(prompt + [6], [0, 0, 0, 1], 3)
  rollout, learner = gsf.step_flops(DIMS, [a, b], group=2)
  want_rollout = (gsf.span_flops(DIMS, 0, 3, 0) + gsf.span_flops(DIMS, 3, 5, 2)
                  + gsf.span_flops(DIMS, 3, 4, 1))
  assert rollout == pytest.approx(want_rollout)
  assert learner == pytest.approx(3 * (gsf.span_flops(DIMS, 0, 5, 2)
                                       + gsf.span_flops(DIMS, 0, 4, 1)))
  # A dropped group is sampled but not trained; two groups of one share nothing.
  _, none = gsf.step_flops(DIMS, [a, b], group=2, dropped_g=[True])
  assert none == 0.0
  alone, _ = gsf.step_flops(DIMS, [a, b], group=1)
  assert alone == pytest.approx(gsf.span_flops(DIMS, 0, 5, 2) + gsf.span_flops(DIMS, 0, 4, 1))


def test_script_runs_grpo_steps_from_a_runs_sft(tmp_path):
  """The script as a user runs it (one-device subprocesses): a smoke run's SFT, then 2 GRPO
  steps from it, one JSON line of figures with the work counted."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the tests' 8 fake devices
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  run = str(tmp_path / "run")
  subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py:smoke",
                  f"--workdir={run}"], cwd=root, env=env, capture_output=True, text=True,
                 timeout=900, check=True)
  proc = subprocess.run([sys.executable, "-m", "benchmarks.grpo_step_flops", f"--from_run={run}",
                         "--config=configs/tiny.py:smoke", "--steps=2",
                         # a smoke policy's groups all score 0: train on them anyway
                         "--set=rl.drop_zero_variance=False"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=900, check=True)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["steps"] == 1 and result["rollout_gflop"] > 0 and result["learner_gflop"] > 0
  # The step holds both parts; its ratio is its time over the FLOP time of both at the peak.
  assert result["step_s"] >= result["rollout_s"] + result["learner_s"] - 1e-6
  flop_s = (result["rollout_gflop"] + result["learner_gflop"]) / result["peak_gflops"]
  assert result["step_vs_peak"] == pytest.approx(result["step_s"] / flop_s)
  assert isinstance(result["late_compiles"], int) and result["late_compiles"] >= 0
  rollout_and_score = gsf.train_rollouts.rollout_and_score
  with pytest.raises(ValueError, match="checkpoints/sft"):
    gsf.main([f"--from_run={tmp_path}", "--steps=2"])
  assert gsf.train_rollouts.rollout_and_score is rollout_and_score  # nothing left patched
