"""The in-process JAX sampler: batched prefill + KV-cache decode, all inside one `jit`.

`JaxEngine` buckets the prompts (powers of two, and 1.5x powers of two above 512 prompt slots:
`prompt_bucket`; so repeated calls reuse compiled code), picks
each row's PRNG stream and the prefill window, and runs the compiled program of
inference/decode.py (its slot layout, prefill chunking and decode loop are documented there).

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

Equal prompts in one call (a GRPO group's first turn: G episodes of one task) are prefilled once:
the distinct prompts run through the model as a smaller batch and each row starts decoding from
a copy of its prompt's keys/values (decode.generate_padded's prompt_row_b). In the tiny default's
GRPO step (4 tasks x 4) this cut the rollouts' median 1.61 -> 1.38 s (docs/benchmarks.md,
session 11).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from synthagent_jax.inference import decode
from synthagent_jax.inference import sampling as sampling_lib
# Re-exported: launch/train_loop.py reports `sampler.trace_count()` as perf/sampler_compiles.
from synthagent_jax.inference.decode import trace_count  # noqa: F401
from synthagent_jax.inference.prefix_cache import PrefixCache
from synthagent_jax.inference.engine import Completion, SamplingParams


def bucket(n: int, minimum: int = 1) -> int:
  """Smallest power of two >= max(n, minimum)."""
  if n < 0 or minimum < 1:
    raise ValueError(f"bucket needs n >= 0 and minimum >= 1, got n={n}, minimum={minimum}")
  size = 1
  while size < max(n, minimum):
    size *= 2
  return size


def prompt_bucket(n: int, minimum: int = 1, fine_above: int = 0) -> int:
  """`bucket(n, minimum)`, except that sizes above `fine_above` (0: none) also include 1.5x a
  power of two (768, 1536, ...): a 600-token prompt gets 768 slots, not 1024. Every decode step
  attends over all prompt slots, so the coarse bucket cost up to 2x per step; the finer one costs
  at most 1.33x, for one more compiled shape per octave."""
  size = bucket(n, minimum)
  three_quarters = size // 4 * 3
  if fine_above and three_quarters > fine_above and three_quarters >= max(n, minimum):
    return three_quarters
  return size


@dataclasses.dataclass(frozen=True)
class Buckets:
  """Minimum bucket sizes (each bucket is the next power of two above these).

  Attributes:
    min_batch: smallest batch bucket.
    min_prompt_len: smallest prompt-length bucket.
    min_new_tokens: smallest max_new_tokens bucket.
    num_stop_ids: stop-id slots (more stop ids round up to the next power of two).
    prompt_fine_above: prompt-length buckets above this also take 1.5x powers of two
      (`prompt_bucket`); 0 keeps powers of two only.
  """

  min_batch: int = 1
  min_prompt_len: int = 16
  min_new_tokens: int = 16
  num_stop_ids: int = 8
  prompt_fine_above: int = 512

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      lowest = 0 if field.name == "prompt_fine_above" else 1
      if not isinstance(value, int) or value < lowest:
        raise ValueError(f"Buckets.{field.name} must be an int >= {lowest}, got {value!r}")


@dataclasses.dataclass
class EngineStats:
  """Cumulative counters of a JaxEngine: prefill (real prompts only, batch padding excluded) and
  decode (what the padded batch ran against what its real rows needed).

  Attributes:
    prompt_tokens: prompt tokens received.
    prefill_tokens: prompt tokens whose keys/values were computed (prompt_tokens - reused_tokens).
    reused_tokens: prompt tokens whose keys/values were copied from a stored cache.
    prefill_slots: prompt slots run through the model, left padding inside the window included.
    decode_rows: one-token model calls x batch rows: batch padding and finished rows included
      (every row of the bucket at each decode step; with decode_stages > 1 an upper bound).
    decode_needed: sampled tokens after each row's first (which its prefill gives): the rows
      decode steps must run.
    decode_keys: decode_rows x cache slots: the key slots the decode's attention reads.
    decode_keys_needed: the keys those needed rows attend to (a row's i-th decoded token: its
      prompt and i earlier tokens).
  """

  prompt_tokens: int = 0
  prefill_tokens: int = 0
  reused_tokens: int = 0
  prefill_slots: int = 0
  decode_rows: int = 0
  decode_needed: int = 0
  decode_keys: int = 0
  decode_keys_needed: int = 0

  def count_decode(self, batch: int, num_slots: int, num_steps: int, prompt_lens, new_lens):
    """Adds one call: `num_steps` (prefill's token included) over `batch` rows of `num_slots`
    slots; real row r had a prompt of prompt_lens[r] tokens and sampled new_lens[r]."""
    self.decode_rows += batch * (num_steps - 1)
    self.decode_keys += batch * (num_steps - 1) * num_slots
    for p, n in zip(prompt_lens, new_lens):
      if n > 1:  # tokens 1..n-1, token i attending to p + i keys
        self.decode_needed += n - 1
        self.decode_keys_needed += (n - 1) * p + n * (n - 1) // 2


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


def _first_occurrences(prompts: list[list[int]]) -> list[int]:
  """For each prompt, the index of the first prompt equal to it."""
  first: dict[tuple[int, ...], int] = {}
  return [first.setdefault(tuple(p), i) for i, p in enumerate(prompts)]


def _distinct_rows(first_b: list[int], prompt_bp: np.ndarray, prompt_len_b: np.ndarray):
  """The distinct prompts' rows of prompt_bp / prompt_len_b (padded to a power of two with the
  first one) and, for each row of the batch, the index of its prompt among them (batch padding
  rows: 0), as decode.generate_padded's prompt_row_b."""
  distinct = sorted(set(first_b))
  index = {row: u for u, row in enumerate(distinct)}
  take = distinct + [distinct[0]] * (bucket(len(distinct)) - len(distinct))
  prompt_row_b = np.zeros((prompt_bp.shape[0],), np.int32)
  prompt_row_b[:len(first_b)] = [index[f] for f in first_b]
  return prompt_bp[take], prompt_len_b[take], prompt_row_b


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
    prefill_bytes: memory bound of one prefill chunk's temporaries (see
      decode.prefill_chunk_size).
    prefix_cache_bytes: device memory for KV caches kept between calls (`PrefixCache`); 0 turns
      KV reuse across calls off.
    decode_stages: 1 decodes the whole batch bucket until every row is done; n > 1 shrinks the
      decode's batch up to n - 1 times as rows finish (decode.generate_padded's decode_stages):
      batch padding and finished rows stop costing steps, for up to 3/4 more cache memory.
  """

  def __init__(self, model: nnx.Module | tuple[Any, Any], *, buckets: Buckets = Buckets(),
               max_batch_size: int | None = None, prefill_bytes: int = 512 * 2**20,
               prefix_cache_bytes: int = 1 << 30, decode_stages: int = 1):
    decode.stage_sizes(1, decode_stages)  # >= 1, or a clear error
    self.decode_stages = decode_stages
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
    prompt_slots = prompt_bucket(max(len(p) for p in prompts), b.min_prompt_len,
                                 b.prompt_fine_above)
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
    prefill_bp, prefill_len_b, prompt_row_b = prompt_bp, prompt_len_b, None
    if cache_in is None:
      first_b = _first_occurrences(prompts)
      if len(set(first_b)) < len(prompts):  # repeated prompts are prefilled once
        prefill_bp, prefill_len_b, prompt_row_b = _distinct_rows(first_b, prompt_bp,
                                                                 prompt_len_b)
        reused = [0 if f == i else len(p) for i, (p, f) in enumerate(zip(prompts, first_b))]
    new_b = [len(p) - r for p, r in zip(prompts, reused)]
    self.stats.prompt_tokens += sum(len(p) for p in prompts)
    self.stats.reused_tokens += sum(reused)
    self.stats.prefill_tokens += sum(new_b)
    self.stats.prefill_slots += window * (len(prompts) if prompt_row_b is None
                                          else len(set(first_b)))
    tokens_bn, logprobs_bn, num_steps, cache = decode.generate_padded(
        graphdef, state, jnp.asarray(prefill_bp), jnp.asarray(prefill_len_b),
        jnp.asarray(active_b), jnp.asarray(seed_b), jnp.asarray(stream_b),
        jnp.float32(max(sp.temperature, 1e-6)),
        jnp.float32(sp.top_p), jnp.int32(sp.top_k), jnp.asarray(stop_ids_s),
        jnp.int32(sp.max_new_tokens), cache_in,
        None if prompt_row_b is None else jnp.asarray(prompt_row_b, jnp.int32),
        mode=sampling_lib.mode_for(sp.temperature, sp.top_p, sp.top_k),
        new_tokens_bucket=new_tokens_bucket,
        prefill_chunk=decode.prefill_chunk_size(
            prefill_bp.shape[0], window, prompt_slots + new_tokens_bucket, *self._chunk_dims,
            self.prefill_bytes) if self._chunk_dims else window,
        prefill_slots=None if cache_in is None else window, decode_stages=self.decode_stages)
    self.last_num_steps = int(num_steps)
    completions = _to_completions(np.asarray(tokens_bn), np.asarray(logprobs_bn), len(prompts), sp)
    self.stats.count_decode(batch, prompt_slots + new_tokens_bucket, self.last_num_steps,
                            [len(p) for p in prompts], [len(c.token_ids) for c in completions])
    if self.prefix_cache.max_bytes:
      # Row r's KV covers its prompt and every sampled token but the last (never fed back).
      rows = [(list(p) + c.token_ids[:-1], prompt_slots - len(p), len(p))
              for p, c in zip(prompts, completions)]
      self.prefix_cache.add(cache, rows)
    return completions

  def _reused_prefixes(self, graphdef, state, prompts, batch, prompt_slots, new_tokens_bucket):
    """(cache_in or None, prefill window W, reused tokens per prompt) from the prefix cache."""
    store = self.prefix_cache
    hits = [store.lookup(p) for p in prompts] if store.max_bytes else [None] * len(prompts)
    reused = [0 if h is None else h[3] for h in hits]
    if not any(reused):
      return None, prompt_slots, reused
    window = min(prompt_slots, prompt_bucket(max(len(p) - r for p, r in zip(prompts, reused)),
                                             self.buckets.min_prompt_len,
                                             self.buckets.prompt_fine_above))
    if window == prompt_slots:
      return None, prompt_slots, [0] * len(prompts)  # nothing to skip: the plain prefill
    num_slots = prompt_slots + new_tokens_bucket
    cache = nnx.merge(graphdef, state).init_cache(batch, num_slots)
    for block_id in sorted({h[0] for h in hits if h is not None}):
      block = store.block(block_id)
      src_row, src_start, dst_start, length = (np.zeros(batch, np.int32) for _ in range(4))
      for r, (p, h) in enumerate(zip(prompts, hits)):
        if h is not None and h[0] == block_id:
          src_row[r], src_start[r], length[r] = h[1], h[2], h[3]
          dst_start[r] = prompt_slots - len(p)
      cache = decode.copy_prefixes(cache, block.cache, jnp.asarray(src_row),
                                   jnp.asarray(src_start), jnp.asarray(dst_start),
                                   jnp.asarray(length), num_slots=num_slots)
    return cache, window, reused


def generate(model: nnx.Module | tuple[Any, Any], prompt_ids: Sequence[Sequence[int]],
             max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
             stop_token_ids: Sequence[int] = (), seed: int = 0) -> list[Completion]:
  """One-shot convenience over `JaxEngine` for notebooks and tests (compiled code is shared
  across calls with the same shapes)."""
  sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                      top_k=top_k, stop_token_ids=tuple(stop_token_ids), seed=seed)
  return JaxEngine(model).generate(prompt_ids, sp)
