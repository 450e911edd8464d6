"""Parity with transformers (torch, fp32, eager attention) and checkpoint import/export."""

import json
import os
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from flax import nnx
from safetensors.numpy import load_file, save_file

from synthagent_jax import models
from tests import toys

pytest.importorskip("torch")
TOL = 1e-4


def _ids(vocab_size, batch=2, length=13, seed=0):
  return np.random.RandomState(seed).randint(0, vocab_size, (batch, length)).astype(np.int32)


def _max_diff_vs_hf(path, ids, dtype="float32"):
  ours = np.asarray(models.from_pretrained(path, dtype=dtype)(jnp.asarray(ids)))
  ref = toys.hf_logits(toys.load_hf_reference(path), ids)
  assert ours.shape == ref.shape
  return float(np.max(np.abs(ours - ref)))


@pytest.mark.parametrize("family,overrides", [
    ("qwen2", dict(vocab_size=97, rope_theta=1e6)),
    ("qwen3", dict(vocab_size=97, head_dim=12, tie_word_embeddings=False, rope_theta=5e5)),
])
def test_logits_match_transformers(tmp_path, family, overrides):
  path = toys.write_hf_checkpoint(tmp_path, family, **overrides)
  assert _max_diff_vs_hf(path, _ids(97, length=40)) <= TOL


_FAMILIES = st.sampled_from(["qwen2", "qwen3"])


@st.composite
def small_configs(draw):
  family = draw(_FAMILIES)
  num_kv_heads = draw(st.sampled_from([1, 2]))
  num_heads = num_kv_heads * draw(st.sampled_from([1, 2, 3]))
  hidden_size = draw(st.sampled_from([16, 24, 48]))
  default_head_dim = hidden_size // num_heads if hidden_size % num_heads == 0 else None
  head_dims = [8, 12] + ([default_head_dim] if default_head_dim and default_head_dim % 2 == 0
                         else [])
  return family, dict(
      vocab_size=draw(st.sampled_from([97, 256, 1001])),
      hidden_size=hidden_size,
      intermediate_size=draw(st.sampled_from([24, 40])),
      num_layers=draw(st.integers(1, 3)),
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=draw(st.sampled_from(head_dims)),
      rope_theta=draw(st.sampled_from([100.0, 1e4, 1e6])),
      rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
      tie_word_embeddings=draw(st.booleans()),
  )


def _check_random_config(tmp_path_factory, family_and_overrides):
  family, overrides = family_and_overrides
  path = toys.write_hf_checkpoint(tmp_path_factory.mktemp("cfg"), family, **overrides)
  diff = _max_diff_vs_hf(path, _ids(overrides["vocab_size"], length=9))
  assert diff <= TOL, (family, overrides, diff)


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_configs())
def test_logits_match_transformers_for_small_configs(tmp_path_factory, family_and_overrides):
  _check_random_config(tmp_path_factory, family_and_overrides)


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_configs())
def test_logits_match_transformers_for_many_small_configs(tmp_path_factory, family_and_overrides):
  _check_random_config(tmp_path_factory, family_and_overrides)


@pytest.mark.parametrize("family,tied,max_shard_bytes", [
    ("qwen2", True, None), ("qwen3", False, 20_000)])
def test_save_pretrained_loads_in_transformers(tmp_path, family, tied, max_shard_bytes):
  model = toys.tiny_model(vocab_size=101, seed=5, family=family, tie_word_embeddings=tied)
  # Perturb every param (norm weights and zero-initialised biases too) so a mix-up shows.
  rng = np.random.RandomState(0)
  nnx.update(model, jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x) + 0.2 * rng.randn(*x.shape).astype(np.float32)),
      nnx.state(model, nnx.Param)))
  out = tmp_path / "export"
  models.save_pretrained(model, str(out), max_shard_bytes=max_shard_bytes)
  files = sorted(os.listdir(out))
  if max_shard_bytes:
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
  else:
    assert "model.safetensors" in files
  ids = _ids(101)
  ref = toys.hf_logits(toys.load_hf_reference(str(out)), ids)
  ours = np.asarray(model(jnp.asarray(ids)))
  assert float(np.max(np.abs(ours - ref))) <= TOL
  reloaded = models.from_pretrained(str(out))
  assert float(np.max(np.abs(np.asarray(reloaded(jnp.asarray(ids))) - ours))) == 0.0


def test_loading_streams_tensor_by_tensor(tmp_path):
  """Host memory while loading is the model plus about one tensor, never the checkpoint twice.

  tracemalloc sees numpy buffers; on CPU jax may keep the converted numpy buffer as the param's
  storage, so what is still held at the end is the model, and peak minus that is the loader's
  transient overhead.
  """
  path = toys.write_hf_checkpoint(tmp_path, "qwen2", hidden_size=64, intermediate_size=2048,
                                  num_layers=4)
  checkpoint_bytes = os.path.getsize(os.path.join(path, "model.safetensors"))
  largest_tensor_bytes = 64 * 2048 * 4
  tracemalloc.start()
  try:
    model = models.from_pretrained(path)
    held, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert checkpoint_bytes > 12 * largest_tensor_bytes
  assert peak - held < 4 * largest_tensor_bytes, (peak, held, checkpoint_bytes)
  assert model.layers[3].mlp.down_kernel.get_value().shape == (2048, 64)


def test_sharded_checkpoint_loads_straight_onto_a_mesh(tmp_path):
  """Sharded safetensors (written by transformers) -> params created already on a 4x2 mesh."""
  path = toys.write_hf_checkpoint(tmp_path, "qwen3", max_shard_size="20KB",
                                  tie_word_embeddings=False)
  assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
  assert sum(f.endswith(".safetensors") for f in os.listdir(path)) > 2
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("fsdp", "tensor"))
  rules = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "kv_heads": "tensor",
           "vocab": "tensor", "head_dim": None}
  model = models.from_pretrained(path, sharding=lambda spec: jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(*(rules[a] for a in spec))))
  q = model.layers[0].attn.q_kernel.get_value()
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  assert len({s.device for s in q.addressable_shards}) == 8
  ids = _ids(128)
  ref = toys.hf_logits(toys.load_hf_reference(path), ids)
  assert float(np.max(np.abs(np.asarray(model(jnp.asarray(ids))) - ref))) <= TOL


def test_bfloat16_checkpoint_loads(tmp_path):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2", torch_dtype="bfloat16")
  tensors = load_file(os.path.join(path, "model.safetensors"))
  assert tensors["model.embed_tokens.weight"].dtype.name == "bfloat16"
  # transformers upcasts the same bf16 values to fp32, so fp32 parity still holds.
  assert _max_diff_vs_hf(path, _ids(128)) <= TOL
  model = models.from_pretrained(path, dtype="bfloat16", param_dtype="bfloat16")
  assert model.embed.get_value().dtype == jnp.bfloat16
  assert model(jnp.asarray(_ids(128))).dtype == jnp.float32


def test_dtypes_are_accepted_as_names_or_jax_dtypes(tmp_path):
  path = str(tmp_path / "ckpt")
  models.save_pretrained(toys.tiny_model(), path, dtype=jnp.float32)
  by_name = models.from_pretrained(path, dtype="bfloat16", param_dtype="float32")
  by_dtype = models.from_pretrained(path, dtype=jnp.bfloat16, param_dtype=np.float32)
  assert by_dtype.config == by_name.config
  assert by_dtype.embed.get_value().dtype == jnp.float32
  ids = jnp.asarray(_ids(by_name.config.vocab_size))
  np.testing.assert_array_equal(np.asarray(by_dtype(ids)), np.asarray(by_name(ids)))
  with pytest.raises(ValueError, match="dtype must be one of"):
    models.from_pretrained(path, dtype=jnp.int32)
  with pytest.raises(ValueError, match="not a dtype"):
    models.from_pretrained(path, dtype=object())


def _rewrite(path, edit):
  file_path = os.path.join(path, "model.safetensors")
  tensors = load_file(file_path)
  edit(tensors)
  save_file(tensors, file_path, metadata={"format": "pt"})


def test_unexpected_and_missing_tensors_are_named(tmp_path):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2")
  _rewrite(path, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
  with pytest.raises(ValueError, match=r"unexpected tensors \['model\.layers\.0\.mlp\.extra"):
    models.from_pretrained(path)
  _rewrite(path, lambda t: t.pop("model.layers.0.mlp.extra.weight"))
  _rewrite(path, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
  with pytest.raises(ValueError, match=r"missing tensors \['model\.layers\.1\.self_attn\.k_proj"):
    models.from_pretrained(path)


def test_wrong_shape_and_unsupported_config_fail(tmp_path):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2")
  config_path = os.path.join(path, "config.json")
  with open(config_path) as f:
    config = json.load(f)
  with open(config_path, "w") as f:
    json.dump(dict(config, intermediate_size=32), f)
  with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight has shape"):
    models.from_pretrained(path)
  with open(config_path, "w") as f:
    json.dump(dict(config, rope_parameters={"rope_type": "yarn", "factor": 4.0,
                                            "rope_theta": 1e4}), f)
  with pytest.raises(ValueError, match="rope_parameters.rope_type"):
    models.from_pretrained(path)


def test_missing_files_are_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    models.from_pretrained(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(toys.tiny_model_config().to_hf_dict()))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    models.from_pretrained(str(tmp_path))
