"""Toy models shared by every room's tests.

    from tests import toys
    cfg = toys.tiny_model_config("qwen3", vocab_size=97)      # a models.ModelConfig
    model = toys.tiny_model(vocab_size=300, seed=0)          # random-weight JAX model, no torch
    path = toys.write_hf_checkpoint(tmp_path, "qwen2")       # an HF checkpoint written by transformers
    hf_model = toys.load_hf_reference(path)                  # the transformers model (torch, fp32)

Keep everything tiny (hidden 32-64, 2 layers): the test machine is a shared 2-core CPU.
"""

from __future__ import annotations

import tempfile
from typing import Any

from synthagent_jax import models

# Architecture of every toy unless overridden; head_dim 16 != hidden/heads for qwen3-style tests.
_TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
             num_kv_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def tiny_model_config(family: str = "qwen2", **overrides: Any) -> models.ModelConfig:
  """A models.ModelConfig of a tiny decoder; keyword overrides replace any field."""
  fields = dict(_TINY, family=family)
  fields.update(overrides)
  return models.ModelConfig(**fields)


def tiny_model(vocab_size: int = 128, seed: int = 0, family: str = "qwen2",
               **overrides: Any) -> models.Qwen:
  """A random-weight JAX model (no torch involved)."""
  return models.init_model(tiny_model_config(family, vocab_size=vocab_size, **overrides),
                           seed=seed)


def hf_config_kwargs(cfg: models.ModelConfig) -> dict[str, Any]:
  """transformers Qwen2Config/Qwen3Config kwargs for the same architecture."""
  kwargs = dict(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
      tie_word_embeddings=cfg.tie_word_embeddings, max_position_embeddings=256)
  if cfg.family == "qwen3":
    kwargs["attention_bias"] = bool(cfg.qkv_bias)
  return kwargs


def build_hf_model(family: str = "qwen2", seed: int = 0, std: float = 0.2, **overrides: Any):
  """A random-weight transformers model (torch, float32, eager attention, eval mode).

  Every parameter (norm weights and biases included) is drawn from N(0, std) so that a
  mistake in any of them shows up in the logits.
  """
  import torch  # tests only
  import transformers

  cfg = tiny_model_config(family, **overrides)
  config_cls = {"qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[family]
  model_cls = {"qwen2": transformers.Qwen2ForCausalLM,
               "qwen3": transformers.Qwen3ForCausalLM}[family]
  hf_config = config_cls(**hf_config_kwargs(cfg))
  hf_config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = model_cls(hf_config).to(torch.float32).eval()
  with torch.no_grad():
    for param in model.parameters():
      param.normal_(0.0, std)
  return model


def write_hf_checkpoint(tmp_path, family: str = "qwen2", seed: int = 0,
                        torch_dtype: str = "float32", max_shard_size: str | None = None,
                        **overrides: Any) -> str:
  """Writes a random-weight HF checkpoint with transformers' save_pretrained; returns its dir.

  Args:
    tmp_path: parent directory (a pytest tmp_path); the checkpoint goes to a subdirectory.
    family: "qwen2" or "qwen3".
    seed: torch seed of the random weights.
    torch_dtype: "float32" or "bfloat16" tensors on disk.
    max_shard_size: e.g. "20KB" to force sharded safetensors with an index.
    **overrides: ModelConfig fields (vocab_size, hidden_size, num_kv_heads, head_dim, ...).
  """
  import torch  # tests only

  model = build_hf_model(family, seed=seed, **overrides)
  if torch_dtype != "float32":
    model = model.to(getattr(torch, torch_dtype))
  path = tempfile.mkdtemp(prefix=f"hf_{family}_{torch_dtype}_", dir=str(tmp_path))
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(path, **kwargs)
  return path


def load_hf_reference(path: str):
  """The transformers model at `path` in float32 with eager attention (torch, tests only)."""
  import torch
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32, attn_implementation="eager")
  return model.eval()


def hf_logits(hf_model, input_ids_bt, attention_mask_bt=None):
  """float32 numpy logits [B, T, V] of a transformers model."""
  import torch

  ids = torch.as_tensor(input_ids_bt, dtype=torch.long)
  mask = None if attention_mask_bt is None else torch.as_tensor(attention_mask_bt,
                                                                 dtype=torch.long)
  with torch.no_grad():
    return hf_model(input_ids=ids, attention_mask=mask).logits.to(torch.float32).numpy()
