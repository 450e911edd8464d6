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
