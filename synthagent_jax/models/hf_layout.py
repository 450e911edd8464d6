"""The correspondence between our Qwen parameters and Hugging Face tensors: names, layouts and
on-disk dtypes, shared by the importer (models/hf_io.py) and the streaming export
(models/hf_export.py).

Layout conversion: HF linear weights are [out, in]; ours are [in, *out_dims] (q/k/v/gate/up/
down/lm_head) or [*in_dims, out] (o_proj). Both are `W.T.reshape(ours)`; the inverse is
`ours.reshape(prod(in_dims), -1).T`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import ml_dtypes
import numpy as np

from synthagent_jax.models.config import ModelConfig

NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class Entry:
  """How one of our params maps to one HF tensor."""

  hf_name: str
  kind: str  # "linear": W.T.reshape; "flat": bias reshape; "same": identical layout
  num_in_dims: int = 1


_LAYER_ENTRIES = {
    ("input_norm", "weight"): ("input_layernorm.weight", "same", 1),
    ("post_attn_norm", "weight"): ("post_attention_layernorm.weight", "same", 1),
    ("attn", "q_kernel"): ("self_attn.q_proj.weight", "linear", 1),
    ("attn", "k_kernel"): ("self_attn.k_proj.weight", "linear", 1),
    ("attn", "v_kernel"): ("self_attn.v_proj.weight", "linear", 1),
    ("attn", "o_kernel"): ("self_attn.o_proj.weight", "linear", 2),
    ("attn", "q_bias"): ("self_attn.q_proj.bias", "flat", 1),
    ("attn", "k_bias"): ("self_attn.k_proj.bias", "flat", 1),
    ("attn", "v_bias"): ("self_attn.v_proj.bias", "flat", 1),
    ("attn", "o_bias"): ("self_attn.o_proj.bias", "same", 1),
    ("attn", "q_norm", "weight"): ("self_attn.q_norm.weight", "same", 1),
    ("attn", "k_norm", "weight"): ("self_attn.k_norm.weight", "same", 1),
    ("mlp", "gate_kernel"): ("mlp.gate_proj.weight", "linear", 1),
    ("mlp", "up_kernel"): ("mlp.up_proj.weight", "linear", 1),
    ("mlp", "down_kernel"): ("mlp.down_proj.weight", "linear", 1),
}


def param_entry(path: tuple[Any, ...]) -> Entry:
  """The HF tensor for one of our param paths (as given by nnx.to_flat_state)."""
  path = tuple(str(p) if not isinstance(p, int) else p for p in path)
  if path == ("embed",):
    return Entry("model.embed_tokens.weight", "same")
  if path == ("final_norm", "weight"):
    return Entry("model.norm.weight", "same")
  if path == ("lm_head",):
    return Entry("lm_head.weight", "linear", 1)
  if len(path) >= 3 and path[0] == "layers" and path[2:] in _LAYER_ENTRIES:
    name, kind, num_in = _LAYER_ENTRIES[path[2:]]
    return Entry(f"model.layers.{path[1]}.{name}", kind, num_in)
  raise ValueError(f"no Hugging Face name for parameter {'/'.join(map(str, path))}")


def hf_shape(entry: Entry, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF tensor shape that holds one of our params of `shape`."""
  if entry.kind == "linear":
    return (math.prod(shape[entry.num_in_dims:]), math.prod(shape[:entry.num_in_dims]))
  if entry.kind == "flat":
    return (math.prod(shape),)
  return tuple(shape)


def to_ours(w: np.ndarray, entry: Entry, shape: tuple[int, ...]) -> np.ndarray:
  expected = hf_shape(entry, shape)
  if tuple(w.shape) != expected:
    raise ValueError(f"tensor {entry.hf_name} has shape {tuple(w.shape)}, the config implies "
                     f"{expected}")
  return (w.T if entry.kind == "linear" else w).reshape(shape)


def to_hf(w: np.ndarray, entry: Entry) -> np.ndarray:
  if entry.kind == "linear":
    return np.ascontiguousarray(
        w.reshape(math.prod(w.shape[:entry.num_in_dims]), -1).T)
  if entry.kind == "flat":
    return w.reshape(-1)
  return w


def write_json(file_path: str, obj: dict[str, Any]) -> None:
  with open(file_path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def write_configs(cfg: ModelConfig, path: str, dtype: str) -> None:
  """config.json (+ generation_config.json when the config has bos/eos ids)."""
  hf_config = cfg.to_hf_dict()
  hf_config["torch_dtype"] = dtype
  write_json(os.path.join(path, "config.json"), hf_config)
  if cfg.eos_token_id is not None or cfg.bos_token_id is not None:
    write_json(os.path.join(path, "generation_config.json"),
                {k: v for k, v in (("bos_token_id", hf_config["bos_token_id"]),
                                   ("eos_token_id", hf_config["eos_token_id"])) if v is not None})


def remove_stale_shards(path: str) -> None:
  """Deletes a previous export's safetensors files and index from `path` (a save with another
  sharding would otherwise leave files that confuse loaders)."""
  for stale in os.listdir(path):
    if stale.startswith("model") and (stale.endswith(".safetensors")
                                      or stale == "model.safetensors.index.json"):
      os.remove(os.path.join(path, stale))


def dtype_name(dtype: Any) -> str:
  """A dtype's name ("float32", "bfloat16", ...), given the name or a numpy/JAX dtype
  (`jnp.float32`, `np.dtype("float16")`, `ml_dtypes.bfloat16`). Names pass through unchecked:
  ModelConfig and the writers reject the ones they do not support."""
  if isinstance(dtype, str):
    return dtype
  try:
    return np.dtype(dtype).name
  except TypeError as e:
    raise ValueError(f"not a dtype or a dtype name: {dtype!r}") from e
