"""Attention implementations (ModelConfig.attention): the chunked online-softmax path, the
blocked causal path and jax.nn.dot_product_attention against the naive softmax, values and
gradients, and the chunked path's memory growing linearly in the sequence length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthagent_jax.models import config as config_lib
from synthagent_jax.models import attention as attention_lib
from synthagent_jax.models import qwen
from tests import toys

ATOL = 1e-5


def _qkv(seed, b=2, t=13, s=None, n=4, k=2, h=8):
  s = t if s is None else s
  rng = np.random.RandomState(seed)
  q = jnp.asarray(rng.randn(b, t, n, h), jnp.float32)
  kk = jnp.asarray(rng.randn(b, k, s, h), jnp.float32)  # head-major, as the KV cache
  v = jnp.asarray(rng.randn(b, k, s, h), jnp.float32)
  return q, kk, v


def _valid(b, s, seed):
  """Left padding on row 0, right padding on row 1, a hole-free full row after that."""
  valid = np.ones((b, s), bool)
  valid[0, :3] = False
  if b > 1:
    valid[1, s - 4:] = False
  return jnp.asarray(valid)


@pytest.mark.parametrize("impl,n,k,chunk", [
    ("chunked", 4, 2, 4), ("chunked", 4, 1, 5), ("chunked", 4, 4, 64), ("xla", 4, 2, 0),
    ("xla", 4, 1, 0)])
def test_attention_matches_naive_values_and_grads(impl, n, k, chunk):
  b, t = 2, 13
  q, kk, v = _qkv(0, b=b, t=t, n=n, k=k)
  q_slot_t = jnp.arange(t, dtype=jnp.int32)
  valid = _valid(b, t, 0)
  real_bt = np.asarray(valid)  # outputs at padded queries are meaningless on every path
  w = jnp.asarray(np.random.RandomState(1).randn(b, t, n, 8), jnp.float32) * real_bt[..., None,
                                                                                        None]

  def loss(impl_, q, kk, v):
    return (attention_lib.attention(impl_, chunk, q, kk, v, q_slot_t, valid) * w).sum()

  fwd = jax.jit(attention_lib.attention, static_argnums=(0, 1))
  want = fwd("naive", chunk, q, kk, v, q_slot_t, valid)
  got = fwd(impl, chunk, q, kk, v, q_slot_t, valid)
  np.testing.assert_allclose(np.asarray(got)[real_bt], np.asarray(want)[real_bt], atol=ATOL)
  grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
  g_want, g_got = grad("naive", q, kk, v), grad(impl, q, kk, v)
  for a, b_ in zip(g_got, g_want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b_), atol=ATOL)


@pytest.mark.parametrize("n,k,chunk", [(4, 2, 4), (4, 1, 5), (4, 4, 1), (4, 2, 13), (4, 2, 64)])
def test_blocked_self_attention_matches_naive_values_and_grads(n, k, chunk):
  # Query blocks of `chunk` rows over the keys up to each block's end (chunk 5 leaves a 3-row
  # last block; 13 and 64 are one block): the same outputs and gradients as the full softmax.
  b, t = 2, 13
  q, kk, v = _qkv(5, b=b, t=t, n=n, k=k)
  valid = _valid(b, t, 0)
  real_bt = np.asarray(valid)
  w = jnp.asarray(np.random.RandomState(2).randn(b, t, n, 8), jnp.float32) * real_bt[..., None,
                                                                                        None]
  naive = lambda q, kk, v: attention_lib.self_attention("naive", chunk, q, kk, v, valid)
  blocked = lambda q, kk, v: attention_lib.self_attention("blocked", chunk, q, kk, v, valid)
  want, got = jax.jit(naive)(q, kk, v), jax.jit(blocked)(q, kk, v)
  np.testing.assert_allclose(np.asarray(got)[real_bt], np.asarray(want)[real_bt], atol=ATOL)
  grad = lambda f: jax.jit(jax.grad(lambda q, kk, v: (f(q, kk, v) * w).sum(), argnums=(0, 1, 2)))
  for a, b_ in zip(grad(blocked)(q, kk, v), grad(naive)(q, kk, v)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b_), atol=ATOL)


def test_blocked_attention_needs_keys_at_the_query_slots():
  q, kk, v = _qkv(6, t=4, s=9)
  with pytest.raises(ValueError, match="S == T"):
    attention_lib.attend_blocked(q, kk, v, jnp.ones((2, 9), bool), 2)


def test_chunked_prefill_against_a_cache_matches_naive():
  # Queries at slots 8..15 of a 24-slot cache whose first 2 slots are padding.
  q, kk, v = _qkv(3, b=2, t=8, s=24)
  q_slot_t = 8 + jnp.arange(8, dtype=jnp.int32)
  valid = np.ones((2, 24), bool)
  valid[:, :2] = False
  valid = jnp.asarray(valid)
  want = attention_lib.attention("naive", 0, q, kk, v, q_slot_t, valid)
  for impl in ("chunked", "xla", "blocked"):  # blocked prefills as naive (dynamic slots)
    got = attention_lib.attention(impl, 5, q, kk, v, q_slot_t, valid)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)


@pytest.mark.parametrize("n,k", [(4, 2), (4, 1), (4, 4)])
def test_attend_one_matches_naive_decode_step(n, k):
  # One query at slot 20 of a 24-slot cache with left padding and an unwritten future slot.
  q, kk, v = _qkv(4, b=3, t=1, s=24, n=n, k=k)
  q_slot_t = jnp.asarray([20], jnp.int32)
  valid = np.ones((3, 24), bool)
  valid[0, :5] = False
  valid[2, :11] = False
  mask_bts = attention_lib.attention_mask(q_slot_t, jnp.asarray(valid))
  want = attention_lib.attend(q, kk, v, mask_bts)
  got = attention_lib.attend_one(q, jnp.swapaxes(kk, 2, 3), v, mask_bts[:, 0])  # keys [B,K,Dh,S]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)


@pytest.mark.parametrize("impl", ["chunked", "xla", "blocked"])
def test_model_logits_match_naive(impl):
  naive = toys.tiny_model(seed=2, num_layers=2)
  model = qwen.with_config(naive, attention=impl, attention_chunk=4)
  rng = np.random.RandomState(0)
  ids = jnp.asarray(rng.randint(1, 128, (2, 11)), jnp.int32)
  mask = np.ones((2, 11), bool)
  mask[0, :4] = False
  mask = jnp.asarray(mask)
  want = np.asarray(naive(ids, attention_mask_bt=mask))
  got = np.asarray(model(ids, attention_mask_bt=mask))
  real = np.asarray(mask)
  np.testing.assert_allclose(got[real], want[real], atol=ATOL)
  # The learner's entry: final hidden states through the head give the same logits.
  hidden = jax.jit(lambda m: qwen.head_logits(m.hidden_states(ids, attention_mask_bt=mask),
                                              *m.head_kernel()))(model)
  np.testing.assert_allclose(np.asarray(hidden)[real], got[real], atol=ATOL)


def test_unknown_attention_is_refused():
  with pytest.raises(ValueError, match="attention must be one of"):
    config_lib.ModelConfig.tiny(attention="flash")
  with pytest.raises(ValueError, match="logprob_chunk"):
    config_lib.ModelConfig.tiny(logprob_chunk=0)
  for bad in (-0.1, 1.5, True, "half"):
    with pytest.raises(ValueError, match="head_fraction"):
      config_lib.ModelConfig.tiny(head_fraction=bad)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["chunked", "xla", "blocked"])
def test_sampler_with_chunked_prefill_matches_naive(impl):
  # The sampler's path (prefill with `impl`, then the unchanged one-token decode).
  from synthagent_jax.inference import sampler
  naive = toys.tiny_model(seed=2, num_layers=2)
  model = qwen.with_config(naive, attention=impl, attention_chunk=4)
  prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [3, 4]]
  a = sampler.generate(naive, prompts, max_new_tokens=6, temperature=1.0, seed=1)
  b = sampler.generate(model, prompts, max_new_tokens=6, temperature=1.0, seed=1)
  for ca, cb in zip(a, b):
    assert ca.token_ids == cb.token_ids
    np.testing.assert_allclose(cb.logprobs, ca.logprobs, atol=1e-4)


def _grad_temp_bytes(impl, t, n=2, k=1, h=16):
  q = jax.ShapeDtypeStruct((1, t, n, h), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, k, t, h), jnp.float32)
  q_slot_t = jnp.arange(t, dtype=jnp.int32)
  valid = jnp.ones((1, t), bool)

  def loss(q, kk, v):
    return attention_lib.attention(impl, 128, q, kk, v, q_slot_t, valid).sum()

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_attention_memory_grows_linearly():
  small, large = _grad_temp_bytes("chunked", 1024), _grad_temp_bytes("chunked", 4096)
  naive_large = _grad_temp_bytes("naive", 4096)
  # 4x the tokens: ~4x the chunked temporaries (linear), ~16x for the naive [T, T] scores.
  assert large < 5 * small, (small, large)
  assert large < naive_large / 4, (large, naive_large)
