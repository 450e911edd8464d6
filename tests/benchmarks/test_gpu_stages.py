"""The GPU suite's issue-15 stages, run at tiny dims on the CPU: learner_throughput's new flags
and grpo_step_memory end with one JSON line of finite positive figures; the GRPO step's memory
grows with the episode length; gpu_suite.sh parses."""

import json
import math
import pathlib
import subprocess

import pytest

from benchmarks import grpo_step_memory
from benchmarks import learner_throughput

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _last_json(capsys) -> dict:
  lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
  return json.loads(lines[-1])


def _positive(d: dict, keys) -> None:
  for k in keys:
    assert isinstance(d[k], (int, float)) and math.isfinite(d[k]) and d[k] > 0, (k, d[k])


def test_learner_throughput_bf16_chunked_remat_no_torch_json(capsys):
  learner_throughput.main(["--dims=tiny", "--dtype=bfloat16", "--attention=chunked",
                           "--remat=full", "--no_torch", "--json", "--batch=2", "--micro=1",
                           "--seq=32", "--rounds=1", "--steps_per_round=1", "--peak_n=256"])
  r = _last_json(capsys)
  assert (r["dtype"], r["attention"], r["remat"]) == ("bfloat16", "chunked", "full")
  assert r["dims"]["hidden"] == 128 and r["dims"]["layers"] == 4  # the DIMS table's tiny
  assert "transformers" not in r and "torch" not in r["matmul_peak_gflops"]
  _positive(r["ours"], ("step_s", "tokens_per_s", "mfu"))
  _positive(r["matmul_peak_gflops"], ("jax", "peak"))
  _positive(r, ("flops_per_token", "first_loss"))


@pytest.mark.slow
def test_learner_throughput_xla_attention_with_torch_side_bf16(capsys):
  learner_throughput.main(["--dims=tiny", "--dtype=bfloat16", "--attention=xla", "--json",
                           "--batch=2", "--seq=32", "--rounds=1", "--steps_per_round=1",
                           "--peak_n=256"])
  r = _last_json(capsys)
  assert r["torch_device"] == "cpu"
  for side in ("ours", "transformers"):
    _positive(r[side], ("step_s", "tokens_per_s", "mfu"))
  _positive(r["matmul_peak_gflops"], ("jax", "torch", "peak"))
  _positive(r, ("speedup",))


def test_grpo_step_memory_json_and_memory_grows_with_seq(capsys):
  runs = {}
  for seq in (64, 256):
    grpo_step_memory.main(["--dims=tiny", f"--seq={seq}", "--rows=2", "--steps=1", "--json"])
    runs[seq] = _last_json(capsys)
  for r in runs.values():
    assert (r["dtype"], r["attention"], r["remat"]) == ("bfloat16", "chunked", "full")
    _positive(r, ("step_s", "first_step_s", "tokens_per_s", "model_tflops_per_s", "peak_gib",
                  "compiled_total_gib", "compiled_temp_gib", "state_gib", "grad_norm"))
    assert math.isfinite(r["loss"]) and r["skipped_updates"] == 0
    assert r["peak_source"] in ("memory_stats", "compiled")
  # Same params and optimizer state; 4x the tokens must cost more activation memory.
  assert runs[256]["state_gib"] == runs[64]["state_gib"]
  assert runs[256]["compiled_temp_gib"] > runs[64]["compiled_temp_gib"]
  assert runs[256]["peak_gib"] > runs[64]["peak_gib"]


def test_gpu_suite_parses():
  subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")], check=True)
