"""The training loop's state is created already sharded (issue 15, "sharded everywhere").

`builders.initial_params` + `state_from_params` (what launch/train_loop.py runs) on a (2, 2, 2)
mesh of 8 simulated CPU devices (tests/conftest.py sets XLA_FLAGS before jax is imported): every
param and optimizer leaf has the NamedSharding the logical-axis rules give it, no device holds a
whole weight matrix, and the values equal the unsharded path (models.init_model /
models.from_pretrained on one device).
"""

import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from launch import builders
from synthagent_jax import models
from synthagent_jax import parallel
from synthagent_jax.rl import optim
from synthagent_jax.rl import state as state_lib
from tests import toys


def _config(from_scratch: bool, checkpoint: str = "") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=3, model=dict(from_scratch=from_scratch, checkpoint=checkpoint, dtype="float32",
                         remat="none")))


def _mesh():
  return parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))


def _tx():
  return optim.make_optimizer(optim.OptimConfig(lr=1e-2, clip_norm=1.0))


def _flat(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_state(state, spec, mesh, want_params):
  # Hand-derived from DEFAULT_RULES: vocab -> tensor, embed -> fsdp, heads/kv_heads/mlp -> tensor.
  params = _flat(state.params)
  assert params["['embed']"].sharding.spec == P("tensor", "fsdp")
  assert params["['layers'][0]['attn']['q_kernel']"].sharding.spec == P("fsdp", "tensor", None)
  assert params["['layers'][0]['attn']['o_kernel']"].sharding.spec == P("tensor", None, "fsdp")
  assert params["['layers'][1]['mlp']['down_kernel']"].sharding.spec == P("tensor", "fsdp")
  # No device holds a whole matrix: each of the 8 holds a quarter (fsdp x tensor) of the embedding.
  embed = params["['embed']"]
  assert {s.data.size for s in embed.addressable_shards} == {embed.size // 4}
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(spec.shardings)):
    assert isinstance(got.sharding, NamedSharding) and got.sharding.mesh == mesh
    assert got.sharding.is_equivalent_to(want, got.ndim), (got.sharding, want)
  # Adam's moments follow their parameter's sharding.
  mu = _flat(state.opt_state)
  mu_embed = [v for k, v in mu.items() if k.endswith("['embed']")]
  assert mu_embed and all(v.sharding.spec == P("tensor", "fsdp") for v in mu_embed)
  want = _flat(want_params)
  assert set(want) == set(params)
  for k, v in want.items():
    np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(v), err_msg=k)
  want_opt = _tx().init(want_params)
  for got, w in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(want_opt)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(w))


def test_from_scratch_state_is_created_sharded_with_the_unsharded_values():
  mesh, tx = _mesh(), _tx()
  model_cfg = toys.tiny_model_config()
  spec = state_lib.plan_state(model_cfg, tx, mesh, parallel.DEFAULT_RULES, seed=3)
  params = builders.initial_params(_config(True), model_cfg, spec)
  state = state_lib.state_from_params(params, spec, tx, seed=3)
  want = state_lib.split_params(models.init_model(model_cfg, seed=3))[1]
  assert len(jax.tree.leaves(want)[0].devices()) == 1  # the reference really is unsharded
  _check_state(state, spec, mesh, want)


def test_checkpoint_state_is_loaded_sharded_with_the_unsharded_values(tmp_path):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2")
  mesh, tx = _mesh(), _tx()
  model_cfg = models.load_hf_config(path, dtype="float32", remat="none")
  spec = state_lib.plan_state(model_cfg, tx, mesh, parallel.DEFAULT_RULES, seed=3)
  params = builders.initial_params(_config(False, path), model_cfg, spec)
  state = state_lib.state_from_params(params, spec, tx, seed=3)
  want = state_lib.split_params(models.from_pretrained(path))[1]
  _check_state(state, spec, mesh, want)


def test_tied_head_is_checked_shard_by_shard_and_a_missing_sharding_is_named(tmp_path):
  path = toys.write_hf_checkpoint(tmp_path, "qwen2")  # tie_word_embeddings=True
  spec = state_lib.plan_state(models.load_hf_config(path), _tx(), _mesh(), parallel.DEFAULT_RULES)
  shardings = spec.shardings.params
  file_path = os.path.join(path, "model.safetensors")
  tensors = load_file(file_path)
  embed = tensors["model.embed_tokens.weight"]
  for head, ok in ((embed.copy(), True), (embed + 1.0, False)):  # a stored copy of the head
    save_file(dict(tensors, **{"lm_head.weight": head}), file_path, metadata={"format": "pt"})
    if ok:
      models.from_pretrained(path, sharding=shardings)
    else:
      with pytest.raises(ValueError, match="lm_head.weight differs"):
        models.from_pretrained(path, sharding=shardings)
  del shardings["final_norm"]
  with pytest.raises(ValueError, match="no entry for parameter final_norm/weight"):
    models.from_pretrained(path, sharding=shardings)
