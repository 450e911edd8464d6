"""Qwen2/Qwen2.5/Qwen3 decoders in Flax NNX, their KV cache, and HF checkpoint import/export."""

from synthagent_jax.models.config import ModelConfig
from synthagent_jax.models.hf_io import from_pretrained, load_hf_config, save_pretrained
from synthagent_jax.models.qwen import (KVCache, Qwen, abstract_model, init_model,
                                        init_params, logical_axes)

__all__ = [
    "KVCache", "ModelConfig", "Qwen", "abstract_model", "from_pretrained", "init_model",
    "init_params", "load_hf_config", "logical_axes", "save_pretrained",
]
