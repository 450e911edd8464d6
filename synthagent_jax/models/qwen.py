"""Qwen2/Qwen2.5/Qwen3 decoder in Flax NNX, with a KV-cache path for batched decoding.

Numerics follow transformers' Qwen2/Qwen3 modeling code: RMSNorm normalises in float32 and
multiplies by its weight in the compute dtype; RoPE uses the rotate_half convention (the two
halves of each head are the real and imaginary parts); attention scores and softmax are float32;
logits are returned as float32. The blocks live in models/layers.py, the attention math (RoPE,
masks, the naive/chunked/xla paths) in models/attention.py; this module is the model: embedding,
layer stack, LM head, KV cache, and parameter creation.

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

from synthagent_jax.models.attention import rope_cos_sin
from synthagent_jax.models.config import ModelConfig
from synthagent_jax.models.layers import DTYPES, DecoderLayer, RMSNorm, logical_param

# remat name -> jax.checkpoint policy (None: save nothing, recompute the whole layer).
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@flax.struct.dataclass
class KVCache:
  """Keys and values of a batch, one head-major array per layer, slot-indexed.

  Head-major (K before S) so the attention reads each layer's cache as it lies (its products
  batch over (b, k)); one array per layer (not one [L, ...] array) so a decode step updates each
  layer in place and reads it without first copying out a [L]-slice. On a 2-core CPU (tiny
  model, batch 16, 1088 slots) a decode step costs ~10 ms this way vs ~21 ms with one
  [L, B, S, K, Dh] array, which XLA sliced and transposed per layer on every step.

  Keys are slot-minor ([B, K, Dh, S]): a decode step's scores q . k sum over Dh, and with the
  slots contiguous that sum is a run of vector multiply-adds over S; over [B, K, S, Dh] it was a
  horizontal sum per slot, 2.5x slower (docs/benchmarks.md, session 17). Values stay slot-major,
  where the output's sum over S is the vector-friendly one.

  Attributes:
    k: tuple of L arrays [B, K, Dh, S], keys after RoPE (and qk-norm), compute dtype.
    v: tuple of L arrays [B, K, S, Dh], values.
  """

  SLOT_AXIS_K = 3
  SLOT_AXIS_V = 2

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def max_len(self) -> int:
    return self.v[0].shape[self.SLOT_AXIS_V]

  @property
  def batch_size(self) -> int:
    return self.k[0].shape[0]

  @property
  def nbytes(self) -> int:
    return sum(x.nbytes for x in (*self.k, *self.v))

  def take_rows(self, rows_n: jax.Array) -> "KVCache":
    """The cache of rows `rows_n` (int [N]) of this batch, in that order."""
    return jax.tree.map(lambda x: jnp.take(x, rows_n, axis=0), self)


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
    self.embed = logical_param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd)
    self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, "embed", pd)
    if not cfg.tie_word_embeddings:
      self.lm_head = logical_param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd)

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
    """An all-zero cache of `max_len` slots: per layer, k [B, K, Dh, S] and v [B, K, S, Dh] in
    the compute dtype."""
    cfg = self.config
    b, k, s, h = batch_size, cfg.num_kv_heads, max_len, cfg.head_dim
    dtype = self.dtype if dtype is None else dtype
    zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return KVCache(k=zeros((b, k, h, s)), v=zeros((b, k, s, h)))

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
    ks, vs = [], []
    x_btd = self._embed(input_ids_bt)
    for layer, k_bkhs, v_bksh in zip(self.layers, cache.k, cache.v, strict=True):
      x_btd, k_bkhs, v_bksh = layer.forward_cached(x_btd, cos_bth, sin_bth, k_bkhs, v_bksh,
                                                   cache_index, kv_mask_bs)
      ks.append(k_bkhs)
      vs.append(v_bksh)
    if last_only:
      x_btd = x_btd[:, -1:]
    return self._logits(x_btd), KVCache(k=tuple(ks), v=tuple(vs))


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