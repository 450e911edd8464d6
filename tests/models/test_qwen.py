"""The JAX decoder on its own: padding, KV-cache decoding, remat, dtypes, axis names."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from synthagent_jax import models
from tests import toys

TOL = 1e-4


def _references(model, seqs):
  """Per-sequence logits [len, V] of each unpadded sequence, from one batched call.

  Sequences are right-padded without a mask: causal attention never lets a real token see the
  padding after it, so its logits equal those of the unpadded sequence.
  """
  width = max(len(s) for s in seqs)
  ids = np.zeros((len(seqs), width), np.int32)
  for b, s in enumerate(seqs):
    ids[b, :len(s)] = s
  logits = np.asarray(model(jnp.asarray(ids)))
  return [logits[b, :len(s)] for b, s in enumerate(seqs)]


def _left_pad(seqs, pad_id=0):
  width = max(len(s) for s in seqs)
  ids = np.full((len(seqs), width), pad_id, np.int32)
  mask = np.zeros((len(seqs), width), bool)
  for b, s in enumerate(seqs):
    ids[b, width - len(s):] = s
    mask[b, width - len(s):] = True
  return ids, mask


def test_padding_does_not_change_real_token_logits():
  model = toys.tiny_model(seed=1)
  rng = np.random.RandomState(0)
  seqs = [list(rng.randint(1, 128, n)) for n in (6, 3, 9)]
  refs = _references(model, seqs)

  ids, mask = _left_pad(seqs)
  left = np.asarray(model(jnp.asarray(ids), attention_mask_bt=jnp.asarray(mask)))
  right_ids = np.zeros_like(ids)
  right_mask = np.zeros_like(mask)
  for b, s in enumerate(seqs):
    right_ids[b, :len(s)] = s
    right_mask[b, :len(s)] = True
  right = np.asarray(model(jnp.asarray(right_ids), attention_mask_bt=jnp.asarray(right_mask)))
  width = ids.shape[1]
  for b, s in enumerate(seqs):
    np.testing.assert_allclose(left[b, width - len(s):], refs[b], atol=TOL, rtol=0)
    np.testing.assert_allclose(right[b, :len(s)], refs[b], atol=TOL, rtol=0)


@pytest.mark.parametrize("family,dtype,num_kv_heads", [("qwen3", "float32", 1),
                                                       ("qwen2", "bfloat16", 2)])
def test_cached_decode_matches_full_forward(family, dtype, num_kv_heads):
  """Prefill a left-padded ragged batch, then a 2-token chunk, then single tokens (jitted)."""
  model = toys.tiny_model(vocab_size=97, seed=2, family=family, num_kv_heads=num_kv_heads,
                          tie_word_embeddings=False, dtype=dtype)
  rng = np.random.RandomState(1)
  prompts = [list(rng.randint(0, 97, n)) for n in (5, 2, 7)]
  extra = [list(rng.randint(0, 97, 5)) for _ in prompts]
  ids, mask = _left_pad(prompts)
  b, p = ids.shape
  chunks = [2, 1, 1, 1]
  cache = model.init_cache(b, p + sum(chunks))
  kv_mask = np.zeros((b, cache.max_len), bool)
  kv_mask[:, :p] = mask
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  lengths = mask.sum(axis=1)

  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, ids_bt, positions_bt, cache, cache_index, kv_mask_bs):
    return nnx.merge(graphdef, state).forward_cached(ids_bt, positions_bt, cache, cache_index,
                                                     kv_mask_bs)

  logits, cache = step(state, jnp.asarray(ids), jnp.asarray(positions), cache, jnp.int32(0),
                       jnp.asarray(kv_mask))
  got = [[row] for row in np.asarray(logits)]  # per sequence: list of [T, V] blocks
  index, done = p, 0
  for t in chunks:
    chunk_ids = np.asarray([e[done:done + t] for e in extra], np.int32)
    chunk_pos = (lengths[:, None] + done + np.arange(t)[None]).astype(np.int32)
    kv_mask[:, index:index + t] = True
    logits, cache = step(state, jnp.asarray(chunk_ids), jnp.asarray(chunk_pos), cache,
                         jnp.int32(index), jnp.asarray(kv_mask))
    for i, row in enumerate(np.asarray(logits)):
      got[i].append(row)
    index, done = index + t, done + t

  cfg = model.config
  assert len(cache.k) == len(cache.v) == cfg.num_layers
  slots = p + sum(chunks)
  for x in (*cache.k, *cache.v):  # per layer, head-major
    assert x.dtype == model.dtype
  for x in cache.k:  # keys slot-minor
    assert x.shape == (b, num_kv_heads, cfg.head_dim, slots)
  for x in cache.v:
    assert x.shape == (b, num_kv_heads, slots, cfg.head_dim)
  assert cache.max_len == slots
  tol = TOL if dtype == "float32" else 0.1
  refs = _references(model, [prompt + more[:done] for prompt, more in zip(prompts, extra)])
  for i, (prompt, ref) in enumerate(zip(prompts, refs)):
    cached = np.concatenate([got[i][0][p - len(prompt):]] + got[i][1:])
    np.testing.assert_allclose(cached, ref, atol=tol, rtol=0)


def test_cached_forward_rejects_bad_shapes():
  model = toys.tiny_model()
  cache = model.init_cache(2, 8)
  ids = jnp.zeros((2, 3), jnp.int32)
  with pytest.raises(ValueError, match="kv_mask_bs"):
    model.forward_cached(ids, ids, cache, 0, jnp.ones((2, 7), bool))
  with pytest.raises(ValueError, match="cache_index=6"):
    model.forward_cached(ids, ids, cache, 6, jnp.ones((2, 8), bool))
  with pytest.raises(ValueError, match="cache batch"):
    model.forward_cached(ids, ids, model.init_cache(3, 8), 0, jnp.ones((3, 8), bool))


def test_bad_inputs_raise():
  model = toys.tiny_model()
  with pytest.raises(ValueError, match="input_ids_bt"):
    model(jnp.zeros((2, 3), jnp.float32))
  with pytest.raises(ValueError, match="attention_mask_bt"):
    model(jnp.zeros((2, 3), jnp.int32), attention_mask_bt=jnp.ones((2, 4)))


def test_logits_float32_and_bf16_close_to_fp32():
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 128, (2, 9)), jnp.int32)
  fp32 = toys.tiny_model(seed=3)
  bf16 = toys.tiny_model(seed=3, dtype="bfloat16")
  out32, out16 = fp32(ids), bf16(ids)
  assert out32.dtype == jnp.float32 and out16.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  assert 0 < float(jnp.max(jnp.abs(out32 - out16))) < 0.05


def _loss_fn(ids):
  def loss_fn(model):
    logp = jax.nn.log_softmax(model(ids)[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))
  return loss_fn


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_remat_wraps_each_layer(remat):
  """Tracing only (no compile): the grad's jaxpr holds one checkpoint per layer iff remat."""
  model = models.abstract_model(toys.tiny_model_config(remat=remat, num_layers=3))
  jaxpr = str(jax.make_jaxpr(nnx.grad(_loss_fn(jnp.zeros((1, 4), jnp.int32))))(model))
  num_remats = len(re.findall(r"\b(?:checkpoint|remat2?)\[", jaxpr))
  assert num_remats == (0 if remat == "none" else 3)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_keeps_loss_and_grads(remat):
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 128, (2, 6)), jnp.int32)
  base = toys.tiny_model(seed=4, family="qwen3", num_layers=1)
  rematted = toys.tiny_model(seed=4, family="qwen3", num_layers=1, remat=remat)
  loss0, grads0 = nnx.jit(nnx.value_and_grad(_loss_fn(ids)))(base)
  loss1, grads1 = nnx.jit(nnx.value_and_grad(_loss_fn(ids)))(rematted)
  np.testing.assert_allclose(loss0, loss1, rtol=1e-6)
  for g0, g1 in zip(jax.tree.leaves(grads0), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g0, g1, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_logical_axes_name_every_param(tied):
  model = models.abstract_model(toys.tiny_model_config("qwen3", tie_word_embeddings=tied))
  axes = models.logical_axes(model)
  params = nnx.state(model, nnx.Param)
  allowed = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim"}
  flat_axes = dict(nnx.to_flat_state(axes))
  flat_params = dict(nnx.to_flat_state(params))
  assert set(flat_axes) == set(flat_params)
  for path, spec in flat_axes.items():
    value = flat_params[path].get_value()
    assert len(spec) == value.ndim, path
    assert set(spec) <= allowed, path
  assert flat_axes[("embed",)] == jax.sharding.PartitionSpec("vocab", "embed")
  assert (("lm_head",) in flat_axes) == (not tied)


def test_params_shard_over_a_mesh_by_logical_names():
  """The names are usable: map them onto a 2x4 mesh and place the params."""
  model = toys.tiny_model()
  devices = np.array(jax.devices()[:8]).reshape(4, 2)
  mesh = jax.sharding.Mesh(devices, ("fsdp", "tensor"))
  rules = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "kv_heads": "tensor",
           "vocab": "tensor", "head_dim": None}
  specs = jax.tree.map(
      lambda s: jax.sharding.PartitionSpec(*(rules[a] for a in s)),
      models.logical_axes(model),
      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  params = nnx.state(model, nnx.Param)
  shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  placed = jax.device_put(params, shardings)
  q = placed["layers"][0]["attn"]["q_kernel"].get_value()
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  nnx.update(model, placed)
  ids = jnp.zeros((2, 4), jnp.int32)
  assert model(ids).shape == (2, 4, 128)


def test_forward_cached_last_only_equals_last_column():
  model = toys.tiny_model(vocab_size=97, seed=3)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 7)), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (2, 7))
  mask = jnp.zeros((2, 8), bool).at[:, :7].set(True)
  full, cache_full = model.forward_cached(ids, pos, model.init_cache(2, 8), 0, mask)
  last, cache_last = model.forward_cached(ids, pos, model.init_cache(2, 8), 0, mask,
                                          last_only=True)
  assert last.shape == (2, 1, 97)
  np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), atol=1e-6)
  for got, want in zip(cache_last.k, cache_full.k, strict=True):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
