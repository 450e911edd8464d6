"""Qwen2/Qwen2.5/Qwen3 decoder in Flax NNX, with a KV-cache path for batched decoding.

Numerics follow transformers' Qwen2/Qwen3 modeling code: RMSNorm normalises in float32 and
multiplies by its weight in the compute dtype; RoPE uses the rotate_half convention (the two
halves of each head are the real and imaginary parts); attention scores and softmax are float32;
logits are returned as float32.

Dimension letters in names: B batch, T query tokens, S key slots, D hidden, F mlp, H query heads,
K kv heads, G query heads per kv head, Dh -> `h` head_dim, V vocab, L layers.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from synthagent_jax.models.config import ModelConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# remat name -> jax.checkpoint policy (None: save nothing, recompute the whole layer).
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

_MASKED = float(jnp.finfo(jnp.float32).min)


@flax.struct.dataclass
class KVCache:
  """Per-layer keys and values of a batch, slot-indexed.

  Attributes:
    k: [L, B, S, K, Dh] keys after RoPE (and qk-norm), compute dtype.
    v: [L, B, S, K, Dh] values.
  """

  k: jax.Array
  v: jax.Array

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  @property
  def batch_size(self) -> int:
    return self.k.shape[1]


def _param(rngs: nnx.Rngs | None, shape: tuple[int, ...], axes: tuple[str, ...], dtype,
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
    self.weight = _param(None, (size,), (axis,), param_dtype, init="ones")

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


def rope_cos_sin(positions_bt: jax.Array, head_dim: int, theta: float):
  """cos, sin of shape [B, T, Dh] (float32) for RoPE at the given positions."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs_bth = positions_bt.astype(jnp.float32)[..., None] * inv_freq
  emb_bth = jnp.concatenate([freqs_bth, freqs_bth], axis=-1)
  return jnp.cos(emb_bth), jnp.sin(emb_bth)


def apply_rope(x_btnh: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array) -> jax.Array:
  """Rotates x [B, T, N, Dh] by position (HF rotate_half convention)."""
  half = x_btnh.shape[-1] // 2
  x32 = x_btnh.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos_bth[:, :, None, :] + rotated * sin_bth[:, :, None, :]
  return out.astype(x_btnh.dtype)


def attend(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array, mask_bts: jax.Array):
  """Grouped-query attention; float32 scores and softmax. Returns [B, T, H, Dh]."""
  b, t, n, h = q_btnh.shape
  k = k_bskh.shape[2]
  q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
  scores = jnp.einsum("btkgh,bskh->bkgts", q_btkgh, k_bskh,
                      preferred_element_type=jnp.float32) * (h ** -0.5)
  scores = jnp.where(mask_bts[:, None, None, :, :], scores, _MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_bskh.dtype)
  out = jnp.einsum("bkgts,bskh->btkgh", probs, v_bskh)
  return out.reshape(b, t, n, h)


def attention_mask(q_slot_t: jax.Array, kv_valid_bs: jax.Array) -> jax.Array:
  """bool [B, T, S]: query t (at cache slot q_slot_t[t]) sees key slot s <= it when valid."""
  s = kv_valid_bs.shape[1]
  causal_ts = jnp.arange(s, dtype=jnp.int32)[None, :] <= q_slot_t[:, None]
  return causal_ts[None] & kv_valid_bs.astype(bool)[:, None, :]


def _block_scores(q_btkgh, k_bckh, q_slot_t, valid_bc, slot0, scale):
  """Masked float32 scores [B, K, G, T, C] of all queries against one key block."""
  c = k_bckh.shape[1]
  scores = jnp.einsum("btkgh,bckh->bkgtc", q_btkgh, k_bckh,
                      preferred_element_type=jnp.float32) * scale
  causal_tc = (slot0 + jnp.arange(c, dtype=jnp.int32))[None, :] <= q_slot_t[:, None]
  mask = causal_tc[None, None, None] & valid_bc[:, None, None, None, :]
  return jnp.where(mask, scores, _MASKED)


def _blocks(x_bs, chunk):
  """[B, S, ...] -> [S // chunk, B, chunk, ...] (S already a multiple of chunk)."""
  b, s = x_bs.shape[:2]
  return jnp.moveaxis(x_bs.reshape((b, s // chunk, chunk) + x_bs.shape[2:]), 1, 0)


def _unblocks(x_nbc):
  n, b, c = x_nbc.shape[:3]
  return jnp.moveaxis(x_nbc, 0, 1).reshape((b, n * c) + x_nbc.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q_btkgh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, chunk):
  return _flash_fwd(q_btkgh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, chunk)[0]


def _flash_fwd(q_btkgh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, chunk):
  """Online softmax over key blocks: running max m, normaliser l and float32 accumulator."""
  b, t, kh, g, h = q_btkgh.shape
  scale = h ** -0.5
  xs = (_blocks(k_bskh, chunk), _blocks(v_bskh, chunk), _blocks(kv_valid_bs, chunk),
        jnp.arange(k_bskh.shape[1] // chunk, dtype=jnp.int32) * chunk)

  def body(carry, x):
    m_bkgt, l_bkgt, acc_btkgh = carry
    k_bckh, v_bckh, valid_bc, slot0 = x
    s_bkgtc = _block_scores(q_btkgh, k_bckh, q_slot_t, valid_bc, slot0, scale)
    m_new = jnp.maximum(m_bkgt, s_bkgtc.max(-1))
    p_bkgtc = jnp.exp(s_bkgtc - m_new[..., None])
    alpha = jnp.exp(m_bkgt - m_new)
    l_new = alpha * l_bkgt + p_bkgtc.sum(-1)
    pv = jnp.einsum("bkgtc,bckh->btkgh", p_bkgtc.astype(v_bckh.dtype), v_bckh,
                    preferred_element_type=jnp.float32)
    acc_new = acc_btkgh * jnp.moveaxis(alpha, 3, 1)[..., None] + pv
    return (m_new, l_new, acc_new), None

  init = (jnp.full((b, kh, g, t), -jnp.inf, jnp.float32), jnp.zeros((b, kh, g, t), jnp.float32),
          jnp.zeros((b, t, kh, g, h), jnp.float32))
  (m, l, acc), _ = jax.lax.scan(body, init, xs)
  out = (acc / jnp.moveaxis(l, 3, 1)[..., None]).astype(v_bskh.dtype)
  lse_bkgt = m + jnp.log(l)
  return out, (q_btkgh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, out, lse_bkgt)


def _flash_bwd(chunk, res, dout_btkgh):
  """Recomputes each key block's probabilities from the saved log-normaliser (FlashAttention-2
  backward): only O(T) residuals are kept between the passes."""
  q_btkgh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, out, lse_bkgt = res
  h = q_btkgh.shape[-1]
  scale = h ** -0.5
  dout32 = dout_btkgh.astype(jnp.float32)
  delta_bkgt = jnp.moveaxis((dout32 * out.astype(jnp.float32)).sum(-1), 1, 3)
  xs = (_blocks(k_bskh, chunk), _blocks(v_bskh, chunk), _blocks(kv_valid_bs, chunk),
        jnp.arange(k_bskh.shape[1] // chunk, dtype=jnp.int32) * chunk)

  def body(dq_btkgh, x):
    k_bckh, v_bckh, valid_bc, slot0 = x
    s_bkgtc = _block_scores(q_btkgh, k_bckh, q_slot_t, valid_bc, slot0, scale)
    p_bkgtc = jnp.exp(s_bkgtc - lse_bkgt[..., None])
    dv_bckh = jnp.einsum("bkgtc,btkgh->bckh", p_bkgtc, dout32)
    dp_bkgtc = jnp.einsum("btkgh,bckh->bkgtc", dout32, v_bckh.astype(jnp.float32))
    ds_bkgtc = p_bkgtc * (dp_bkgtc - delta_bkgt[..., None]) * scale
    ds_bkgtc = jnp.where(s_bkgtc > _MASKED, ds_bkgtc, 0.0)  # masked scores get no gradient
    dq_btkgh = dq_btkgh + jnp.einsum("bkgtc,bckh->btkgh", ds_bkgtc, k_bckh.astype(jnp.float32))
    dk_bckh = jnp.einsum("bkgtc,btkgh->bckh", ds_bkgtc, q_btkgh.astype(jnp.float32))
    return dq_btkgh, (dk_bckh, dv_bckh)

  dq, (dk_nbckh, dv_nbckh) = jax.lax.scan(body, jnp.zeros(q_btkgh.shape, jnp.float32), xs)
  return (dq.astype(q_btkgh.dtype), _unblocks(dk_nbckh).astype(k_bskh.dtype),
          _unblocks(dv_nbckh).astype(v_bskh.dtype), None, None)


_flash.defvjp(_flash_fwd, _flash_bwd)


def attend_chunked(q_btnh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, chunk: int):
  """Attention as `attend` with `attention_mask(q_slot_t, kv_valid_bs)`, in key blocks of
  `chunk` slots: float32 online softmax, never more than [B, H, T, chunk] scores at once, forward
  and backward (custom VJP). Returns [B, T, H, Dh] in v's dtype."""
  b, t, n, h = q_btnh.shape
  s, k = k_bskh.shape[1], k_bskh.shape[2]
  chunk = min(chunk, s)
  pad = -s % chunk
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    k_bskh, v_bskh = jnp.pad(k_bskh, widths), jnp.pad(v_bskh, widths)
    kv_valid_bs = jnp.pad(kv_valid_bs.astype(bool), ((0, 0), (0, pad)))
  out = _flash(q_btnh.reshape(b, t, k, n // k, h), k_bskh, v_bskh,
               jnp.asarray(q_slot_t, jnp.int32), kv_valid_bs.astype(bool), chunk)
  return out.reshape(b, t, n, h)


def attend_xla(q_btnh, k_bskh, v_bskh, q_slot_t, kv_valid_bs):
  """`jax.nn.dot_product_attention` (implementation chosen by XLA: cuDNN flash on GPU)."""
  mask_bts = attention_mask(q_slot_t, kv_valid_bs)
  out = jax.nn.dot_product_attention(q_btnh, k_bskh, v_bskh, mask=mask_bts[:, None],
                                     implementation=None)
  return out.astype(v_bskh.dtype)


def attention(impl: str, chunk: int, q_btnh, k_bskh, v_bskh, q_slot_t, kv_valid_bs):
  """Dispatch by `ModelConfig.attention`; every path computes the same masked GQA softmax."""
  if impl == "chunked":
    return attend_chunked(q_btnh, k_bskh, v_bskh, q_slot_t, kv_valid_bs, chunk)
  if impl == "xla":
    return attend_xla(q_btnh, k_bskh, v_bskh, q_slot_t, kv_valid_bs)
  return attend(q_btnh, k_bskh, v_bskh, attention_mask(q_slot_t, kv_valid_bs))


class Attention(nnx.Module):
  """Q/K/V/O projections (+ optional biases and per-head q/k RMSNorm)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    pd = DTYPES[cfg.param_dtype]
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q_kernel = _param(rngs, (d, n, h), ("embed", "heads", "head_dim"), pd)
    self.k_kernel = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.v_kernel = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.o_kernel = _param(rngs, (n, h, d), ("heads", "head_dim", "embed"), pd)
    if cfg.qkv_bias:
      self.q_bias = _param(rngs, (n, h), ("heads", "head_dim"), pd, init="zeros")
      self.k_bias = _param(rngs, (k, h), ("kv_heads", "head_dim"), pd, init="zeros")
      self.v_bias = _param(rngs, (k, h), ("kv_heads", "head_dim"), pd, init="zeros")
    if cfg.o_bias:
      self.o_bias = _param(rngs, (d,), ("embed",), pd, init="zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm(h, cfg.rms_norm_eps, "head_dim", pd)
      self.k_norm = RMSNorm(h, cfg.rms_norm_eps, "head_dim", pd)
    self.qkv_bias, self.has_o_bias, self.qk_norm = cfg.qkv_bias, cfg.o_bias, cfg.qk_norm

  def qkv(self, x_btd: jax.Array, cos_bth: jax.Array, sin_bth: jax.Array):
    """Projected, normalised and rotated q [B,T,H,Dh], k and v [B,T,K,Dh]."""
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
    self.gate_kernel = _param(rngs, (d, f), ("embed", "mlp"), pd)
    self.up_kernel = _param(rngs, (d, f), ("embed", "mlp"), pd)
    self.down_kernel = _param(rngs, (f, d), ("mlp", "embed"), pd)

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
    q, k, v = self.attn.qkv(self.input_norm(x_btd), cos_bth, sin_bth)
    a = attention(self.attention_impl, self.attention_chunk, q, k, v, q_slot_t, kv_valid_bt)
    x_btd = x_btd + self.attn.out(a)
    return x_btd + self.mlp(self.post_attn_norm(x_btd))

  def forward_cached(self, x_btd, cos_bth, sin_bth, k_cache_lbskh, v_cache_lbskh, layer: int,
                     cache_index, kv_mask_bs):
    """Like __call__, but writes this chunk's k/v into the cache and attends to all slots
    (the configured attention for a chunk of several tokens; the naive path for one token)."""
    q, k, v = self.attn.qkv(self.input_norm(x_btd), cos_bth, sin_bth)
    start = (layer, 0, cache_index, 0, 0)
    k_cache_lbskh = jax.lax.dynamic_update_slice(
        k_cache_lbskh, k[None].astype(k_cache_lbskh.dtype), start)
    v_cache_lbskh = jax.lax.dynamic_update_slice(
        v_cache_lbskh, v[None].astype(v_cache_lbskh.dtype), start)
    impl = self.attention_impl if x_btd.shape[1] > 1 else "naive"
    q_slot_t = cache_index + jnp.arange(x_btd.shape[1], dtype=jnp.int32)
    a = attention(impl, self.attention_chunk, q, k_cache_lbskh[layer].astype(q.dtype),
                  v_cache_lbskh[layer].astype(q.dtype), q_slot_t, kv_mask_bs)
    x_btd = x_btd + self.attn.out(a)
    return x_btd + self.mlp(self.post_attn_norm(x_btd)), k_cache_lbskh, v_cache_lbskh


def _layer_apply(layer: DecoderLayer, x_btd, cos_bth, sin_bth, q_slot_t, kv_valid_bt):
  return layer(x_btd, cos_bth, sin_bth, q_slot_t, kv_valid_bt)


class Qwen(nnx.Module):
  """Decoder-only Qwen2/Qwen3 language model.

  Parameters are stored in `cfg.param_dtype` and cast to `cfg.dtype` at use; every parameter
  carries logical axis names (see `logical_axes`).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    pd = DTYPES[cfg.param_dtype]
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd)
    self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", pd)
    if not cfg.tie_word_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd)

  @property
  def dtype(self):
    return DTYPES[self.config.dtype]

  def _embed(self, input_ids_bt: jax.Array) -> jax.Array:
    return jnp.take(self.embed[...], input_ids_bt, axis=0).astype(self.dtype)

  def head_kernel(self) -> tuple[str, jax.Array]:
    """The LM head's weight and its layout: ("vd", embed [V, D]) when tied, else ("dv", [D, V])."""
    if self.config.tie_word_embeddings:
      return "vd", self.embed[...]
    return "dv", self.lm_head[...]

  def _logits(self, x_btd: jax.Array) -> jax.Array:
    return head_logits(self.final_norm(x_btd), *self.head_kernel())

  def __call__(self, input_ids_bt: jax.Array, positions_bt: jax.Array | None = None,
               attention_mask_bt: jax.Array | None = None) -> jax.Array:
    """Full causal forward pass.

    Args:
      input_ids_bt: int [B, T] token ids.
      positions_bt: int [B, T] RoPE positions. Default: arange(T), or, when a mask is given,
        the count of real tokens before each token (so left padding does not shift positions).
      attention_mask_bt: [B, T] 1/True for real tokens, 0/False for padding; padded keys are
        never attended to (logits at padded queries are meaningless).

    Returns:
      float32 logits [B, T, V].
    """
    input_ids_bt, positions_bt, attention_mask_bt = _checked_inputs(
        input_ids_bt, positions_bt, attention_mask_bt)
    if _is_eager(self, input_ids_bt, positions_bt, attention_mask_bt):
      # Outside any transform: run the whole pass as one compiled program (cached per shape)
      # instead of dispatching each op eagerly.
      graphdef, state = nnx.split(self)
      return _jit_forward(graphdef, state, input_ids_bt, positions_bt, attention_mask_bt)
    return self._forward(input_ids_bt, positions_bt, attention_mask_bt)

  def hidden_states(self, input_ids_bt: jax.Array, positions_bt: jax.Array | None = None,
                    attention_mask_bt: jax.Array | None = None) -> jax.Array:
    """The final-normed hidden states [B, T, D] (compute dtype) that the LM head reads:
    `model(ids)` == `head_logits(model.hidden_states(ids), *model.head_kernel())`. For callers
    that apply the head in pieces (rl/learner.token_logprobs). Call it inside a transform."""
    input_ids_bt, positions_bt, attention_mask_bt = _checked_inputs(
        input_ids_bt, positions_bt, attention_mask_bt)
    return self.final_norm(self._trunk(input_ids_bt, positions_bt, attention_mask_bt))

  def _forward(self, input_ids_bt, positions_bt, attention_mask_bt):
    """The traceable body of __call__ (inputs already validated)."""
    return self._logits(self._trunk(input_ids_bt, positions_bt, attention_mask_bt))

  def _trunk(self, input_ids_bt, positions_bt, attention_mask_bt):
    """Embedding + decoder layers: the residual stream [B, T, D] before the final norm."""
    b, t = input_ids_bt.shape
    if positions_bt is None:
      if attention_mask_bt is None:
        positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      else:
        positions_bt = jnp.maximum(jnp.cumsum(attention_mask_bt.astype(jnp.int32), axis=1) - 1, 0)
    q_slot_t = jnp.arange(t, dtype=jnp.int32)
    kv_valid_bt = (jnp.ones((b, t), bool) if attention_mask_bt is None
                   else attention_mask_bt.astype(bool))

    cos_bth, sin_bth = rope_cos_sin(positions_bt, self.config.head_dim, self.config.rope_theta)
    apply = _layer_apply
    if self.config.remat != "none":
      apply = nnx.remat(_layer_apply, policy=REMAT_POLICIES[self.config.remat])
    x_btd = self._embed(input_ids_bt)
    for layer in self.layers:
      x_btd = apply(layer, x_btd, cos_bth, sin_bth, q_slot_t, kv_valid_bt)
    return x_btd

  def init_cache(self, batch_size: int, max_len: int, dtype: Any = None) -> KVCache:
    """An all-zero cache of `max_len` slots, k/v [L, B, S, K, Dh] in the compute dtype."""
    cfg = self.config
    shape = (cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
    dtype = self.dtype if dtype is None else dtype
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

  def forward_cached(self, input_ids_bt: jax.Array, positions_bt: jax.Array, cache: KVCache,
                     cache_index: jax.Array | int, kv_mask_bs: jax.Array, *,
                     last_only: bool = False):
    """Forward over a chunk of T tokens per sequence, reading and extending the KV cache.

    The chunk's keys/values are written at slots [cache_index, cache_index + T) for every row
    (ragged prompts are LEFT-padded so one index serves the whole batch). The query at slot s
    attends to key slots s' <= s with kv_mask_bs[b, s'] True; the caller marks the chunk's own
    real tokens True in kv_mask_bs before calling.

    Args:
      input_ids_bt: int [B, T].
      positions_bt: int [B, T] per-sequence RoPE positions (pad tokens: any value).
      cache: KVCache with S slots, cache_index + T <= S.
      cache_index: int32 scalar, first slot this chunk writes (checked when concrete; under jit
        the caller guarantees cache_index + T <= S, else XLA clamps the write position).
      kv_mask_bs: bool [B, S] valid key slots.
      last_only: return logits of the chunk's last position only ([B, 1, V]); a prefill needs
        nothing else, and the LM head over every position is a large share of its FLOPs.

    Returns:
      (float32 logits [B, T, V] (or [B, 1, V] with last_only), updated cache).
    """
    input_ids_bt = jnp.asarray(input_ids_bt)
    _check_ids(input_ids_bt)
    b, t = input_ids_bt.shape
    s = cache.max_len
    if cache.batch_size != b:
      raise ValueError(f"forward_cached: cache batch {cache.batch_size} != input batch {b}")
    _check_shape("positions_bt", positions_bt, (b, t))
    _check_shape("kv_mask_bs", kv_mask_bs, (b, s))
    if t > s:
      raise ValueError(f"forward_cached: chunk of {t} tokens does not fit a cache of {s} slots")
    positions_bt, kv_mask_bs = jnp.asarray(positions_bt), jnp.asarray(kv_mask_bs)
    if not isinstance(cache_index, jax.core.Tracer) and not 0 <= int(cache_index) <= s - t:
      # Under jit this cannot be checked: dynamic_update_slice would clamp the start silently.
      raise ValueError(f"forward_cached: cache_index={int(cache_index)} with a chunk of {t} "
                       f"tokens does not fit a cache of {s} slots")
    cache_index = jnp.asarray(cache_index, jnp.int32)
    if _is_eager(self, input_ids_bt, positions_bt, cache.k, cache.v, cache_index, kv_mask_bs):
      graphdef, state = nnx.split(self)
      return _jit_forward_cached(graphdef, state, input_ids_bt, positions_bt, cache, cache_index,
                                 kv_mask_bs, last_only)
    return self._forward_cached(input_ids_bt, positions_bt, cache, cache_index, kv_mask_bs,
                                last_only)

  def _forward_cached(self, input_ids_bt, positions_bt, cache, cache_index, kv_mask_bs,
                      last_only=False):
    """The traceable body of forward_cached (inputs already validated)."""
    kv_mask_bs = kv_mask_bs.astype(bool)
    cos_bth, sin_bth = rope_cos_sin(positions_bt, self.config.head_dim, self.config.rope_theta)
    k_all, v_all = cache.k, cache.v
    x_btd = self._embed(input_ids_bt)
    for i, layer in enumerate(self.layers):
      x_btd, k_all, v_all = layer.forward_cached(x_btd, cos_bth, sin_bth, k_all, v_all, i,
                                                 cache_index, kv_mask_bs)
    if last_only:
      x_btd = x_btd[:, -1:]
    return self._logits(x_btd), KVCache(k=k_all, v=v_all)


def head_logits(x_btd: jax.Array, layout: str, kernel: jax.Array) -> jax.Array:
  """float32 logits [B, T, V] of final-normed hidden states under a head kernel (`head_kernel`);
  the kernel is cast to the activations' dtype and the matmul accumulates in float32."""
  spec = "btd,vd->btv" if layout == "vd" else "btd,dv->btv"
  return jnp.einsum(spec, x_btd, kernel.astype(x_btd.dtype), preferred_element_type=jnp.float32)


def _check_ids(input_ids_bt) -> None:
  if input_ids_bt.ndim != 2 or not jnp.issubdtype(input_ids_bt.dtype, jnp.integer):
    raise ValueError(f"input_ids_bt must be an integer [B, T] array, got dtype "
                     f"{input_ids_bt.dtype} shape {input_ids_bt.shape}")


def _check_shape(name: str, x, shape: tuple[int, ...]) -> None:
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def _checked_inputs(input_ids_bt, positions_bt, attention_mask_bt):
  """Validated forward inputs: ids [B, T], optional positions [B, T], optional bool mask [B, T]."""
  input_ids_bt = jnp.asarray(input_ids_bt)
  _check_ids(input_ids_bt)
  b, t = input_ids_bt.shape
  if attention_mask_bt is not None:
    _check_shape("attention_mask_bt", attention_mask_bt, (b, t))
    attention_mask_bt = jnp.asarray(attention_mask_bt).astype(bool)
  if positions_bt is not None:
    _check_shape("positions_bt", positions_bt, (b, t))
    positions_bt = jnp.asarray(positions_bt)
  return input_ids_bt, positions_bt, attention_mask_bt


def _is_eager(model: Qwen, *arrays) -> bool:
  """True when called outside jit/grad/vmap (no tracers among the inputs or the params)."""
  leaves = [model.embed.get_value(), *jax.tree.leaves(arrays)]
  return not any(isinstance(x, jax.core.Tracer) for x in leaves)


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(graphdef, state, input_ids_bt, positions_bt, attention_mask_bt):
  return nnx.merge(graphdef, state)._forward(input_ids_bt, positions_bt, attention_mask_bt)


@functools.partial(jax.jit, static_argnums=(0, 7))
def _jit_forward_cached(graphdef, state, input_ids_bt, positions_bt, cache, cache_index,
                        kv_mask_bs, last_only=False):
  return nnx.merge(graphdef, state)._forward_cached(input_ids_bt, positions_bt, cache,
                                                    cache_index, kv_mask_bs, last_only)


@functools.lru_cache(maxsize=16)
def _abstract_split(cfg: ModelConfig):
  return nnx.split(abstract_model(cfg))


@functools.partial(jax.jit, static_argnums=(0,))
def init_params(cfg: ModelConfig, key: jax.Array) -> nnx.State:
  """Random params as an nnx.State shaped like `nnx.state(model, nnx.Param)` (jitted).

  All weights come from ONE normal draw, sliced: XLA compiles one RNG instead of one per param
  (seconds instead of tens of seconds on CPU). Call it inside a jit with out_shardings to
  create the params already sharded; `nnx.merge(nnx.split(abstract_model(cfg))[0], params)`
  makes the model.
  """
  _, abstract = _abstract_split(cfg)
  is_var = lambda x: isinstance(x, nnx.Variable)
  variables = jax.tree.leaves(abstract, is_leaf=is_var)
  sizes = [v.get_value().size for v in variables if v.get_metadata()["init"] == "normal"]
  noise = 0.02 * jax.random.normal(key, (sum(sizes),), jnp.float32)
  values, offset = [], 0
  for v in variables:
    shape, dtype, init = v.get_value().shape, v.get_value().dtype, v.get_metadata()["init"]
    if init == "normal":
      size = v.get_value().size
      values.append(noise[offset:offset + size].reshape(shape).astype(dtype))
      offset += size
    else:
      values.append(jnp.full(shape, 1.0 if init == "ones" else 0.0, dtype))
  values = iter(values)
  return jax.tree.map(lambda v: v.replace(next(values)), abstract, is_leaf=is_var)


def init_model(cfg: ModelConfig, seed: int = 0) -> Qwen:
  """A randomly initialised model: normal(0, 0.02) weights, unit norms, zero biases.

  Built in one compiled program (weights differ from `Qwen(cfg, rngs=nnx.Rngs(seed))`, which
  draws per parameter); parameters land on the default device.
  """
  graphdef, _ = _abstract_split(cfg)
  return nnx.merge(graphdef, init_params(cfg, jax.random.key(seed)))


def abstract_model(cfg: ModelConfig) -> Qwen:
  """The model's structure with jax.ShapeDtypeStruct leaves (no memory allocated)."""
  return nnx.eval_shape(lambda: Qwen(cfg, rngs=nnx.Rngs(params=0)))


def with_config(model: Qwen, **changes: Any) -> Qwen:
  """The same parameters (no copy) under a config with `changes` that keep every param's shape,
  e.g. `with_config(model, attention="chunked")` for a model from `from_pretrained`."""
  cfg = model.config.replace(**changes)
  graphdef, _ = _abstract_split(cfg)
  return nnx.merge(graphdef, nnx.state(model, nnx.Param))


def logical_axes(model: Qwen) -> nnx.State:
  """The params' logical axis names: an nnx.State of PartitionSpecs (e.g. ('vocab', 'embed'))
  with the same structure as `nnx.state(model, nnx.Param)`."""
  state = nnx.state(model, nnx.Param)
  return jax.tree.map(
      lambda v: jax.sharding.PartitionSpec(*v.get_metadata()["out_sharding"]),
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))
