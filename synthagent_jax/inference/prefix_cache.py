"""PrefixCache: KV caches of earlier sampler calls, kept for reuse by later prompts.

The in-process sampler (inference/sampler.py) stores each call's final KV cache here with, per
row, the token ids whose keys/values it holds and the slot they start at. A later prompt that
starts with one of those sequences gets its keys/values copied instead of recomputed. Blocks are
evicted least-recently-used first to stay within `max_bytes`; everything is dropped when the
parameters change (compared by identity through weak references, so no old parameters are kept
alive). Lookups hash every prefix of a prompt once (numpy, wrapping uint64 polynomial hash) and
confirm a hit by comparing the tokens, so a hash collision can never serve wrong keys/values.
"""

from __future__ import annotations

import collections
import dataclasses
import weakref
from typing import Any, Sequence

import jax
import numpy as np


_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)


def _prefix_hashes(tokens: np.ndarray) -> np.ndarray:
  """uint64 h[i] = hash of tokens[:i] for i = 0..n (polynomial, wrapping): one pass per prompt."""
  with np.errstate(over="ignore"):
    powers = np.cumprod(np.full(len(tokens), _HASH_MULT, np.uint64))
    terms = (tokens.astype(np.uint64) + np.uint64(1)) * powers
    return np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])


@dataclasses.dataclass
class _Block:
  cache: Any  # the call's final KVCache (models/qwen.KVCache)
  rows: list  # per row: (token ids np.ndarray, first slot)
  nbytes: int


class PrefixCache:
  """The KV caches of earlier calls, LRU-bounded in bytes, indexed by token-id prefixes.

  Lookups find, for a prompt, the longest stored sequence (a whole stored prompt, or a stored
  prompt + completion minus its last token) that the prompt starts with, at most len - 1 tokens
  (the last prompt token is always prefilled: its logits give the first sample). Everything is
  dropped when the parameters change.
  """

  def __init__(self, max_bytes: int):
    if max_bytes < 0:
      raise ValueError(f"PrefixCache.max_bytes must be >= 0, got {max_bytes}")
    self.max_bytes = max_bytes
    self._blocks: collections.OrderedDict[int, _Block] = collections.OrderedDict()
    self._index: dict[tuple[int, int], tuple[int, int]] = {}  # (length, hash) -> (block, row)
    self._lengths: collections.Counter = collections.Counter()
    self._next_id = 0
    self._params_refs: list | None = None

  @property
  def nbytes(self) -> int:
    return sum(b.nbytes for b in self._blocks.values())

  def __len__(self) -> int:
    return len(self._blocks)

  def clear(self) -> None:
    self._blocks.clear()
    self._index.clear()
    self._lengths.clear()

  def check_params(self, state) -> None:
    """Drops everything unless `state`'s leaves are the very arrays of the stored calls."""
    leaves = jax.tree.leaves(state)
    refs = self._params_refs
    if refs is None or len(refs) != len(leaves) or any(r() is not x for r, x in
                                                        zip(refs, leaves)):
      self.clear()
      try:
        self._params_refs = [weakref.ref(x) for x in leaves]
      except TypeError:  # leaves that cannot be weakly referenced: never reuse across calls
        self._params_refs = None

  def lookup(self, prompt: Sequence[int]) -> tuple[int, int, int, int] | None:
    """(block id, row, first slot, length) of the longest usable stored prefix, or None."""
    if not self._blocks:
      return None
    tokens = np.asarray(prompt, np.int64)
    hashes = _prefix_hashes(tokens)
    for length in sorted((n for n in self._lengths if n < len(tokens)), reverse=True):
      hit = self._index.get((length, int(hashes[length])))
      if hit is None:
        continue
      block_id, row = hit
      stored, first = self._blocks[block_id].rows[row]
      if np.array_equal(stored[:length], tokens[:length]):  # rule out hash collisions
        self._blocks.move_to_end(block_id)
        return block_id, row, first, length
    return None

  def block(self, block_id: int) -> _Block:
    return self._blocks[block_id]

  def add(self, cache: Any, rows: list[tuple[list[int], int, int]]) -> None:
    """Stores one call's KV cache (any pytree of arrays, row-major in batch); rows: (token ids
    with KV, first slot, prompt length)."""
    nbytes = sum(x.nbytes for x in jax.tree.leaves(cache))
    if nbytes > self.max_bytes:
      return
    while self._blocks and self.nbytes + nbytes > self.max_bytes:
      self._evict(next(iter(self._blocks)))
    block_id, self._next_id = self._next_id, self._next_id + 1
    block = _Block(cache=cache, rows=[], nbytes=nbytes)
    self._blocks[block_id] = block
    for row, (ids, first, prompt_len) in enumerate(rows):
      tokens = np.asarray(ids, np.int64)
      block.rows.append((tokens, first))
      hashes = _prefix_hashes(tokens)
      for length in {prompt_len, len(tokens)}:
        key = (length, int(hashes[length]))
        if length > 0 and key not in self._index:
          self._index[key] = (block_id, row)
          self._lengths[length] += 1

  def _evict(self, block_id: int) -> None:
    del self._blocks[block_id]
    for key in [key for key, (b, _) in self._index.items() if b == block_id]:
      del self._index[key]
      self._lengths[key[0]] -= 1
      if not self._lengths[key[0]]:
        del self._lengths[key[0]]
