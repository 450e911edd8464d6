"""The in-process JAX sampler: batched prefill + KV-cache decode, all inside one `jit`.

Layout of one call (B prompts, bucketed to Bb rows and Pb prompt slots, Nb new-token slots):

    cache slots   [0 ........ Pb) [Pb ........... Pb+Nb)
    row r         pad.. prompt_r   t0 t1 t2 ...             (prompts are LEFT-padded)

Every row's prompt ends at slot Pb-1, so the prefill is one `forward_cached` over [Bb, Pb] and
decode step i writes token i-1 at slot Pb+i-1 for the whole batch (a scalar cache index).
RoPE positions are per row (slot minus that row's padding) and `kv_mask_bs` hides the padding
slots, so a left-padded prompt sees exactly what it would see alone. The decode loop is a
`lax.while_loop` that stops as soon as every row has sampled a stop token (or at
max_new_tokens). Shapes are rounded up to power-of-two buckets and the sampling knobs are traced
scalars, so repeated calls reuse compiled code; `trace_count()` counts compilations.

Parameters are never copied: the engine holds the learner's model (and splits it per call,
which only collects references) or a `(graphdef, state)` pair replaced by `update_params`, or
takes `params=` for one call.

Each prompt samples from its own PRNG stream (see `JaxEngine.generate`), so its samples do not
depend on the batch it was in.

KV reuse across turns (`PrefixCache`, inference/prefix_cache.py): after a call, the engine keeps
that call's KV cache (LRU, bounded in bytes) indexed by each row's token ids (prompt, and prompt +
completion minus its last token, whose KV was never computed). A later prompt that starts with such
a sequence, as an agent's next turn does (history + completion + env delta, token-in/token-out),
gets those slots copied from the stored cache and prefills only the rest: the prefill runs over the
last `W` prompt slots, W the bucketed largest number of new tokens in the batch. Stored caches are
dropped whenever the parameters change (compared by identity), so a hit is always the same
computation up to float rounding. `JaxEngine.stats` counts prefilled vs. reused tokens.

The prefill computes the LM head at the last prompt position only; long prompts are prefilled in
chunks that bound the attention scores and MLP activations of one chunk (see
`prefill_chunk_size`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synthagent_jax.inference import sampling as sampling_lib
from synthagent_jax.inference.prefix_cache import PrefixCache
from synthagent_jax.inference.engine import Completion, SamplingParams

_TRACES = {"count": 0}


def trace_count() -> int:
  """How many times the generation function has been traced (= compiled) in this process."""
  return _TRACES["count"]


def bucket(n: int, minimum: int = 1) -> int:
  """Smallest power of two >= max(n, minimum)."""
  if n < 0 or minimum < 1:
    raise ValueError(f"bucket needs n >= 0 and minimum >= 1, got n={n}, minimum={minimum}")
  size = 1
  while size < max(n, minimum):
    size *= 2
  return size


@dataclasses.dataclass(frozen=True)
class Buckets:
  """Minimum bucket sizes (each bucket is the next power of two above these).

  Attributes:
    min_batch: smallest batch bucket.
    min_prompt_len: smallest prompt-length bucket.
    min_new_tokens: smallest max_new_tokens bucket.
    num_stop_ids: stop-id slots (more stop ids round up to the next power of two).
  """

  min_batch: int = 1
  min_prompt_len: int = 16
  min_new_tokens: int = 16
  num_stop_ids: int = 8

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"Buckets.{field.name} must be a positive int, got {value!r}")


def prefill_chunk_size(batch: int, prompt_slots: int, cache_slots: int, num_heads: int,
                       intermediate_size: int, max_bytes: int) -> int:
  """Prompt slots per prefill chunk so one chunk's largest float32 temporaries fit `max_bytes`.

  Those are the attention scores [B, H, C, S] (a chunk's queries against every cache slot) and
  the MLP activations [B, C, I]; the LM head runs at the last position only (`last_only`). The
  result is a power of two in [16, prompt_slots] (prompt_slots is a power of two, so it divides
  it).
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
                                             "prefill_chunk", "prefill_slots"))
def _generate_padded(graphdef, state, prompt_bp, prompt_len_b, active_b, seed_b, stream_b,
                     temperature, top_p, top_k, stop_ids_s, max_new_tokens, cache_in=None, *,
                     mode, new_tokens_bucket, prefill_chunk, prefill_slots=None):
  """Prefill + decode on bucketed arrays.

  Args:
    graphdef: nnx GraphDef of the model (static).
    state: nnx State (the parameters), any sharding.
    prompt_bp: int32 [Bb, Pb] left-padded prompts.
    prompt_len_b: int32 [Bb] real prompt lengths (>= 1).
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

  Returns:
    tokens_bn int32 [Bb, Nb] (-1 after a row finished), logprobs_bn float32 [Bb, Nb] (0 there),
    num_steps int32 scalar (decode steps run, prefill's token included), and the final KVCache.
  """
  _TRACES["count"] += 1
  model = nnx.merge(graphdef, state)
  batch, prompt_slots = prompt_bp.shape
  num_slots = prompt_slots + new_tokens_bucket
  pad_b = prompt_slots - prompt_len_b
  kv_mask_bs = jnp.arange(num_slots)[None, :] >= pad_b[:, None]
  positions_bp = jnp.maximum(jnp.arange(prompt_slots)[None, :] - pad_b[:, None], 0)

  def is_stop(tokens_b):
    return jnp.any(tokens_b[:, None] == stop_ids_s[None, :], axis=-1)

  row_keys_b = jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seed_b, stream_b)

  def pick(logits_bv, step):
    keys_b = jax.vmap(lambda k: jax.random.fold_in(k, step))(row_keys_b)
    return sampling_lib.sample_step(logits_bv, keys_b, temperature, top_p, top_k, mode)

  cache = model.init_cache(batch, num_slots) if cache_in is None else cache_in
  first_slot = 0 if prefill_slots is None else prompt_slots - prefill_slots
  last_bv, cache = _prefill(model, prompt_bp, positions_bp.astype(jnp.int32), cache, kv_mask_bs,
                           prefill_chunk, first_slot)
  token_b, logprob_b = pick(last_bv, 0)
  token_b = jnp.where(active_b, token_b, -1)
  tokens_bn = jnp.full((batch, new_tokens_bucket), -1, jnp.int32).at[:, 0].set(token_b)
  logprobs_bn = jnp.zeros((batch, new_tokens_bucket), jnp.float32).at[:, 0].set(
      jnp.where(active_b, logprob_b, 0.0))
  done_b = ~active_b | is_stop(token_b)

  def cond(carry):
    step, _, _, done_b, _, _ = carry
    return (step < max_new_tokens) & ~jnp.all(done_b)

  def body(carry):
    step, cache, last_b, done_b, tokens_bn, logprobs_bn = carry
    positions_b1 = (prompt_len_b + step - 1)[:, None].astype(jnp.int32)
    feed_b1 = jnp.maximum(last_b, 0)[:, None]  # finished rows feed a harmless id
    logits_b1v, cache = model.forward_cached(feed_b1, positions_b1, cache,
                                             (prompt_slots + step - 1).astype(jnp.int32),
                                             kv_mask_bs)
    token_b, logprob_b = pick(logits_b1v[:, 0, :], step)
    token_b = jnp.where(done_b, -1, token_b)
    tokens_bn = tokens_bn.at[:, step].set(token_b)
    logprobs_bn = logprobs_bn.at[:, step].set(jnp.where(done_b, 0.0, logprob_b))
    done_b = done_b | is_stop(token_b)
    return step + 1, cache, token_b, done_b, tokens_bn, logprobs_bn

  carry = (jnp.int32(1), cache, token_b, done_b, tokens_bn, logprobs_bn)
  num_steps, cache, _, _, tokens_bn, logprobs_bn = jax.lax.while_loop(cond, body, carry)
  return tokens_bn, logprobs_bn, num_steps, cache


@functools.partial(jax.jit, static_argnames=("num_slots",), donate_argnames=("k_dst", "v_dst"))
def _copy_prefixes(k_dst, v_dst, k_src, v_src, src_row_b, src_start_b, dst_start_b, length_b, *,
                   num_slots):
  """Copies, for every row b, `length_b[b]` slots of stored row `src_row_b[b]` starting at
  `src_start_b[b]` into slots [dst_start_b[b], + length_b[b]) of the new cache (rows with
  length 0 are left as they are). k/v: [L, B, S, K, Dh]."""
  slot_s = jnp.arange(num_slots, dtype=jnp.int32)
  offset_bs = slot_s[None, :] - dst_start_b[:, None]
  take_bs = (offset_bs >= 0) & (offset_bs < length_b[:, None])
  src_slot_bs = jnp.clip(src_start_b[:, None] + offset_bs, 0, k_src.shape[2] - 1)
  take = take_bs[None, :, :, None, None]
  k_dst = jnp.where(take, k_src[:, src_row_b[:, None], src_slot_bs].astype(k_dst.dtype), k_dst)
  v_dst = jnp.where(take, v_src[:, src_row_b[:, None], src_slot_bs].astype(v_dst.dtype), v_dst)
  return k_dst, v_dst


@dataclasses.dataclass
class EngineStats:
  """Cumulative prefill counters of a JaxEngine (real prompts only, batch padding excluded).

  Attributes:
    prompt_tokens: prompt tokens received.
    prefill_tokens: prompt tokens whose keys/values were computed (prompt_tokens - reused_tokens).
    reused_tokens: prompt tokens whose keys/values were copied from a stored cache.
    prefill_slots: prompt slots run through the model, left padding inside the window included.
  """

  prompt_tokens: int = 0
  prefill_tokens: int = 0
  reused_tokens: int = 0
  prefill_slots: int = 0


def _check_prompts(prompt_ids: Sequence[Sequence[int]]) -> list[list[int]]:
  prompts = [list(p) for p in prompt_ids]
  if not prompts:
    raise ValueError("generate needs at least one prompt")
  for i, prompt in enumerate(prompts):
    if not prompt:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    if min(prompt) < 0:
      raise ValueError(f"prompt {i} has a negative token id {min(prompt)}")
  return prompts


def _to_completions(tokens_bn: np.ndarray, logprobs_bn: np.ndarray, num_rows: int,
                    sampling_params: SamplingParams) -> list[Completion]:
  stop_ids = set(sampling_params.stop_token_ids)
  completions = []
  for row in range(num_rows):
    tokens = tokens_bn[row, :sampling_params.max_new_tokens]
    n = int(np.argmax(tokens < 0)) if np.any(tokens < 0) else len(tokens)
    ids = [int(t) for t in tokens[:n]]
    reason = "stop" if ids and ids[-1] in stop_ids else "length"
    completions.append(Completion(token_ids=ids, logprobs=[float(x) for x in logprobs_bn[row, :n]],
                                  finish_reason=reason))
  return completions


class JaxEngine:
  """`Engine` over an in-process Flax NNX model (see the module docstring).

  Args:
    model: an nnx model with `init_cache` / `forward_cached` (held by reference: in-place
      updates by the learner are seen by the next call), or a `(graphdef, state)` pair.
    buckets: minimum bucket sizes.
    max_batch_size: prompts beyond this are generated in consecutive chunks; None = no limit.
    prefill_bytes: memory bound of one prefill chunk's temporaries (see prefill_chunk_size).
    prefix_cache_bytes: device memory for KV caches kept between calls (`PrefixCache`); 0 turns
      KV reuse across calls off.
  """

  def __init__(self, model: nnx.Module | tuple[Any, Any], *, buckets: Buckets = Buckets(),
               max_batch_size: int | None = None, prefill_bytes: int = 512 * 2**20,
               prefix_cache_bytes: int = 1 << 30):
    if max_batch_size is not None and max_batch_size < 1:
      raise ValueError(f"JaxEngine.max_batch_size must be >= 1 or None, got {max_batch_size}")
    self._model = None
    self._graphdef = self._state = None
    if isinstance(model, nnx.Module):
      self._check_model(model)
      self._model = model
    elif isinstance(model, tuple) and len(model) == 2:
      self._graphdef, self._state = model
      self._check_model(nnx.merge(self._graphdef, self._state))
    else:
      raise TypeError(f"JaxEngine needs an nnx.Module or a (graphdef, state) pair, got "
                      f"{type(model).__name__}")
    self.buckets = buckets
    self.max_batch_size = max_batch_size
    if prefill_bytes < 1:
      raise ValueError(f"JaxEngine.prefill_bytes must be >= 1, got {prefill_bytes}")
    self.prefill_bytes = prefill_bytes
    self.last_num_steps = 0  # decode steps of the last chunk generated (for tests / metrics)
    self.prefix_cache = PrefixCache(prefix_cache_bytes)
    self.stats = EngineStats()

  def _check_model(self, model):
    for name in ("init_cache", "forward_cached"):
      if not callable(getattr(model, name, None)):
        raise TypeError(f"JaxEngine: model {type(model).__name__} has no {name}() method")
    cfg = getattr(model, "config", None)
    self._vocab_size = getattr(cfg, "vocab_size", None)
    self._chunk_dims = ((cfg.num_heads, cfg.intermediate_size)
                        if hasattr(cfg, "num_heads") and hasattr(cfg, "intermediate_size")
                        else None)

  def update_weights(self, weights: Any, step: int) -> dict[str, float]:
    """`Engine.update_weights`: swaps in `weights` (no copy, see `update_params`); costs nothing."""
    del step
    self.update_params(weights)
    return {}

  def wait_ready(self) -> None:
    """`Engine.wait_ready`: an in-process engine is always ready."""

  def update_params(self, params: Any) -> None:
    """Points the engine at new parameters: an nnx State (from `nnx.split`), a `(graphdef,
    state)` pair, or a model. No copy is made."""
    if isinstance(params, nnx.Module):
      self._check_model(params)
      self._model, self._graphdef, self._state = params, None, None
    elif isinstance(params, tuple) and len(params) == 2:
      self._model, (self._graphdef, self._state) = None, params
    else:
      if self._model is not None:
        self._graphdef = nnx.graphdef(self._model)
      self._model, self._state = None, params

  def split(self) -> tuple[Any, Any]:
    """The (graphdef, state) the next call will use (references, not copies)."""
    if self._model is not None:
      return nnx.split(self._model)
    return self._graphdef, self._state

  def generate(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams, *,
               row_seeds: Sequence[int] | None = None, params: Any = None) -> list[Completion]:
    """Returns one Completion per prompt, in prompt order (see `engine.Engine`).

    `params` (an nnx State with this model's structure) overrides the held parameters for this
    call only, e.g. the learner's current state passed straight from its step.

    Prompt i samples with its own PRNG stream: fold_in(key(sampling.seed), i), or, when
    `row_seeds` is given, fold_in(key(row_seeds[i]), 0) (a server batching independent requests
    uses this so each request's samples depend only on its own seed).
    """
    prompts = _check_prompts(prompt_ids)
    if row_seeds is None:
      seeds = [sampling.seed] * len(prompts)
      streams = list(range(len(prompts)))
    else:
      if len(row_seeds) != len(prompts):
        raise ValueError(f"row_seeds has {len(row_seeds)} entries for {len(prompts)} prompts")
      seeds, streams = [int(s) for s in row_seeds], [0] * len(prompts)
    if self._vocab_size is not None:
      for i, prompt in enumerate(prompts):
        if max(prompt) >= self._vocab_size:
          raise ValueError(f"prompt {i} has token id {max(prompt)} >= vocab_size "
                           f"{self._vocab_size}")
    chunk = self.max_batch_size or len(prompts)
    graphdef, state = self.split()
    if params is not None:
      state = params
    if self.prefix_cache.max_bytes:
      self.prefix_cache.check_params(state)
    completions = []
    for start in range(0, len(prompts), chunk):
      end = start + chunk
      completions += self._generate_chunk(graphdef, state, prompts[start:end], sampling,
                                          seeds[start:end], streams[start:end])
    return completions

  def _generate_chunk(self, graphdef, state, prompts, sp: SamplingParams, seeds: list[int],
                      streams: list[int]) -> list[Completion]:
    b = self.buckets
    batch = bucket(len(prompts), b.min_batch)
    prompt_slots = bucket(max(len(p) for p in prompts), b.min_prompt_len)
    new_tokens_bucket = bucket(sp.max_new_tokens, b.min_new_tokens)
    prompt_bp = np.zeros((batch, prompt_slots), np.int32)
    prompt_len_b = np.ones((batch,), np.int32)
    for row, prompt in enumerate(prompts):
      prompt_bp[row, prompt_slots - len(prompt):] = prompt
      prompt_len_b[row] = len(prompt)
    active_b = np.arange(batch) < len(prompts)
    seed_b = np.zeros((batch,), np.int32)
    seed_b[:len(prompts)] = [s % 2**31 for s in seeds]
    stream_b = np.zeros((batch,), np.int32)
    stream_b[:len(prompts)] = streams
    stop_ids_s = np.full((bucket(len(sp.stop_token_ids), b.num_stop_ids),), -1, np.int32)
    stop_ids_s[:len(sp.stop_token_ids)] = sp.stop_token_ids
    cache_in, window, reused = self._reused_prefixes(graphdef, state, prompts, batch,
                                                     prompt_slots, new_tokens_bucket)
    new_b = [len(p) - r for p, r in zip(prompts, reused)]
    self.stats.prompt_tokens += sum(len(p) for p in prompts)
    self.stats.reused_tokens += sum(reused)
    self.stats.prefill_tokens += sum(new_b)
    self.stats.prefill_slots += window * len(prompts)
    tokens_bn, logprobs_bn, num_steps, cache = _generate_padded(
        graphdef, state, jnp.asarray(prompt_bp), jnp.asarray(prompt_len_b),
        jnp.asarray(active_b), jnp.asarray(seed_b), jnp.asarray(stream_b),
        jnp.float32(max(sp.temperature, 1e-6)),
        jnp.float32(sp.top_p), jnp.int32(sp.top_k), jnp.asarray(stop_ids_s),
        jnp.int32(sp.max_new_tokens), cache_in,
        mode=sampling_lib.mode_for(sp.temperature, sp.top_p, sp.top_k),
        new_tokens_bucket=new_tokens_bucket,
        prefill_chunk=prefill_chunk_size(batch, window, prompt_slots + new_tokens_bucket,
                                         *self._chunk_dims, self.prefill_bytes)
        if self._chunk_dims else window,
        prefill_slots=None if cache_in is None else window)
    self.last_num_steps = int(num_steps)
    completions = _to_completions(np.asarray(tokens_bn), np.asarray(logprobs_bn), len(prompts), sp)
    if self.prefix_cache.max_bytes:
      # Row r's KV covers its prompt and every sampled token but the last (never fed back).
      rows = [(list(p) + c.token_ids[:-1], prompt_slots - len(p), len(p))
              for p, c in zip(prompts, completions)]
      self.prefix_cache.add(cache.k, cache.v, rows)
    return completions

  def _reused_prefixes(self, graphdef, state, prompts, batch, prompt_slots, new_tokens_bucket):
    """(cache_in or None, prefill window W, reused tokens per prompt) from the prefix cache."""
    store = self.prefix_cache
    hits = [store.lookup(p) for p in prompts] if store.max_bytes else [None] * len(prompts)
    reused = [0 if h is None else h[3] for h in hits]
    if not any(reused):
      return None, prompt_slots, reused
    window = min(prompt_slots, bucket(max(len(p) - r for p, r in zip(prompts, reused)),
                                      self.buckets.min_prompt_len))
    if window == prompt_slots:
      return None, prompt_slots, [0] * len(prompts)  # nothing to skip: the plain prefill
    num_slots = prompt_slots + new_tokens_bucket
    cache = nnx.merge(graphdef, state).init_cache(batch, num_slots)
    k, v = cache.k, cache.v
    for block_id in sorted({h[0] for h in hits if h is not None}):
      block = store.block(block_id)
      src_row, src_start, dst_start, length = (np.zeros(batch, np.int32) for _ in range(4))
      for r, (p, h) in enumerate(zip(prompts, hits)):
        if h is not None and h[0] == block_id:
          src_row[r], src_start[r], length[r] = h[1], h[2], h[3]
          dst_start[r] = prompt_slots - len(p)
      k, v = _copy_prefixes(k, v, block.k, block.v, jnp.asarray(src_row), jnp.asarray(src_start),
                            jnp.asarray(dst_start), jnp.asarray(length), num_slots=num_slots)
    return type(cache)(k=k, v=v), window, reused


def generate(model: nnx.Module | tuple[Any, Any], prompt_ids: Sequence[Sequence[int]],
             max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             stop_token_ids: Sequence[int] = (), seed: int = 0) -> list[Completion]:
  """One-shot convenience over `JaxEngine` for notebooks and tests (compiled code is shared
  across calls with the same shapes)."""
  sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      top_k=top_k, stop_token_ids=tuple(stop_token_ids), seed=seed)
  return JaxEngine(model).generate(prompt_ids, sp)
