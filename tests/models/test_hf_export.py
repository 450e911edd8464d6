"""`hf_export.save_pretrained_streaming`: the weight-sync export, checked against transformers.

The reference is transformers itself (torch, fp32, eager attention): a streamed export must load
there to our model's logits (exactly, in fp32: the same tensors as `save_pretrained` writes;
within bf16 rounding in bf16). Sharded params (8 simulated devices, conftest) and a two-process
run (jax.distributed on localhost, tests/models/hf_export_worker.py) must write the same bytes as
one process holding the whole model.
"""

import json
import os
import socket
import subprocess
import sys
import tracemalloc

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.models import hf_export
from synthagent_jax.rl import state as state_lib
from tests import toys

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES = [
    ("qwen2", dict(vocab_size=97)),
    ("qwen3", dict(vocab_size=97, head_dim=12, tie_word_embeddings=False)),
]


def _ids(vocab_size, batch=2, length=11, seed=0):
  return np.random.RandomState(seed).randint(0, vocab_size, (batch, length)).astype(np.int32)


def _tensors(path):
  """{name: numpy array} of every safetensors file of a checkpoint directory."""
  out = {}
  for name in sorted(os.listdir(path)):
    if name.endswith(".safetensors"):
      with safe_open(os.path.join(path, name), framework="numpy") as f:
        for key in f.keys():
          assert key not in out, f"{key} in two files"
          out[key] = f.get_tensor(key)
  return out


def _file_bytes(path):
  return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def _bf16_rounded(model):
  """A copy of `model` whose params are rounded to bf16 (and back to fp32)."""
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), state)
  return nnx.merge(graphdef, state)


@pytest.mark.parametrize("family,overrides", FAMILIES)
def test_fp32_export_equals_save_pretrained(tmp_path, family, overrides):
  model = models.from_pretrained(toys.write_hf_checkpoint(tmp_path, family, **overrides))
  old, new = str(tmp_path / "old"), str(tmp_path / "new")
  models.save_pretrained(model, old)
  stats = hf_export.save_pretrained_streaming(model, new, dtype="float32")
  want, got = _tensors(old), _tensors(new)
  assert sorted(want) == sorted(got)
  for name in want:
    assert got[name].dtype == np.float32 and np.array_equal(got[name], want[name]), name
  assert stats.bytes_written == stats.total_bytes == sum(w.nbytes for w in want.values())
  assert json.load(open(os.path.join(new, "config.json"))) == json.load(
      open(os.path.join(old, "config.json"))) | {"torch_dtype": "float32"}
  ids = _ids(97)
  np.testing.assert_array_equal(toys.hf_logits(toys.load_hf_reference(new), ids),
                                toys.hf_logits(toys.load_hf_reference(old), ids))


@pytest.mark.parametrize("family,overrides", FAMILIES)
def test_bf16_export_loads_in_transformers(tmp_path, family, overrides):
  model = models.from_pretrained(toys.write_hf_checkpoint(tmp_path, family, **overrides))
  path = str(tmp_path / "bf16")
  stats = hf_export.save_pretrained_streaming(model, path)
  tensors = _tensors(path)
  assert {w.dtype for w in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
  assert stats.total_bytes == sum(w.nbytes for w in tensors.values())
  assert json.load(open(os.path.join(path, "config.json")))["torch_dtype"] == "bfloat16"
  ids = _ids(97)
  hf = toys.hf_logits(toys.load_hf_reference(path), ids)
  # The layout is exact: transformers on the bf16 tensors == our model on bf16-rounded params.
  rounded = np.asarray(_bf16_rounded(model)(jnp.asarray(ids)))
  np.testing.assert_allclose(hf, rounded, atol=1e-4, rtol=0)
  # And the rounding costs what bf16 costs (8 mantissa bits), not more.
  ours = np.asarray(model(jnp.asarray(ids)))
  assert np.max(np.abs(hf - ours)) <= 2e-2 * np.max(np.abs(ours))
  # Our own loader reads the bf16 export back (the policy server casts it to fp32).
  back = models.from_pretrained(path)
  np.testing.assert_allclose(np.asarray(back(jnp.asarray(ids))), rounded, atol=1e-5, rtol=0)


def test_bf16_bytes_equal_save_pretrained_bf16(tmp_path):
  # The device-side cast (round to nearest even) matches ml_dtypes' host cast bit for bit.
  model = toys.tiny_model(seed=3, tie_word_embeddings=False)
  models.save_pretrained(model, str(tmp_path / "old"), dtype="bfloat16")
  hf_export.save_pretrained_streaming(model, str(tmp_path / "new"))
  want, got = _tensors(str(tmp_path / "old")), _tensors(str(tmp_path / "new"))
  assert sorted(want) == sorted(got)
  for name in want:
    assert want[name].tobytes() == got[name].tobytes(), name


def test_files_index_and_simulated_processes(tmp_path):
  model = toys.tiny_model(seed=1, tie_word_embeddings=False)
  one = str(tmp_path / "one")
  stats = hf_export.save_pretrained_streaming(model, one, max_shard_bytes=20_000)
  index = json.load(open(os.path.join(one, "model.safetensors.index.json")))
  files = sorted(f for f in os.listdir(one) if f.endswith(".safetensors"))
  assert len(files) > 2 and files == sorted(set(index["weight_map"].values()))
  assert list(stats.files) == files and index["metadata"]["total_size"] == stats.total_bytes
  for name in files:  # the headers we compute are the published format: safetensors reads them
    with safe_open(os.path.join(one, name), framework="numpy") as f:
      assert all(index["weight_map"][k] == name for k in f.keys())
  assert not [f for f in os.listdir(one) if f.startswith(".")]  # no temporary files left

  # Three processes, run one after the other (process 0 first: it clears the directory).
  three = str(tmp_path / "three")
  per_process = [hf_export.save_pretrained_streaming(model, three, max_shard_bytes=20_000,
                                                 process_index=i, process_count=3)
                 for i in range(3)]
  assert all(s.files for s in per_process)  # every process wrote a file of its own
  assert sum(s.bytes_written for s in per_process) == stats.total_bytes
  assert sorted(f for s in per_process for f in s.files) == sorted(
      f for f in os.listdir(three) if f.endswith(".safetensors"))
  want, got = _tensors(one), _tensors(three)
  assert sorted(want) == sorted(got)
  for name in want:
    assert want[name].tobytes() == got[name].tobytes(), name
  # Our loader and transformers both read the multi-file export.
  ids = _ids(128)
  np.testing.assert_allclose(toys.hf_logits(toys.load_hf_reference(three), ids),
                             np.asarray(models.from_pretrained(three)(jnp.asarray(ids))),
                             atol=1e-4, rtol=0)


def test_a_second_export_replaces_the_first(tmp_path):
  path = str(tmp_path / "x")
  hf_export.save_pretrained_streaming(toys.tiny_model(seed=0), path, max_shard_bytes=10_000)
  hf_export.save_pretrained_streaming(toys.tiny_model(seed=1), path)
  assert sorted(os.listdir(path)) == ["config.json", "model-00001-of-00001.safetensors",
                                      "model.safetensors.index.json"]


def test_peak_host_memory_is_about_one_tensor(tmp_path):
  model = toys.tiny_model(vocab_size=256, hidden_size=128, intermediate_size=512, num_layers=4,
                          tie_word_embeddings=False)
  total = sum(p.nbytes for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  largest = max(p.nbytes for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

  def peak(fn):
    tracemalloc.start()
    try:
      fn()
      return tracemalloc.get_traced_memory()[1]
    finally:
      tracemalloc.stop()

  streamed = peak(lambda: hf_export.save_pretrained_streaming(model, str(tmp_path / "s"),
                                                          dtype="float32"))
  gathered = peak(lambda: models.save_pretrained(model, str(tmp_path / "g")))
  # Host (numpy) params: every copy the export makes is a numpy array that tracemalloc sees (the
  # jax path's converted copy lives in an XLA buffer; benchmarks/weight_sync measures its RSS).
  graphdef, params = nnx.split(model, nnx.Param)
  on_host = peak(lambda: hf_export.save_pretrained_streaming(
      (graphdef, jax.device_get(params)), str(tmp_path / "h"), dtype="float32"))
  # The control shows the measure sees a whole-model gather; the streamed export holds about one
  # tensor (read + transposed copy).
  assert gathered > 0.9 * total
  for got in (streamed, on_host):
    assert got < 3 * largest + 256 * 1024 and got < 0.3 * total, (got, total)


def test_sharded_params_export_the_same_bytes(tmp_path):
  assert jax.device_count() >= 8
  cfg = toys.tiny_model_config(tie_word_embeddings=False)
  graphdef, host = state_lib.split_params(models.init_model(cfg, seed=0))
  host = jax.device_get(host)
  _, abstract, logical = state_lib.abstract_params(cfg)
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))
  sharded = jax.device_put(host, parallel.tree_shardings(logical, abstract, mesh,
                                                         parallel.DEFAULT_RULES))
  assert [p for p in jax.tree.leaves(sharded) if len(p.sharding.device_set) == 8
          and not p.sharding.is_fully_replicated], "the mesh rules should shard some params"
  for dtype in ("bfloat16", "float32"):
    a, b = str(tmp_path / f"sharded_{dtype}"), str(tmp_path / f"host_{dtype}")
    hf_export.save_pretrained_streaming((graphdef, sharded), a, dtype=dtype, max_shard_bytes=30_000)
    hf_export.save_pretrained_streaming((graphdef, host), b, dtype=dtype, max_shard_bytes=30_000)
    assert _file_bytes(a) == _file_bytes(b)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(tmp_path):
  out = str(tmp_path / "two")
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = [subprocess.Popen([sys.executable, "-m", "tests.models.hf_export_worker", str(port),
                             str(i), "2", out], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=300)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"
  stats = [json.load(open(os.path.join(tmp_path, f"stats_{i}.json"))) for i in range(2)]
  assert all(s["files"] for s in stats)  # both processes wrote files
  assert stats[0]["across_processes"] > 0  # and some params really were split across processes
  # The same params (gathered by the worker) exported by one process.
  params = dict(np.load(os.path.join(tmp_path, "params.npz")))
  cfg = toys.tiny_model_config(tie_word_embeddings=False)
  graphdef, abstract = state_lib.split_params(toys.tiny_model(tie_word_embeddings=False))
  flat = [params[f"p{i}"] for i in range(len(jax.tree.leaves(abstract)))]
  host = jax.tree.unflatten(jax.tree.structure(abstract), flat)
  one = str(tmp_path / "one")
  hf_export.save_pretrained_streaming((graphdef, host), one, max_shard_bytes=20_000,
                                  process_count=2)  # the same file plan as two processes
  hf_export.save_pretrained_streaming((graphdef, host), one, max_shard_bytes=20_000,
                                  process_index=1, process_count=2)
  assert cfg.vocab_size == 128 and _file_bytes(out) == _file_bytes(one)


def test_bad_arguments_are_named(tmp_path):
  model = toys.tiny_model()
  with pytest.raises(ValueError, match="dtype must be one of"):
    hf_export.save_pretrained_streaming(model, str(tmp_path), dtype="int8")
  with pytest.raises(ValueError, match="process_index < process_count"):
    hf_export.save_pretrained_streaming(model, str(tmp_path), process_index=2, process_count=2)
  with pytest.raises(ValueError, match="max_shard_bytes"):
    hf_export.save_pretrained_streaming(model, str(tmp_path), max_shard_bytes=0)
  with pytest.raises(TypeError, match="Qwen model"):
    hf_export.save_pretrained_streaming({"a": np.zeros(3)}, str(tmp_path))


def test_a_failed_export_leaves_no_partial_file(tmp_path, monkeypatch):
  calls = []
  real = hf_export._hf_tensor  # pylint: disable=protected-access

  def failing(value, entry, dtype):
    calls.append(entry.hf_name)
    if len(calls) == 3:
      raise OSError("disk full (injected)")
    return real(value, entry, dtype)

  monkeypatch.setattr(hf_export, "_hf_tensor", failing)
  path = str(tmp_path / "x")
  with pytest.raises(OSError, match="disk full"):
    hf_export.save_pretrained_streaming(toys.tiny_model(), path)
  assert os.listdir(path) == ["config.json"]  # no index, no half-written tensor file
