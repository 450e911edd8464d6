"""Hugging Face checkpoint import/export for Qwen models, without torch.

`from_pretrained` streams tensors one at a time from (possibly sharded) safetensors files into
an abstract model, so peak host memory is the model plus one tensor. `save_pretrained` writes a
directory `transformers.AutoModelForCausalLM.from_pretrained` loads to the same logits.

The parameter <-> HF tensor correspondence (names, layouts, dtypes) is models/hf_layout.py; the
streaming bf16 export for the SGLang weight sync is models/hf_export.py.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec
from safetensors import safe_open
from safetensors.numpy import save_file

from synthagent_jax.models import hf_layout
from synthagent_jax.models.config import ModelConfig
from synthagent_jax.models.qwen import Qwen, abstract_model

# Derived buffers some older checkpoints store; they are recomputed from the config.
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


def load_hf_config(path: str, **overrides: Any) -> ModelConfig:
  """ModelConfig from `path`/config.json; overrides set dtype, param_dtype, remat, ..."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"no config.json in checkpoint directory {path!r}")
  with open(config_path) as f:
    return ModelConfig.from_hf_dict(json.load(f), **overrides)


def _safetensors_files(path: str) -> list[str]:
  index_path = os.path.join(path, "model.safetensors.index.json")
  single_path = os.path.join(path, "model.safetensors")
  if os.path.isfile(index_path):
    with open(index_path) as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
      raise ValueError(f"{index_path} has no weight_map of tensor name -> shard file name")
    files = sorted(set(weight_map.values()))
    root = os.path.realpath(path)
    outside = [name for name in files
               if os.path.dirname(os.path.realpath(os.path.join(root, name))) != root]
    if outside:  # a shard must be a file of the checkpoint directory itself
      raise ValueError(f"{index_path} names shard files outside the checkpoint directory: "
                       f"{outside}")
    absent = [name for name in files if not os.path.isfile(os.path.join(path, name))]
    if absent:
      raise FileNotFoundError(f"{index_path} names missing shard files {absent}")
    return [os.path.join(path, name) for name in files]
  if os.path.isfile(single_path):
    return [single_path]
  raise FileNotFoundError(
      f"no model.safetensors or model.safetensors.index.json in {path!r} (only safetensors "
      "checkpoints are supported)")


def from_pretrained(path: str, dtype: Any = "float32", param_dtype: Any = "float32",
                    remat: str = "none",
                    sharding: Callable[[PartitionSpec], jax.sharding.Sharding] | Any = None
                    ) -> Qwen:
  """Loads a Hugging Face Qwen2/Qwen2.5/Qwen3 checkpoint directory without torch.

  Args:
    path: directory with config.json and model.safetensors (or sharded safetensors + index).
    dtype: compute dtype of the returned model: a name ("float32", "bfloat16", "float16") or
      the numpy/JAX dtype (`jnp.bfloat16`).
    param_dtype: storage dtype of its parameters, in either form (any checkpoint dtype is
      converted).
    remat: rematerialisation policy name (see ModelConfig.remat).
    sharding: maps a param's logical PartitionSpec (e.g. P('vocab', 'embed')) to the Sharding
      it should be created with, or is a tree of Shardings shaped like the model's params (e.g.
      `rl.state.StateSpec.shardings.params`); each tensor is placed straight onto its shards
      (every process reads the tensors and keeps only its own shards). None: the default device.

  Raises:
    ValueError: unsupported config, a tensor of the wrong shape, unexpected or missing tensors.
  """
  dtype, param_dtype = hf_layout.dtype_name(dtype), hf_layout.dtype_name(param_dtype)
  cfg = load_hf_config(path, dtype=dtype, param_dtype=param_dtype, remat=remat)
  graphdef, state = nnx.split(abstract_model(cfg))
  expected, placement = {}, _placement(sharding)
  for param_path, variable in nnx.to_flat_state(state):
    entry = hf_layout.param_entry(param_path)
    expected[entry.hf_name] = (entry, variable, param_path)
  np_dtype = hf_layout.NP_DTYPES[param_dtype]
  loaded, unexpected, tied_head = set(), [], None
  for file_path in _safetensors_files(path):
    with safe_open(file_path, framework="numpy") as f:
      for name in f.keys():
        if name.endswith(_IGNORED_TENSOR_SUFFIXES):
          continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
          tied_head = f.get_tensor(name)
          continue
        if name not in expected:
          unexpected.append(name)
          continue
        if name in loaded:
          raise ValueError(f"tensor {name} appears in more than one safetensors file")
        entry, variable, param_path = expected[name]
        shape = tuple(variable.get_value().shape)
        w = hf_layout.to_ours(f.get_tensor(name), entry, shape).astype(np_dtype, copy=False)
        if sharding is None:
          variable.set_value(jnp.asarray(w))
        else:
          target = placement(param_path, variable)
          variable.set_value(jax.make_array_from_callback(shape, target, lambda i, w=w: w[i]))
        del w
        loaded.add(name)
  missing = sorted(set(expected) - loaded)
  if unexpected or missing:
    problems = [f"{label} tensors {names}" for label, names in
                (("unexpected", sorted(unexpected)), ("missing", missing)) if names]
    raise ValueError(f"checkpoint {path!r} does not match its config.json: "
                     + "; ".join(problems))
  model = nnx.merge(graphdef, state)
  # Shard by shard: the embedding may span processes (never gathered onto one device).
  if tied_head is not None and not all(
      np.array_equal(np.asarray(tied_head[s.index], np.float32), np.asarray(s.data, np.float32))
      for s in model.embed.get_value().addressable_shards):
    raise ValueError("config.json says tie_word_embeddings=true but lm_head.weight differs from "
                     "model.embed_tokens.weight")
  return model


def _placement(sharding):
  """(param_path, variable) -> Sharding, from either form of `from_pretrained`'s `sharding`."""
  if sharding is None or callable(sharding):
    return lambda _, variable: sharding(
        PartitionSpec(*variable.get_metadata()["out_sharding"]))
  by_path = dict(nnx.to_flat_state(sharding))

  def lookup(param_path, _):
    if param_path not in by_path:
      raise ValueError(f"sharding tree has no entry for parameter "
                       f"{'/'.join(map(str, param_path))}")
    return by_path[param_path]
  return lookup


def save_pretrained(model: Qwen, path: str, dtype: Any = None,
                    max_shard_bytes: int | None = None) -> None:
  """Writes config.json and safetensors that transformers loads to the same logits.

  Args:
    model: the model (its parameters must be addressable from this process).
    path: output directory (created if absent).
    dtype: tensor dtype on disk, a name or a numpy/JAX dtype; default the model's param_dtype.
    max_shard_bytes: split into model-0000i-of-0000n.safetensors + index beyond this size.
  """
  cfg = model.config
  dtype = cfg.param_dtype if dtype is None else hf_layout.dtype_name(dtype)
  if dtype not in hf_layout.NP_DTYPES:
    raise ValueError(f"save_pretrained: dtype must be one of {sorted(hf_layout.NP_DTYPES)}, "
                     f"got {dtype!r}")
  os.makedirs(path, exist_ok=True)
  hf_layout.remove_stale_shards(path)
  hf_layout.write_configs(cfg, path, dtype)

  shards, current, current_bytes = [], {}, 0
  for param_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    entry = hf_layout.param_entry(param_path)
    w = hf_layout.to_hf(np.asarray(jax.device_get(variable.get_value())), entry)
    w = np.ascontiguousarray(w.astype(hf_layout.NP_DTYPES[dtype]))
    if max_shard_bytes and current and current_bytes + w.nbytes > max_shard_bytes:
      shards.append(_write_shard(path, len(shards), current))
      current, current_bytes = {}, 0
    current[entry.hf_name] = w
    current_bytes += w.nbytes
  if current:
    shards.append(_write_shard(path, len(shards), current))

  if len(shards) == 1:
    os.replace(shards[0][0], os.path.join(path, "model.safetensors"))
    return
  weight_map, total = {}, 0
  for i, (tmp_path, names, nbytes) in enumerate(shards):
    final = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    os.replace(tmp_path, os.path.join(path, final))
    weight_map.update({name: final for name in names})
    total += nbytes
  hf_layout.write_json(os.path.join(path, "model.safetensors.index.json"),
              {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_shard(path: str, index: int, tensors: dict[str, np.ndarray]):
  tmp_path = os.path.join(path, f".shard-{index:05d}.safetensors.tmp")
  save_file(tensors, tmp_path, metadata={"format": "pt"})
  return tmp_path, list(tensors), sum(t.nbytes for t in tensors.values())
