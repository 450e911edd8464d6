"""Attention as pure functions: RoPE, the causal/validity mask and the masked grouped-query
softmax, in three interchangeable implementations chosen by `ModelConfig.attention`.

Contract: `attention(impl, chunk, q [B,T,H,Dh], k [B,K,S,Dh], v [B,K,S,Dh], q_slot_t [T],
kv_valid_bs [B,S]) -> [B,T,H,Dh]` in v's dtype. Keys and values are head-major, as the KV cache
(models/qwen.KVCache) holds them: the score and value dots batch over (b, k), and with (b, k)
leading and contiguous XLA reads the cache as it lies instead of transposing all of it on every
decode step (6.5 -> 3.9 ms per layer, batch 16 x 1088 slots, 2-core CPU). Query t (at cache slot
q_slot_t[t]) sees key slot s <= q_slot_t[t] where kv_valid_bs[b, s]. Scores and softmax are
float32 on every path:
  naive    `attend`: materialises the [B, H, T, S] scores.
  blocked  `attend_blocked` in a full causal pass (the learner, SFT: queries at slots 0..T-1 over
           their own keys): `attend` per block of `chunk` queries over the keys up to the
           block's end only, so the masked upper triangle is never computed (~0.6x the
           scores at 5 blocks) and each block's scores stay small enough for the CPU's caches;
           `attend` elsewhere (prefill into a cache, whose query slots are dynamic).
  chunked  `attend_chunked`: online softmax over key blocks (FlashAttention-2 style custom VJP),
           O(T * chunk) scores forward and backward, pure JAX on any backend.
  xla      `attend_xla`: jax.nn.dot_product_attention with implementation=None, which on jax 0.10
           is XLA's own path (it materialises the scores like naive; cuDNN flash needs
           implementation="cudnn", not wired here until a GPU can verify it).
Outputs at fully masked (padded) queries are meaningless on every path. A decode step (one query
token) always runs `attend_one`, the same softmax as fused products and sums over the cache's own
layout (keys slot-minor [B, K, Dh, S]).

Dimension letters as in models/qwen.py: B batch, T query tokens, S key slots, H query heads,
K kv heads, G query heads per kv head, h head_dim, C key block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_MASKED = float(jnp.finfo(jnp.float32).min)


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


def attend(q_btnh: jax.Array, k_bksh: jax.Array, v_bksh: jax.Array, mask_bts: jax.Array):
  """Grouped-query attention; float32 scores and softmax. Returns [B, T, H, Dh]."""
  b, t, n, h = q_btnh.shape
  k = k_bksh.shape[1]
  q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
  scores = jnp.einsum("btkgh,bksh->bkgts", q_btkgh, k_bksh,
                      preferred_element_type=jnp.float32) * (h ** -0.5)
  scores = jnp.where(mask_bts[:, None, None, :, :], scores, _MASKED)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_bksh.dtype)
  out = jnp.einsum("bkgts,bksh->btkgh", probs, v_bksh)
  return out.reshape(b, t, n, h)


def attend_blocked(q_btnh: jax.Array, k_bksh: jax.Array, v_bksh: jax.Array,
                   kv_valid_bs: jax.Array, chunk: int):
  """Causal self-attention (query t at slot t, S == T) as `attend` over blocks of `chunk`
  queries: block [i, j) reads keys [0, j) only, the rest of its row is masked anyway. The same
  masked softmax as `attend` (masked keys add exact zeros). Returns [B, T, H, Dh]."""
  t = q_btnh.shape[1]
  if k_bksh.shape[2] != t:
    raise ValueError(f"attend_blocked needs keys at the queries' slots (S == T), got "
                     f"S={k_bksh.shape[2]}, T={t}")
  chunk = max(1, min(int(chunk), t))
  valid_bs = kv_valid_bs.astype(bool)
  outs = []
  for i in range(0, t, chunk):
    j = min(i + chunk, t)
    mask_bts = attention_mask(jnp.arange(i, j, dtype=jnp.int32), valid_bs[:, :j])
    outs.append(attend(q_btnh[:, i:j], k_bksh[:, :, :j], v_bksh[:, :, :j], mask_bts))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def attend_one(q_b1nh: jax.Array, k_bkhs: jax.Array, v_bksh: jax.Array, mask_bs: jax.Array):
  """`attend` for one query token per row (a decode step), as float32 products and reductions,
  on the KV cache's own layout: keys slot-minor [B, K, Dh, S], values [B, K, S, Dh].

  XLA on CPU fuses these with the read of the cache, where a batched dot over (b, k) with G rows
  runs as many tiny matmuls (the step was ~1.4x slower that way: tiny model, batch 16, 1088
  slots). Both sums then run along a contiguous axis: the scores add Dh rows of S slots, the
  output adds S rows of Dh values. The same masked softmax as `attend`; sums run in another
  order (float32 rounding). Returns [B, 1, H, Dh] in v's dtype.
  """
  b, t, n, h = q_b1nh.shape
  k = k_bkhs.shape[1]
  q_bkgh = q_b1nh.reshape(b, k, n // k, h).astype(jnp.float32)
  scores_bkgs = jnp.sum(q_bkgh[..., None] * k_bkhs[:, :, None].astype(jnp.float32),
                        axis=-2) * (h ** -0.5)
  scores_bkgs = jnp.where(mask_bs[:, None, None, :], scores_bkgs, _MASKED)
  probs_bkgs = jax.nn.softmax(scores_bkgs, axis=-1)
  out_bkgh = jnp.sum(probs_bkgs[..., None] * v_bksh[:, :, None].astype(jnp.float32), axis=-2)
  return out_bkgh.astype(v_bksh.dtype).reshape(b, t, n, h)


def attention_mask(q_slot_t: jax.Array, kv_valid_bs: jax.Array) -> jax.Array:
  """bool [B, T, S]: query t (at cache slot q_slot_t[t]) sees key slot s <= it when valid."""
  s = kv_valid_bs.shape[1]
  causal_ts = jnp.arange(s, dtype=jnp.int32)[None, :] <= q_slot_t[:, None]
  return causal_ts[None] & kv_valid_bs.astype(bool)[:, None, :]


def _block_scores(q_btkgh, k_bkch, q_slot_t, valid_bc, slot0, scale):
  """Masked float32 scores [B, K, G, T, C] of all queries against one key block."""
  c = k_bkch.shape[2]
  scores = jnp.einsum("btkgh,bkch->bkgtc", q_btkgh, k_bkch,
                      preferred_element_type=jnp.float32) * scale
  causal_tc = (slot0 + jnp.arange(c, dtype=jnp.int32))[None, :] <= q_slot_t[:, None]
  mask = causal_tc[None, None, None] & valid_bc[:, None, None, None, :]
  return jnp.where(mask, scores, _MASKED)


def _blocks(x, chunk, axis):
  """Splits `axis` (S, a multiple of chunk) into blocks and leads with the block index:
  [B, S] -> [S // chunk, B, chunk]; [B, K, S, Dh] (axis 2) -> [S // chunk, B, K, chunk, Dh]."""
  shape = x.shape
  x = x.reshape(shape[:axis] + (shape[axis] // chunk, chunk) + shape[axis + 1:])
  return jnp.moveaxis(x, axis, 0)


def _unblocks(x_nbkch):
  """[N, B, K, C, Dh] -> [B, K, N * C, Dh] (inverse of `_blocks` on axis 2)."""
  n, b, k, c, h = x_nbkch.shape
  return jnp.moveaxis(x_nbkch, 0, 2).reshape(b, k, n * c, h)


def _kv_blocks(k_bksh, v_bksh, kv_valid_bs, chunk):
  """The scan inputs of the flash passes: key/value/validity blocks and each block's first slot."""
  return (_blocks(k_bksh, chunk, 2), _blocks(v_bksh, chunk, 2), _blocks(kv_valid_bs, chunk, 1),
          jnp.arange(k_bksh.shape[2] // chunk, dtype=jnp.int32) * chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q_btkgh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, chunk):
  return _flash_fwd(q_btkgh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, chunk)[0]


def _flash_fwd(q_btkgh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, chunk):
  """Online softmax over key blocks: running max m, normaliser l and float32 accumulator."""
  b, t, kh, g, h = q_btkgh.shape
  scale = h ** -0.5
  xs = _kv_blocks(k_bksh, v_bksh, kv_valid_bs, chunk)

  def body(carry, x):
    m_bkgt, l_bkgt, acc_btkgh = carry
    k_bkch, v_bkch, valid_bc, slot0 = x
    s_bkgtc = _block_scores(q_btkgh, k_bkch, q_slot_t, valid_bc, slot0, scale)
    m_new = jnp.maximum(m_bkgt, s_bkgtc.max(-1))
    p_bkgtc = jnp.exp(s_bkgtc - m_new[..., None])
    alpha = jnp.exp(m_bkgt - m_new)
    l_new = alpha * l_bkgt + p_bkgtc.sum(-1)
    pv = jnp.einsum("bkgtc,bkch->btkgh", p_bkgtc.astype(v_bkch.dtype), v_bkch,
                    preferred_element_type=jnp.float32)
    acc_new = acc_btkgh * jnp.moveaxis(alpha, 3, 1)[..., None] + pv
    return (m_new, l_new, acc_new), None

  init = (jnp.full((b, kh, g, t), -jnp.inf, jnp.float32), jnp.zeros((b, kh, g, t), jnp.float32),
          jnp.zeros((b, t, kh, g, h), jnp.float32))
  (m, l, acc), _ = jax.lax.scan(body, init, xs)
  out = (acc / jnp.moveaxis(l, 3, 1)[..., None]).astype(v_bksh.dtype)
  lse_bkgt = m + jnp.log(l)
  return out, (q_btkgh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, out, lse_bkgt)


def _flash_bwd(chunk, res, dout_btkgh):
  """Recomputes each key block's probabilities from the saved log-normaliser (FlashAttention-2
  backward): only O(T) residuals are kept between the passes."""
  q_btkgh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, out, lse_bkgt = res
  h = q_btkgh.shape[-1]
  scale = h ** -0.5
  dout32 = dout_btkgh.astype(jnp.float32)
  delta_bkgt = jnp.moveaxis((dout32 * out.astype(jnp.float32)).sum(-1), 1, 3)
  xs = _kv_blocks(k_bksh, v_bksh, kv_valid_bs, chunk)

  def body(dq_btkgh, x):
    k_bkch, v_bkch, valid_bc, slot0 = x
    s_bkgtc = _block_scores(q_btkgh, k_bkch, q_slot_t, valid_bc, slot0, scale)
    p_bkgtc = jnp.exp(s_bkgtc - lse_bkgt[..., None])
    dv_bkch = jnp.einsum("bkgtc,btkgh->bkch", p_bkgtc, dout32)
    dp_bkgtc = jnp.einsum("btkgh,bkch->bkgtc", dout32, v_bkch.astype(jnp.float32))
    ds_bkgtc = p_bkgtc * (dp_bkgtc - delta_bkgt[..., None]) * scale
    ds_bkgtc = jnp.where(s_bkgtc > _MASKED, ds_bkgtc, 0.0)  # masked scores get no gradient
    dq_btkgh = dq_btkgh + jnp.einsum("bkgtc,bkch->btkgh", ds_bkgtc, k_bkch.astype(jnp.float32))
    dk_bkch = jnp.einsum("bkgtc,btkgh->bkch", ds_bkgtc, q_btkgh.astype(jnp.float32))
    return dq_btkgh, (dk_bkch, dv_bkch)

  dq, (dk_nbkch, dv_nbkch) = jax.lax.scan(body, jnp.zeros(q_btkgh.shape, jnp.float32), xs)
  return (dq.astype(q_btkgh.dtype), _unblocks(dk_nbkch).astype(k_bksh.dtype),
          _unblocks(dv_nbkch).astype(v_bksh.dtype), None, None)


_flash.defvjp(_flash_fwd, _flash_bwd)


def attend_chunked(q_btnh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, chunk: int):
  """Attention as `attend` with `attention_mask(q_slot_t, kv_valid_bs)`, in key blocks of
  `chunk` slots: float32 online softmax, never more than [B, H, T, chunk] scores at once, forward
  and backward (custom VJP). Returns [B, T, H, Dh] in v's dtype."""
  b, t, n, h = q_btnh.shape
  k, s = k_bksh.shape[1], k_bksh.shape[2]
  chunk = min(chunk, s)
  pad = -s % chunk
  if pad:
    widths = ((0, 0), (0, 0), (0, pad), (0, 0))
    k_bksh, v_bksh = jnp.pad(k_bksh, widths), jnp.pad(v_bksh, widths)
    kv_valid_bs = jnp.pad(kv_valid_bs.astype(bool), ((0, 0), (0, pad)))
  out = _flash(q_btnh.reshape(b, t, k, n // k, h), k_bksh, v_bksh,
               jnp.asarray(q_slot_t, jnp.int32), kv_valid_bs.astype(bool), chunk)
  return out.reshape(b, t, n, h)


def attend_xla(q_btnh, k_bksh, v_bksh, q_slot_t, kv_valid_bs):
  """`jax.nn.dot_product_attention` (implementation=None: XLA's path on jax 0.10, not cuDNN
  flash), which takes sequence-major [B, S, K, Dh] keys and values."""
  mask_bts = attention_mask(q_slot_t, kv_valid_bs)
  out = jax.nn.dot_product_attention(q_btnh, jnp.swapaxes(k_bksh, 1, 2),
                                     jnp.swapaxes(v_bksh, 1, 2), mask=mask_bts[:, None],
                                     implementation=None)
  return out.astype(v_bksh.dtype)


def attention(impl: str, chunk: int, q_btnh, k_bksh, v_bksh, q_slot_t, kv_valid_bs):
  """Dispatch by `ModelConfig.attention`; every path computes the same masked GQA softmax.
  "blocked" is `attend` here: its causal blocks need the full pass's static slots
  (`self_attention`)."""
  if impl == "chunked":
    return attend_chunked(q_btnh, k_bksh, v_bksh, q_slot_t, kv_valid_bs, chunk)
  if impl == "xla":
    return attend_xla(q_btnh, k_bksh, v_bksh, q_slot_t, kv_valid_bs)
  return attend(q_btnh, k_bksh, v_bksh, attention_mask(q_slot_t, kv_valid_bs))


def self_attention(impl: str, chunk: int, q_btnh, k_bksh, v_bksh, kv_valid_bs):
  """A full causal pass: query t at slot t over the sequence's own keys (S == T)."""
  if impl == "blocked":
    return attend_blocked(q_btnh, k_bksh, v_bksh, kv_valid_bs, chunk)
  t = q_btnh.shape[1]
  return attention(impl, chunk, q_btnh, k_bksh, v_bksh, jnp.arange(t, dtype=jnp.int32),
                   kv_valid_bs)
