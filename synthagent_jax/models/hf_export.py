"""Streaming Hugging Face export for the SGLang weight sync: `save_pretrained_streaming` writes
the layout `models.save_pretrained` writes (bf16 by default, always the sharded form) tensor by
tensor from sharded params, each process writing its share of the files, no host ever holding
more than about one tensor. `ExportStats` says what one process did.

Names, layouts and dtypes come from models/hf_layout.py, shared with the importer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from synthagent_jax.models import hf_layout
from synthagent_jax.models.config import ModelConfig


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
  entry: hf_layout.Entry
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
  """`hf_layout.to_hf(w.astype(dtype))` on the device: XLA's transpose is several times numpy's."""
  w = w.astype(hf_layout.NP_DTYPES[dtype])
  if kind == "linear":
    return w.reshape(math.prod(w.shape[:num_in_dims]), -1).T
  if kind == "flat":
    return w.reshape(-1)
  return w


def _hf_tensor(value: Any, entry: hf_layout.Entry, dtype: str) -> np.ndarray:
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
  w = hf_layout.to_hf(np.asarray(value), entry)
  return np.ascontiguousarray(w.astype(hf_layout.NP_DTYPES[dtype]))


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

  itemsize = np.dtype(hf_layout.NP_DTYPES[dtype]).itemsize
  values, planned = {}, []
  for param_path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    entry = hf_layout.param_entry(param_path)
    shape = tuple(variable.get_value().shape)
    shape_hf = hf_layout.hf_shape(entry, shape)
    planned.append(_PlannedTensor(entry.hf_name, entry, shape_hf, math.prod(shape_hf) * itemsize))
    values[entry.hf_name] = variable.get_value()
  total = sum(t.nbytes for t in planned)
  shard_bytes = min(max_shard_bytes, max(1, -(-total // process_count)))
  shards = _plan_shards(planned, shard_bytes)
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]

  os.makedirs(path, exist_ok=True)
  if process_index == 0:
    hf_layout.remove_stale_shards(path)
    hf_layout.write_configs(cfg, path, dtype)
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
    hf_layout.write_json(os.path.join(path, "model.safetensors.index.json"),
                {"metadata": {"total_size": total}, "weight_map": weight_map})
  _barrier(f"save_pretrained_streaming:{path}:index")
  return ExportStats(path=path, bytes_written=written, total_bytes=total,
                     seconds=time.perf_counter() - t0, files=tuple(files))
