"""Hugging Face checkpoint import/export for Qwen models, without torch.

`from_pretrained` streams tensors one at a time from (possibly sharded) safetensors files into
an abstract model, so peak host memory is the model plus one tensor. `save_pretrained` writes a
directory `transformers.AutoModelForCausalLM.from_pretrained` loads to the same logits.

`save_pretrained_streaming` writes the same layout (bf16 by default) for the SGLang weight sync:
tensor by tensor from sharded params, each process writing its share of the files, no host ever
holding more than about one tensor.

Layout conversion: HF linear weights are [out, in]; ours are [in, *out_dims] (q/k/v/gate/up/
down/lm_head) or [*in_dims, out] (o_proj). Both are `W.T.reshape(ours)`; the inverse is
`ours.reshape(prod(in_dims), -1).T`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec
from safetensors import safe_open
from safetensors.numpy import save_file

from synthagent_jax.models.config import ModelConfig
from synthagent_jax.models.qwen import Qwen, abstract_model

_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Derived buffers some older checkpoints store; they are recomputed from the config.
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class _Entry:
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


def _entry(path: tuple[Any, ...]) -> _Entry:
  """The HF tensor for one of our param paths (as given by nnx.to_flat_state)."""
  path = tuple(str(p) if not isinstance(p, int) else p for p in path)
  if path == ("embed",):
    return _Entry("model.embed_tokens.weight", "same")
  if path == ("final_norm", "weight"):
    return _Entry("model.norm.weight", "same")
  if path == ("lm_head",):
    return _Entry("lm_head.weight", "linear", 1)
  if len(path) >= 3 and path[0] == "layers" and path[2:] in _LAYER_ENTRIES:
    name, kind, num_in = _LAYER_ENTRIES[path[2:]]
    return _Entry(f"model.layers.{path[1]}.{name}", kind, num_in)
  raise ValueError(f"no Hugging Face name for parameter {'/'.join(map(str, path))}")


def _hf_shape(entry: _Entry, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF tensor shape that holds one of our params of `shape`."""
  if entry.kind == "linear":
    return (math.prod(shape[entry.num_in_dims:]), math.prod(shape[:entry.num_in_dims]))
  if entry.kind == "flat":
    return (math.prod(shape),)
  return tuple(shape)


def _to_ours(w: np.ndarray, entry: _Entry, shape: tuple[int, ...]) -> np.ndarray:
  expected = _hf_shape(entry, shape)
  if tuple(w.shape) != expected:
    raise ValueError(f"tensor {entry.hf_name} has shape {tuple(w.shape)}, the config implies "
                     f"{expected}")
  return (w.T if entry.kind == "linear" else w).reshape(shape)


def _to_hf(w: np.ndarray, entry: _Entry) -> np.ndarray:
  if entry.kind == "linear":
    return np.ascontiguousarray(
        w.reshape(math.prod(w.shape[:entry.num_in_dims]), -1).T)
  if entry.kind == "flat":
    return w.reshape(-1)
  return w


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


def from_pretrained(path: str, dtype: str = "float32", param_dtype: str = "float32",
                    remat: str = "none",
                    sharding: Callable[[PartitionSpec], jax.sharding.Sharding] | Any = None
                    ) -> Qwen:
  """Loads a Hugging Face Qwen2/Qwen2.5/Qwen3 checkpoint directory without torch.

  Args:
    path: directory with config.json and model.safetensors (or sharded safetensors + index).
    dtype: compute dtype of the returned model.
    param_dtype: storage dtype of its parameters (any checkpoint dtype is converted).
    remat: rematerialisation policy name (see ModelConfig.remat).
    sharding: maps a param's logical PartitionSpec (e.g. P('vocab', 'embed')) to the Sharding
      it should be created with, or is a tree of Shardings shaped like the model's params (e.g.
      `rl.state.StateSpec.shardings.params`); each tensor is placed straight onto its shards
      (every process reads the tensors and keeps only its own shards). None: the default device.

  Raises:
    ValueError: unsupported config, a tensor of the wrong shape, unexpected or missing tensors.
  """
  cfg = load_hf_config(path, dtype=dtype, param_dtype=param_dtype, remat=remat)
  graphdef, state = nnx.split(abstract_model(cfg))
  expected, placement = {}, _placement(sharding)
  for param_path, variable in nnx.to_flat_state(state):
    expected[_entry(param_path).hf_name] = (_entry(param_path), variable, param_path)
  np_dtype = _NP_DTYPES[param_dtype]
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
        w = _to_ours(f.get_tensor(name), entry, shape).astype(np_dtype, copy=False)
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


def save_pretrained(model: Qwen, path: str, dtype: str | None = None,
                    max_shard_bytes: int | None = None) -> None:
  """Writes config.json and safetensors that transformers loads to the same logits.

  Args:
    model: the model (its parameters must be addressable from this process).
    path: output directory (created if absent).
    dtype: tensor dtype on disk; default the model's param_dtype.
    max_shard_bytes: split into model-0000i-of-0000n.safetensors + index beyond this size.
  """
  cfg = model.config
  dtype = cfg.param_dtype if dtype is None else dtype
  if dtype not in _NP_DTYPES:
    raise ValueError(f"save_pretrained: dtype must be one of {sorted(_NP_DTYPES)}, got {dtype!r}")
  os.makedirs(path, exist_ok=True)
  for stale in os.listdir(path):  # a previous save with other sharding would confuse loaders
    if stale.startswith("model") and (stale.endswith(".safetensors")
                                      or stale == "model.safetensors.index.json"):
      os.remove(os.path.join(path, stale))
  _write_configs(cfg, path, dtype)

  shards, current, current_bytes = [], {}, 0
  for param_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    entry = _entry(param_path)
    w = _to_hf(np.asarray(jax.device_get(variable.get_value())), entry)
    w = np.ascontiguousarray(w.astype(_NP_DTYPES[dtype]))
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
  _write_json(os.path.join(path, "model.safetensors.index.json"),
              {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_shard(path: str, index: int, tensors: dict[str, np.ndarray]):
  tmp_path = os.path.join(path, f".shard-{index:05d}.safetensors.tmp")
  save_file(tensors, tmp_path, metadata={"format": "pt"})
  return tmp_path, list(tensors), sum(t.nbytes for t in tensors.values())


def _write_json(file_path: str, obj: dict[str, Any]) -> None:
  with open(file_path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


# -- streaming export (weight sync at scale) ------------------------------------------------------

# safetensors dtype codes (https://github.com/huggingface/safetensors, "Format").
_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
DEFAULT_STREAM_SHARD_BYTES = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class ExportStats:
  """What `save_pretrained_streaming` did on this process.

  Attributes:
    path: the export directory.
    bytes_written: tensor bytes this process wrote (safetensors headers and json not counted).
    total_bytes: tensor bytes of the whole export (all processes).
    seconds: wall time of the export on this process, barriers included.
    files: safetensors file names this process wrote.
  """

  path: str
  bytes_written: int
  total_bytes: int
  seconds: float
  files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _PlannedTensor:
  hf_name: str
  entry: _Entry
  hf_shape: tuple[int, ...]
  nbytes: int


def _plan_shards(tensors: list[_PlannedTensor], max_shard_bytes: int
                 ) -> list[list[_PlannedTensor]]:
  """Consecutive tensors grouped into files of at most max_shard_bytes (a bigger tensor alone)."""
  shards, current, size = [], [], 0
  for t in tensors:
    if current and size + t.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(t)
    size += t.nbytes
  if current:
    shards.append(current)
  return shards


def _safetensors_header(shard: list[_PlannedTensor], dtype: str) -> bytes:
  """The 8-byte length + JSON header of a safetensors file holding `shard` in order."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for t in shard:
    header[t.hf_name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(t.hf_shape),
                         "data_offsets": [offset, offset + t.nbytes]}
    offset += t.nbytes
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # keeps the tensor data 8-byte aligned, as safetensors does
  return len(text).to_bytes(8, "little") + text


@functools.partial(jax.jit, static_argnames=("kind", "num_in_dims", "dtype"))
def _device_hf_layout(w, kind: str, num_in_dims: int, dtype: str):
  """`_to_hf(w.astype(dtype))` on the device: XLA's transpose is several times numpy's."""
  w = w.astype(_NP_DTYPES[dtype])
  if kind == "linear":
    return w.reshape(math.prod(w.shape[:num_in_dims]), -1).T
  if kind == "flat":
    return w.reshape(-1)
  return w


def _hf_tensor(value: Any, entry: _Entry, dtype: str) -> np.ndarray:
  """One parameter in its HF layout and `dtype`, as a host numpy array, gathered alone.

  A jax.Array is cast and transposed on its devices (one tensor's temporary there, half the
  transfer in bf16); one sharded across processes is then all-gathered (a collective: every
  process must call this for the same tensors in the same order).
  """
  if isinstance(value, jax.Array):
    w = _device_hf_layout(value, entry.kind, entry.num_in_dims, dtype)
    if not w.is_fully_addressable:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.ascontiguousarray(multihost_utils.process_allgather(w, tiled=True))
    return np.ascontiguousarray(jax.device_get(w))
  return np.ascontiguousarray(_to_hf(np.asarray(value), entry).astype(_NP_DTYPES[dtype]))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def save_pretrained_streaming(model: Any, path: str, *, dtype: str = "bfloat16",
                              max_shard_bytes: int = DEFAULT_STREAM_SHARD_BYTES,
                              process_index: int | None = None,
                              process_count: int | None = None) -> ExportStats:
  """Writes an HF checkpoint tensor by tensor, never holding the whole model on one host.

  The output is what `save_pretrained` writes (config.json, generation_config.json,
  model-0000i-of-0000n.safetensors + model.safetensors.index.json, always sharded form), loaded
  by transformers and SGLang alike. Each tensor is cast and transposed to the HF layout on its
  devices, gathered alone (from its device shards, or all-gathered across processes) and
  appended to its file straight away: the safetensors headers are computed up front from the
  shapes, so peak host memory is about one tensor (no shard buffer).

  Several processes: the file plan is the same on every process (it depends only on shapes);
  file i is written by process i % process_count, and the files are sized so that each process
  gets at least one when the model allows (max_shard_bytes is lowered to total / process_count).
  Process 0 removes a previous export's files first, writes config.json and, after a barrier
  (every process's files are complete), the index. Every process must call this function with
  the same arguments: tensors sharded across processes are gathered collectively.

  Args:
    model: an nnx Qwen model, or a `(graphdef, params)` pair as `rl.state.split_params` gives.
    path: output directory (created if absent; shared by all processes).
    dtype: tensor dtype on disk: "bfloat16" (default), "float32" or "float16".
    max_shard_bytes: largest safetensors file (a bigger single tensor gets a file of its own).
    process_index, process_count: this process and how many write (default: jax's). Only for
      tests or exotic launchers: with jax.process_count() == 1 no barrier is run, so calling
      with process_index 0 first (it clears the directory), then 1..n-1, reproduces a
      multi-process export.

  Returns:
    ExportStats of this process.

  Raises:
    ValueError: an unknown dtype, a bad process_index/count, a param with no HF name.
    TypeError: `model` is neither a Qwen model nor a (graphdef, params) pair.
  """
  t0 = time.perf_counter()
  if dtype not in _SAFETENSORS_DTYPES:
    raise ValueError(f"save_pretrained_streaming: dtype must be one of "
                     f"{sorted(_SAFETENSORS_DTYPES)}, got {dtype!r}")
  if max_shard_bytes < 1:
    raise ValueError(f"save_pretrained_streaming: max_shard_bytes must be >= 1, got "
                     f"{max_shard_bytes}")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"save_pretrained_streaming: need 0 <= process_index < process_count, got "
                     f"{process_index} and {process_count}")
  if isinstance(model, tuple) and len(model) == 2:
    model = nnx.merge(*model)  # wraps the same arrays: no copy
  if not isinstance(model, nnx.Module) or not isinstance(getattr(model, "config", None),
                                                          ModelConfig):
    raise TypeError(f"save_pretrained_streaming needs a Qwen model or a (graphdef, params) pair, "
                    f"got {type(model).__name__}")
  cfg = model.config

  itemsize = np.dtype(_NP_DTYPES[dtype]).itemsize
  values, planned = {}, []
  for param_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    entry = _entry(param_path)
    shape = tuple(variable.get_value().shape)
    hf_shape = _hf_shape(entry, shape)
    planned.append(_PlannedTensor(entry.hf_name, entry, hf_shape,
                                  math.prod(hf_shape) * itemsize))
    values[entry.hf_name] = variable.get_value()
  total = sum(t.nbytes for t in planned)
  shard_bytes = min(max_shard_bytes, max(1, -(-total // process_count)))
  shards = _plan_shards(planned, shard_bytes)
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]

  os.makedirs(path, exist_ok=True)
  if process_index == 0:
    for stale in os.listdir(path):  # a previous export with another plan would confuse loaders
      if stale.startswith("model") and (stale.endswith(".safetensors")
                                        or stale == "model.safetensors.index.json"):
        os.remove(os.path.join(path, stale))
    _write_configs(cfg, path, dtype)
  _barrier(f"save_pretrained_streaming:{path}:start")

  written, files = 0, []
  for i, shard in enumerate(shards):
    mine = i % process_count == process_index
    out = None
    if mine:
      tmp = os.path.join(path, f".{names[i]}.tmp")
      out = open(tmp, "wb")  # pylint: disable=consider-using-with
      out.write(_safetensors_header(shard, dtype))
    try:
      for t in shard:
        value = values[t.hf_name]
        if not mine and (not isinstance(value, jax.Array) or value.is_fully_addressable):
          continue  # another process writes it, and no collective needs this process
        w = _hf_tensor(value, t.entry, dtype)
        if not mine:
          del w
          continue
        if w.shape != t.hf_shape or w.nbytes != t.nbytes:  # the header already promised these
          raise RuntimeError(f"{t.hf_name}: converted to {w.shape} {w.dtype}, planned "
                             f"{t.hf_shape} in {dtype}")
        out.write(w.reshape(-1).view(np.uint8).data)
        written += w.nbytes
        del w
    except BaseException:
      if out is not None:  # no half-written file left behind
        out.close()
        os.remove(tmp)
      raise
    if out is not None:
      out.close()
      os.replace(tmp, os.path.join(path, names[i]))
      files.append(names[i])

  _barrier(f"save_pretrained_streaming:{path}:files")
  if process_index == 0:
    weight_map = {t.hf_name: names[i] for i, shard in enumerate(shards) for t in shard}
    _write_json(os.path.join(path, "model.safetensors.index.json"),
                {"metadata": {"total_size": total}, "weight_map": weight_map})
  _barrier(f"save_pretrained_streaming:{path}:index")
  return ExportStats(path=path, bytes_written=written, total_bytes=total,
                     seconds=time.perf_counter() - t0, files=tuple(files))


def _write_configs(cfg: ModelConfig, path: str, dtype: str) -> None:
  """config.json (+ generation_config.json when the config has bos/eos ids)."""
  hf_config = cfg.to_hf_dict()
  hf_config["torch_dtype"] = dtype
  _write_json(os.path.join(path, "config.json"), hf_config)
  if cfg.eos_token_id is not None or cfg.bos_token_id is not None:
    _write_json(os.path.join(path, "generation_config.json"),
                {k: v for k, v in (("bos_token_id", hf_config["bos_token_id"]),
                                   ("eos_token_id", hf_config["eos_token_id"])) if v is not None})
