"""The compiled generation program of `JaxEngine` (inference/sampler.py): chunked prefill into a
KV cache, then a `lax.while_loop` decode, on bucketed arrays inside one `jit`.

Layout of one call (B prompts, bucketed to Bb rows and Pb prompt slots, Nb new-token slots):

    cache slots   [0 ........ Pb) [Pb ........... Pb+Nb)
    row r         pad.. prompt_r   t0 t1 t2 ...             (prompts are LEFT-padded)

Every row's prompt ends at slot Pb-1, so the prefill is one `forward_cached` over [Bb, Pb] and
decode step i writes token i-1 at slot Pb+i-1 for the whole batch (a scalar cache index).
RoPE positions are per row (slot minus that row's padding) and `kv_mask_bs` hides the padding
slots, so a left-padded prompt sees exactly what it would see alone. The decode loop is a
`lax.while_loop` that stops as soon as every row has sampled a stop token (or at
max_new_tokens); with `decode_stages` > 1 it runs in stages of shrinking batch size, the
unfinished rows gathered into each (`stage_sizes`). Shapes are rounded up to buckets (powers of
two; long prompts also 1.5x powers of two, sampler.prompt_bucket) and the sampling knobs are
traced scalars, so repeated calls reuse compiled code.

The prefill computes the LM head at the last prompt position only; long prompts are prefilled in
chunks that bound the attention scores and MLP activations of one chunk (see
`prefill_chunk_size`).

Compilations are counted: `trace_count()` (a retrace means a new bucket or a new static knob).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from synthagent_jax.inference import sampling as sampling_lib

_TRACES = {"count": 0}


def trace_count() -> int:
  """How many times the generation function has been traced (= compiled) in this process."""
  return _TRACES["count"]


def prefill_chunk_size(batch: int, prompt_slots: int, cache_slots: int, num_heads: int,
                       intermediate_size: int, max_bytes: int) -> int:
  """Prompt slots per prefill chunk so one chunk's largest float32 temporaries fit `max_bytes`.

  Those are the attention scores [B, H, C, S] (a chunk's queries against every cache slot) and
  the MLP activations [B, C, I]; the LM head runs at the last position only (`last_only`). The
  result is prompt_slots halved until it fits (or is 16 or less); prompt_slots is a power of two
  or 3x one (sampler.prompt_bucket), so every halving still divides it.
  """
  per_slot = batch * max(num_heads * cache_slots, intermediate_size) * 4
  chunk = prompt_slots
  while chunk > 16 and chunk * per_slot > max_bytes:
    chunk //= 2
  return chunk


def _prefill(model, prompt_bp, positions_bp, cache, kv_mask_bs, chunk, first_slot=0):
  """Runs prompt slots [first_slot, Pb) through the cache in chunks of `chunk` slots (slots before
  `first_slot` already hold their keys/values); returns the last logits [B, V]."""
  batch = prompt_bp.shape[0]
  prompt_bp, positions_bp = prompt_bp[:, first_slot:], positions_bp[:, first_slot:]
  prompt_slots = prompt_bp.shape[1]
  if chunk >= prompt_slots:
    logits_b1v, cache = model.forward_cached(prompt_bp, positions_bp, cache,
                                             jnp.int32(first_slot), kv_mask_bs, last_only=True)
    return logits_b1v[:, -1, :], cache

  def body(i, carry):
    cache, _ = carry
    start = (i * chunk).astype(jnp.int32)
    ids_bc = jax.lax.dynamic_slice(prompt_bp, (0, start), (batch, chunk))
    pos_bc = jax.lax.dynamic_slice(positions_bp, (0, start), (batch, chunk))
    logits_b1v, cache = model.forward_cached(ids_bc, pos_bc, cache, first_slot + start,
                                             kv_mask_bs, last_only=True)
    return cache, logits_b1v[:, -1, :]

  vocab = model.config.vocab_size
  init = (cache, jnp.zeros((batch, vocab), jnp.float32))
  cache, last_bv = jax.lax.fori_loop(0, prompt_slots // chunk, body, init)
  return last_bv, cache


@functools.partial(jax.jit, static_argnames=("graphdef", "mode", "new_tokens_bucket",
                                             "prefill_chunk", "prefill_slots", "decode_stages"))
def generate_padded(graphdef, state, prompt_bp, prompt_len_b, active_b, seed_b, stream_b,
                     temperature, top_p, top_k, stop_ids_s, max_new_tokens, cache_in=None,
                     prompt_row_b=None, *, mode, new_tokens_bucket, prefill_chunk,
                     prefill_slots=None, decode_stages=1):
  """Prefill + decode on bucketed arrays.

  Args:
    graphdef: nnx GraphDef of the model (static).
    state: nnx State (the parameters), any sharding.
    prompt_bp: int32 [Bb, Pb] left-padded prompts ([Ub, Pb] with prompt_row_b).
    prompt_len_b: int32 [Bb] real prompt lengths (>= 1) ([Ub] with prompt_row_b).
    active_b: bool [Bb]; False rows are batch padding (finished from the start).
    seed_b, stream_b: int32 [Bb]; row r samples with fold_in(key(seed_b[r]), stream_b[r]), so its
      draws do not depend on the other rows, the batch bucket or chunking.
    temperature, top_p: float32 scalars; top_k: int32 scalar.
    stop_ids_s: int32 [S] stop ids padded with -1.
    max_new_tokens: int32 scalar <= new_tokens_bucket.
    mode: static sampling mode (see sampling_lib.MODES).
    cache_in: None (start from an empty cache), or a KVCache of Pb + Nb slots whose prompt slots
      before Pb - prefill_slots already hold each row's keys/values (reused prefixes).
    new_tokens_bucket: static Nb, cache room for new tokens.
    prefill_chunk: static prompt slots per prefill step (see prefill_chunk_size).
    prefill_slots: static W <= Pb, the last prompt slots to run through the model (None: all).
    prompt_row_b: None, or int32 [Bb] with cache_in None: row b's prompt is
      prompt_bp[prompt_row_b[b]]. prompt_bp then holds Ub distinct prompts (a GRPO group's
      episodes share their first prompt) and only those are prefilled; each row gets a copy of
      its prompt's keys/values and last logits, then samples with its own stream.
    decode_stages: static; 1 decodes every row until all are done. With n > 1 the loop runs in up
      to n stages of `stage_sizes(Bb, n)` rows: once no more rows are unfinished than the next
      stage holds, those rows (and finished ones to fill it) are gathered into it, cache
      included, and the stages' caches are written back into the full one at the end. Batch
      padding and finished rows stop costing decode steps; each row's draws are its own, so the
      tokens are the same up to float rounding. Costs up to 1/2 + 1/4 + ... more cache memory.

  Returns:
    tokens_bn int32 [Bb, Nb] (-1 after a row finished), logprobs_bn float32 [Bb, Nb] (0 there),
    num_steps int32 scalar (decode steps run, prefill's token included), and the final KVCache.
  """
  _TRACES["count"] += 1
  model = nnx.merge(graphdef, state)
  prefill_batch, prompt_slots = prompt_bp.shape
  batch = active_b.shape[0]
  num_slots = prompt_slots + new_tokens_bucket
  pad_b = prompt_slots - prompt_len_b
  kv_mask_bs = jnp.arange(num_slots)[None, :] >= pad_b[:, None]
  positions_bp = jnp.maximum(jnp.arange(prompt_slots)[None, :] - pad_b[:, None], 0)

  def is_stop(tokens_b):
    return jnp.any(tokens_b[:, None] == stop_ids_s[None, :], axis=-1)

  def pick(logits_bv, keys_b, step):
    keys_b = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys_b)
    return sampling_lib.sample_step(logits_bv, keys_b, temperature, top_p, top_k, mode)

  cache = model.init_cache(prefill_batch, num_slots) if cache_in is None else cache_in
  first_slot = 0 if prefill_slots is None else prompt_slots - prefill_slots
  last_bv, cache = _prefill(model, prompt_bp, positions_bp.astype(jnp.int32), cache, kv_mask_bs,
                           prefill_chunk, first_slot)
  if prompt_row_b is not None:  # each row takes its prompt's prefill
    last_bv, cache, kv_mask_bs, prompt_len_b = jax.tree.map(
        lambda x: x[prompt_row_b], (last_bv, cache, kv_mask_bs, prompt_len_b))
  row_keys_b = jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seed_b, stream_b)
  token_b, logprob_b = pick(last_bv, row_keys_b, 0)
  token_b = jnp.where(active_b, token_b, -1)
  tokens_bn = jnp.full((batch, new_tokens_bucket), -1, jnp.int32).at[:, 0].set(token_b)
  logprobs_bn = jnp.zeros((batch, new_tokens_bucket), jnp.float32).at[:, 0].set(
      jnp.where(active_b, logprob_b, 0.0))
  done_b = ~active_b | is_stop(token_b)

  def body(carry):
    step, rows, tokens_bn, logprobs_bn = carry
    cache, last_b, done_b, row_b, len_b, keys_b, mask_bs = rows
    positions_b1 = (len_b + step - 1)[:, None].astype(jnp.int32)
    feed_b1 = jnp.maximum(last_b, 0)[:, None]  # finished rows feed a harmless id
    logits_b1v, cache = model.forward_cached(feed_b1, positions_b1, cache,
                                             (prompt_slots + step - 1).astype(jnp.int32),
                                             mask_bs)
    token_b, logprob_b = pick(logits_b1v[:, 0, :], keys_b, step)
    token_b = jnp.where(done_b, -1, token_b)
    # Rows are distinct batch rows; a finished row writes what its slot already holds.
    tokens_bn = tokens_bn.at[row_b, step].set(token_b)
    logprobs_bn = logprobs_bn.at[row_b, step].set(jnp.where(done_b, 0.0, logprob_b))
    done_b = done_b | is_stop(token_b)
    rows = (cache, token_b, done_b, row_b, len_b, keys_b, mask_bs)
    return step + 1, rows, tokens_bn, logprobs_bn

  sizes = stage_sizes(batch, decode_stages)
  rows = (cache, token_b, done_b, jnp.arange(batch, dtype=jnp.int32), prompt_len_b, row_keys_b,
          kv_mask_bs)
  carry, kept = (jnp.int32(1), rows, tokens_bn, logprobs_bn), []
  for k, size in enumerate(sizes):
    if k:  # the unfinished rows first (stable), as a batch of `size` rows
      order_n = jnp.argsort(carry[1][2], stable=True)[:size]
      kept.append((carry[1][0], order_n))
      carry = (carry[0], jax.tree.map(lambda x, o=order_n: x[o], carry[1])) + carry[2:]
    below = sizes[k + 1] if k + 1 < len(sizes) else 0

    def cond(carry, below=below):
      step, rows = carry[:2]
      alive = jnp.sum(~rows[2])
      return (step < max_new_tokens) & (alive > below)

    carry = jax.lax.while_loop(cond, body, carry)
  num_steps, (cache, *_), tokens_bn, logprobs_bn = carry
  for big, order_n in reversed(kept):  # the full batch's cache, every row's keys/values
    cache = jax.tree.map(lambda b, s, o=order_n: b.at[o].set(s), big, cache)
  return tokens_bn, logprobs_bn, num_steps, cache


def stage_sizes(batch: int, stages: int) -> tuple[int, ...]:
  """Batch sizes of the decode's stages: `batch`, then halved (rounded up) `stages - 1` times,
  without repeats. `stage_sizes(16, 3) == (16, 8, 4)`, `stage_sizes(2, 3) == (2, 1)`."""
  if stages < 1:
    raise ValueError(f"decode stages must be >= 1, got {stages}")
  sizes = [batch]
  for _ in range(stages - 1):
    if sizes[-1] == 1:
      break
    sizes.append(-(-sizes[-1] // 2))
  return tuple(sizes)


@functools.partial(jax.jit, static_argnames=("num_slots",), donate_argnames=("dst",))
def copy_prefixes(dst, src, src_row_b, src_start_b, dst_start_b, length_b, *, num_slots):
  """Copies, for every row b, `length_b[b]` slots of stored row `src_row_b[b]` starting at
  `src_start_b[b]` into slots [dst_start_b[b], + length_b[b]) of the new cache (rows with
  length 0 are left as they are). dst, src: KVCaches (models/qwen.KVCache: per layer k
  [B, K, Dh, S], v [B, K, S, Dh]); src may have another batch size and slot count. Returns the
  new dst."""
  slot_s = jnp.arange(num_slots, dtype=jnp.int32)
  offset_bs = slot_s[None, :] - dst_start_b[:, None]
  take_bs = (offset_bs >= 0) & (offset_bs < length_b[:, None])
  src_slot_bs = jnp.clip(src_start_b[:, None] + offset_bs, 0, src.max_len - 1)

  def copy(axis):  # for arrays whose slots lie along `axis`
    # [B, S] -> rank 4, S at `axis`, size-1 dims elsewhere
    take, src_slot = (jnp.expand_dims(x, [d for d in (1, 2, 3) if d != axis])
                      for x in (take_bs, src_slot_bs))

    def one(x_dst, x_src):  # row src_row_b[b], slots src_slot[b] of x_src
      rows = jnp.take_along_axis(x_src[src_row_b], src_slot, axis=axis)
      return jnp.where(take, rows.astype(x_dst.dtype), x_dst)
    return one

  return type(dst)(k=tuple(map(copy(dst.SLOT_AXIS_K), dst.k, src.k)),
                   v=tuple(map(copy(dst.SLOT_AXIS_V), dst.v, src.v)))
