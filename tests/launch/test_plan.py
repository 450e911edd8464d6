"""launch.plan: parameter count and per-device bytes from the abstract state, no weights."""

import pytest

from configs import base
from launch import plan


def _qwen25_3b_config(mesh_shape):
  c = base.base_config()
  # Qwen2.5-3B's published architecture (config.json of Qwen/Qwen2.5-3B-Instruct).
  c.model.update(dict(family="qwen2", hidden_size=2048, intermediate_size=11008, num_layers=36,
                      num_heads=16, num_kv_heads=2, head_dim=128, rope_theta=1e6,
                      tie_word_embeddings=True, dtype="bfloat16", remat="full"))
  c.model.vocab_size = 151936
  c.mesh.shape = mesh_shape
  c.rl.micro_batch_size = 8
  c.rollout.max_total_tokens = 4096
  return c


# Hand count: embed 151936*2048; per layer q 2048*2048+2048, k/v 2*(2048*256+256),
# o 2048*2048, mlp 3*2048*11008, two norms 2*2048; 36 layers; final norm 2048.
QWEN25_3B_PARAMS = 151936 * 2048 + 36 * (
    2048 * 2048 + 2048 + 2 * (2048 * 256 + 256) + 2048 * 2048 + 3 * 2048 * 11008 + 2 * 2048) + 2048


def test_qwen25_3b_fsdp8_plan():
  p = plan.plan(_qwen25_3b_config((1, 8, 1)))
  assert p["num_params"] == QWEN25_3B_PARAMS  # 3.09 B, as published
  full = QWEN25_3B_PARAMS * 4
  # FSDP over 8: everything with an `embed` dim is split 8 ways; q/k/v biases stay replicated.
  assert full / 8 <= p["params_bytes_per_device"] <= full / 8 * 1.001
  # AdamW: two fp32 moments per parameter, sharded like the params.
  assert p["opt_state_bytes_per_device"] == pytest.approx(2 * p["params_bytes_per_device"],
                                                          rel=1e-6)
  assert p["activation_bytes_per_device"] > 0
  text = plan.format_plan(p)
  assert "3.086 B" in text and "optimizer state" in text


def test_tensor_parallel_plan_and_fallback_notes():
  p = plan.plan(_qwen25_3b_config((1, 2, 4)))
  full = QWEN25_3B_PARAMS * 4
  assert p["params_bytes_per_device"] < full / 6
  # 2 KV heads cannot split 4 ways: k/v projections fall back to replication, and say so.
  assert any("kv_heads=2" in n for n in p["notes"])


def _recipe(name, **mesh):
  import importlib
  c = importlib.import_module(f"configs.{name}").get_config()
  c.mesh.update(mesh)
  return c


@pytest.mark.slow
def test_qwen_3b_recipe_fits_80gb_with_sglang_colocated():
  """The recipe (2048 + 8192 tokens, micro-batch 8 over fsdp 8) with 30% of each 80 GB device
  left to SGLang fits, and still does with 8 sequences per device; with the pre-issue-15 naive
  attention and whole-sequence logits (logprob_chunk = T: [T, T] scores, [T, V] logits) the
  activations are > 5x larger and 8 sequences per device are refused."""
  c = _recipe("qwen_3b")
  c.engine.mem_fraction = 0.3
  p = plan.plan(c)
  assert p["fits"], plan.format_plan(p)
  assert p["sglang_reserved_bytes_per_device"] == int(0.3 * 80 * 2**30)
  assert p["sampler_kv_bytes_per_device"] == 0  # engine.kind=sglang
  assert p["total_bytes_per_device"] < 80 * 2**30
  c.rl.micro_batch_size = 64
  assert plan.plan(c)["fits"]
  c.model.attention, c.model.logprob_chunk = "naive", 10240
  old = plan.plan(c)
  assert not old["fits"]
  with pytest.raises(plan.PlanError, match=r"largest parts: activations"):
    plan.check_fits(old)
  c.rl.micro_batch_size = 8
  assert plan.plan(c)["activation_bytes_per_device"] > 5 * p["activation_bytes_per_device"]


def test_tiny_plan_counts_the_sampler_cache_and_refuses_small_devices(tmp_path):
  c = _recipe("tiny", shape=(-1, 1, 1))
  p = plan.plan(c)
  assert p["fits"]
  m = p["model"]
  # engine.kind=jax: keys + values of every layer for the whole round, rows/slots bucketed.
  from synthagent_jax.inference import sampler
  rows = sampler.bucket(c.rl.tasks_per_step * c.rl.num_generations)
  assert (rows, c.engine.decode_stages) == (16, 1)
  # Prompt slots as the sampler buckets them: 768 tokens take 768 slots (1.5 x 512), not 1024.
  slots = sampler.prompt_bucket(c.rollout.max_total_tokens, fine_above=512) + sampler.bucket(
      c.rollout.max_new_tokens)
  assert slots == 768 + 64
  want = rows * slots * 2 * m.num_layers * m.num_kv_heads * m.head_dim * 4 + (1 << 30)
  assert p["sampler_kv_bytes_per_device"] == want
  c.engine.decode_stages = 3  # staged decoding: the 8- and 4-row stages copy their rows' caches
  assert plan.plan(c)["sampler_kv_bytes_per_device"] - (1 << 30) == (
      (16 + 8 + 4) / 16 * (want - (1 << 30)))
  c.engine.decode_stages = 1
  assert p["engine_params_bytes_per_device"] == 0  # one process: the sampler reads the learner's
  c.mesh.device_memory_gib = 0.5
  out = tmp_path / "plan.json"
  with pytest.raises(plan.PlanError, match="sampler KV cache"):
    plan.print_plan(c, str(out))
  import json
  written = json.loads(out.read_text())
  assert written["fits"] is False and written["model"]["attention"] == c.model.attention
  c.engine.mem_fraction = 1.5
  with pytest.raises(ValueError, match="mem_fraction"):
    plan.plan(c)


@pytest.mark.slow
def test_qwen3_8b_on_two_hosts_dry_run(tmp_path):
  """`launch.train --dry_run --plan_json` on 16 simulated devices (2 hosts x 8: fsdp 8 x tensor 2)
  with 30% of each 80 GB device for SGLang: exits 0 and writes a plan that fits."""
  import json
  import os
  import subprocess
  import sys
  out = tmp_path / "plan.json"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=16",
             JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/qwen3_8b.py", "--dry_run",
         f"--plan_json={out}", "--config.mesh.shape=(1,8,2)", "--config.engine.mem_fraction=0.3"]
  r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  p = json.loads(out.read_text())
  assert p["num_devices"] == 16 and p["fits"]
  assert p["total_bytes_per_device"] < 80 * 2**30


def test_multi_process_jax_engine_counts_the_drivers_params_copy():
  """Several processes with engine.kind=jax: process 0 keeps its own copy of the whole params,
  sharded over its local devices only (rl.state.process_local_params)."""
  c = _recipe("tiny", shape=(-1, 1, 1))
  one = plan.plan(c)
  c.mesh.num_processes = 2
  two = plan.plan(c)  # the plan's mesh: the visible devices, as a joined run's global mesh
  local = two["num_devices"] // 2
  # The whole model in float32, split over process 0's devices.
  assert two["engine_params_bytes_per_device"] == -(-one["num_params"] * 4 // local) > 0
  assert two["total_bytes_per_device"] == one["total_bytes_per_device"] + two[
      "engine_params_bytes_per_device"]
  c.engine.kind = "sglang"
  assert plan.plan(c)["engine_params_bytes_per_device"] == 0
