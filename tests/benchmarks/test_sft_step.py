"""benchmarks/sft_step: its batch has the asked share of trained tokens, and the script runs every
variant (in a one-device subprocess, as a user runs it) and prints one line each."""

import os
import subprocess
import sys

from benchmarks import sft_step


def test_host_batch_trains_the_asked_share():
  batch = sft_step.host_batch(rows=8, seq=96, trained=0.25)
  assert batch["input_ids"].shape == batch["loss_mask"].shape == (8, 96)
  assert 0.15 < batch["loss_mask"].mean() <= 0.25  # 4 spans of 6 per row, overlaps allowed


def test_sft_step_script_prints_every_variant():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the tests' 8 fake devices
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, "-m", "benchmarks.sft_step", "--rows=16", "--seq=64",
                         "--trained=0.25", "--repeats=1"], cwd=root, env=env, capture_output=True,
                        text=True, timeout=600, check=True)
  rows = [l.split() for l in proc.stdout.splitlines() if l.startswith("attention=")]
  assert [r[:2] for r in rows] == [
      ["attention=naive", "head_fraction=0.0"], ["attention=naive", "head_fraction=0.5"],
      ["attention=blocked", "head_fraction=0.0"], ["attention=blocked", "head_fraction=0.5"]]
  assert rows[0][4] == "1.00x" and all(float(r[2]) > 0 for r in rows)
