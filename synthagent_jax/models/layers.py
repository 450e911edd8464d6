"""The decoder's building blocks in Flax NNX: logically-named parameters, RMSNorm, the attention
projections, the SwiGLU MLP and one pre-norm decoder layer (full-sequence and KV-cache paths).

Numerics follow transformers' Qwen2/Qwen3 modeling code: RMSNorm normalises in float32 and
multiplies by its weight in the compute dtype; parameters are stored in `cfg.param_dtype` and
cast to the activations' dtype at use. The attention math itself is models/attention.py.

Dimension letters as in models/qwen.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from synthagent_jax.models.attention import (apply_rope, attend_one, attention, attention_mask,
                                             self_attention)
from synthagent_jax.models.config import ModelConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def logical_param(rngs: nnx.Rngs | None, shape: tuple[int, ...], axes: tuple[str, ...], dtype,
                  init: str = "normal") -> nnx.Param:
  """A parameter annotated with logical axis names (not sharded until a mesh applies rules)."""
  if init == "ones":
    value = jnp.ones(shape, dtype)
  elif init == "zeros":
    value = jnp.zeros(shape, dtype)
  else:
    value = 0.02 * jax.random.normal(rngs.params(), shape, dtype)
  # eager_sharding=False: the names are logical; parallel/ maps them onto a mesh later.
  # `init` is kept so init_model can redraw all params in one cheap-to-compile program.
  return nnx.Param(value, out_sharding=axes, eager_sharding=False, init=init)


class RMSNorm(nnx.Module):
  """y = w * (x / sqrt(mean(x^2) + eps)); the normalisation runs in float32."""

  def __init__(self, size: int, eps: float, axis: str, param_dtype):
    self.eps = eps
    self.weight = logical_param(None, (size,), (axis,), param_dtype, init="ones")

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)



class Attention(nnx.Module):
  """Q/K/V/O projections (+ optional biases and per-head q/k RMSNorm)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    pd = DTYPES[cfg.param_dtype]
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q_kernel = logical_param(rngs, (d, n, h), ("embed", "heads", "head_dim"), pd)
    self.k_kernel = logical_param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.v_kernel = logical_param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.o_kernel = logical_param(rngs, (n, h, d), ("heads", "head_dim", "embed"), pd)
    if cfg.qkv_bias:
      self.q_bias = logical_param(rngs, (n, h), ("heads", "head_dim"), pd, init="zeros")
      self.k_bias = logical_param(rngs, (k, h), ("kv_heads", "head_dim"), pd, init="zeros")
      self.v_bias = logical_param(rngs, (k, h), ("kv_heads", "head_dim"), pd, init="zeros")
    if cfg.o_bias:
      self.o_bias = logical_param(rngs, (d,), ("embed",), pd, init="zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm(h, cfg.rms_norm_eps, "head_dim", pd)
      self.k_norm = RMSNorm(h, cfg.rms_norm_eps, "head_dim", pd)
    self.qkv_bias, self.has_o_bias, self.qk_norm = cfg.qkv_bias, cfg.o_bias, cfg.qk_norm

  def qkv(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array):
    """Projected, normalised and rotated q [B,T,H,Dh], k and v [B,T,K,Dh] (token-major; the
    attention and the KV cache take k/v head-major, [B,K,T,Dh])."""
    dt = x_btd.dtype
    q = jnp.einsum("btd,dnh->btnh", x_btd, self.q_kernel[...].astype(dt))
    k = jnp.einsum("btd,dkh->btkh", x_btd, self.k_kernel[...].astype(dt))
    v = jnp.einsum("btd,dkh->btkh", x_btd, self.v_kernel[...].astype(dt))
    if self.qkv_bias:
      q = q + self.q_bias[...].astype(dt)
      k = k + self.k_bias[...].astype(dt)
      v = v + self.v_bias[...].astype(dt)
    if self.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    return apply_rope(q, cos_bth, sin_bth), apply_rope(k, cos_bth, sin_bth), v

  def out(self, a_btnh: jax.Array) -> jax.Array:
    dt = a_btnh.dtype
    y = jnp.einsum("btnh,nhd->btd", a_btnh, self.o_kernel[...].astype(dt))
    if self.has_o_bias:
      y = y + self.o_bias[...].astype(dt)
    return y


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    pd = DTYPES[cfg.param_dtype]
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate_kernel = logical_param(rngs, (d, f), ("embed", "mlp"), pd)
    self.up_kernel = logical_param(rngs, (d, f), ("embed", "mlp"), pd)
    self.down_kernel = logical_param(rngs, (f, d), ("mlp", "embed"), pd)

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    dt = x_btd.dtype
    gate = jnp.einsum("btd,df->btf", x_btd, self.gate_kernel[...].astype(dt))
    up = jnp.einsum("btd,df->btf", x_btd, self.up_kernel[...].astype(dt))
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, self.down_kernel[...].astype(dt))


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    pd = DTYPES[cfg.param_dtype]
    self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", pd)
    self.attn = Attention(cfg, rngs)
    self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", pd)
    self.mlp = MLP(cfg, rngs)
    self.attention_impl, self.attention_chunk = cfg.attention, cfg.attention_chunk

  def __call__(self, x_btd, cos_bth, sin_bth, q_slot_t, kv_valid_bt):
    """Causal self-attention over the sequence: token t sees tokens s <= t with kv_valid_bt."""
    q, k_btkh, v_btkh = self.attn.qkv(self.input_norm(x_btd), cos_bth, sin_bth)
    del q_slot_t  # a full pass: query t is at slot t
    a = self_attention(self.attention_impl, self.attention_chunk, q, jnp.swapaxes(k_btkh, 1, 2),
                       jnp.swapaxes(v_btkh, 1, 2), kv_valid_bt)
    x_btd = x_btd + self.attn.out(a)
    return x_btd + self.mlp(self.post_attn_norm(x_btd))

  def forward_cached(self, x_btd, cos_bth, sin_bth, k_cache_bkhs, v_cache_bksh, cache_index,
                     kv_mask_bs):
    """Like __call__, but writes this chunk's k/v into this layer's cache (k [B, K, Dh, S],
    v [B, K, S, Dh]: models/qwen.KVCache) at slot cache_index and attends to all slots (the
    configured attention for a chunk of several tokens, on keys turned slot-major; `attend_one`
    for one token, on the cache as it lies). Returns (x, k cache, v cache)."""
    q, k_btkh, v_btkh = self.attn.qkv(self.input_norm(x_btd), cos_bth, sin_bth)
    k_cache_bkhs = jax.lax.dynamic_update_slice(
        k_cache_bkhs, jnp.transpose(k_btkh, (0, 2, 3, 1)).astype(k_cache_bkhs.dtype),
        (0, 0, 0, cache_index))
    v_cache_bksh = jax.lax.dynamic_update_slice(
        v_cache_bksh, jnp.swapaxes(v_btkh, 1, 2).astype(v_cache_bksh.dtype),
        (0, 0, cache_index, 0))
    q_slot_t = cache_index + jnp.arange(x_btd.shape[1], dtype=jnp.int32)
    k_in, v_in = k_cache_bkhs.astype(q.dtype), v_cache_bksh.astype(q.dtype)
    if x_btd.shape[1] == 1:
      a = attend_one(q, k_in, v_in, attention_mask(q_slot_t, kv_mask_bs)[:, 0])
    else:
      # Slot-major keys for the chunk's attention, materialised: XLA would fold the transpose
      # into the score dot, and XLA:CPU has no bf16 x bf16 -> f32 dot over that layout.
      k_in = jax.lax.optimization_barrier(jnp.swapaxes(k_in, 2, 3))
      a = attention(self.attention_impl, self.attention_chunk, q, k_in, v_in, q_slot_t,
                    kv_mask_bs)
    x_btd = x_btd + self.attn.out(a)
    return x_btd + self.mlp(self.post_attn_norm(x_btd)), k_cache_bkhs, v_cache_bksh
