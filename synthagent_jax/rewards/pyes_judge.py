"""In-process judge: every (trajectory, item) pair scored as P("yes") at the verdict position.

Each pair's prompt is a chat (full task, transcript, one criterion, "answer yes or no") ending with
the assistant generation prompt; the verdict position is its last token, whose next-token logits
give the answer. No decoding. The prompt is tokenized as two pieces, a PREFIX shared by all items of
a trajectory (system prompt, full task, transcript) and a short per-item SUFFIX (criterion, end of
turn, generation prompt): `prompt_ids = prefix_ids + suffix_ids`, always.

A batch holds a few trajectories and up to `max_batch_size` of their items, and is ONE jitted call
(`forward_calls` counts them): prefill the prefixes into a KV cache ([Bp, P], left-padded; the LM
head runs at the last position only, `last_only`), gather each item's prefix cache row, then one
`forward_cached(last_only=True)` over the suffixes ([N, S], left-padded) whose last column is every
item's verdict position. So the transcript is encoded once per trajectory, not once per item.

    P(yes) = sigmoid(logsumexp(logp[yes ids]) - logsumexp(logp[no ids]))

i.e. the probability of answering yes given that the answer is yes or no. The yes/no ids are the
first token of each spelling variant ("yes", "Yes", " yes", ...), so a tokenizer that splits
"yes" into several tokens still works (the first token decides). `met` is P(yes) >= threshold.

Per call, each distinct criterion suffix is tokenized once (items repeat across a batch's
trajectories), and the model is split once per judge and kept: the held state shares the model's
variables, so in-place learner updates (`nnx.update`) are seen, and the graphdef goes to jit in an
identity-hashed holder, so no call re-hashes the graph. `timings` splits the time spent into
rendering/tokenizing, splitting and the forward pass (blocking on its result).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from synthagent_jax.models import chat_format
from synthagent_jax.rewards.judge import SECTION_QUESTIONS, ItemScore, JudgeRequest, render_transcript

YES_VARIANTS = ("yes", "Yes", " yes", " Yes", "YES")
NO_VARIANTS = ("no", "No", " no", " No", "NO")

PYES_JUDGE_SYSTEM = ("You are a strict grader of customer-support conversations. Decide whether "
                     "the criterion is met, using only the conversation as evidence. Answer with "
                     "one word: yes or no.")


_CRITERION_MARK = "\u2063CRITERION\u2063"


def _criterion_text(section: str, item) -> str:
  return f"Criterion: {SECTION_QUESTIONS[section]} {item.text}\nAnswer yes or no."


def _messages(request: JudgeRequest, max_chars_per_message: int, criterion: str) -> list[dict]:
  user = "\n".join([
      f"Full task (hidden from the assistant): {request.task.full_task}", "", "Conversation:",
      render_transcript(request.messages, max_chars_per_message), "", criterion])
  return [{"role": "system", "content": PYES_JUDGE_SYSTEM}, {"role": "user", "content": user}]


def answer_token_ids(tokenizer, variants: Sequence[str]) -> list[int]:
  """First token id of each spelling variant, deduplicated, in order."""
  ids = []
  for v in variants:
    enc = chat_format.encode(tokenizer, v)
    if enc and enc[0] not in ids:
      ids.append(enc[0])
  return ids


def _bucket(n: int, minimum: int) -> int:
  """Smallest of minimum * {1, 1.5, 2, 3, 4, 6, 8, ...} that is >= n (padding waste <= 1/3,
  compiled shapes grow only logarithmically with the length)."""
  size = minimum
  while True:
    if size >= n:
      return size
    if size * 3 // 2 >= n and (size * 3) % 2 == 0:
      return size * 3 // 2
    size *= 2


def _verdict_log_odds(graphdef, state, prefix_ids_pt, prefix_mask_pt, suffix_ids_ns,
                      suffix_mask_ns, row_n, yes_ids, no_ids):
  """log P(yes) - log P(no) at the last suffix position of each item: float32 [N].

  prefix_*_pt: [Bp, P] left-padded prefixes; suffix_*_ns: [N, S] left-padded suffixes;
  row_n: int [N], the prefix row of each item.
  """
  model = nnx.merge(graphdef, state)
  bp, p = prefix_ids_pt.shape
  s = suffix_ids_ns.shape[1]
  prefix_mask_pt = prefix_mask_pt.astype(bool)
  suffix_mask_ns = suffix_mask_ns.astype(bool)
  prefix_pos_pt = jnp.maximum(jnp.cumsum(prefix_mask_pt, axis=1) - 1, 0)
  cache = model.init_cache(bp, p + s)
  kv_mask_ps = jnp.concatenate([prefix_mask_pt, jnp.zeros((bp, s), bool)], axis=1)
  _, cache = model.forward_cached(prefix_ids_pt, prefix_pos_pt, cache, 0, kv_mask_ps,
                                  last_only=True)
  cache_n = cache.take_rows(row_n)
  prefix_len_n = prefix_mask_pt.sum(axis=1)[row_n]
  suffix_pos_ns = prefix_len_n[:, None] + jnp.maximum(jnp.cumsum(suffix_mask_ns, axis=1) - 1, 0)
  kv_mask_ns = jnp.concatenate([prefix_mask_pt[row_n], suffix_mask_ns], axis=1)
  logits_n1v, _ = model.forward_cached(suffix_ids_ns, suffix_pos_ns, cache_n, p, kv_mask_ns,
                                       last_only=True)
  last_nv = jax.nn.log_softmax(logits_n1v[:, 0, :].astype(jnp.float32), axis=-1)
  yes_n = jax.nn.logsumexp(last_nv[:, yes_ids], axis=-1)
  no_n = jax.nn.logsumexp(last_nv[:, no_ids], axis=-1)
  return yes_n - no_n


class _Graph:
  """A graphdef as a jit static argument hashed by identity (hashing a large NNX graphdef on
  every call costs milliseconds); the judge keeps one per model, so the jit cache still hits."""

  def __init__(self, graphdef):
    self.graphdef = graphdef

  def __hash__(self):
    return id(self)

  def __eq__(self, other):
    return self is other


@functools.partial(jax.jit, static_argnames=("graph",))
def _verdict_log_odds_held(graph, state, *arrays):
  return _verdict_log_odds(graph.graphdef, state, *arrays)


def _left_pad(seqs: Sequence[Sequence[int]], rows: int, length: int, pad_id: int):
  ids = np.full((rows, length), pad_id, np.int32)
  mask = np.zeros((rows, length), np.int32)
  for r, seq in enumerate(seqs):
    if seq:
      ids[r, length - len(seq):] = seq
      mask[r, length - len(seq):] = 1
  return ids, mask


class PYesJudge:
  """A `Judge` over our model, in-process.

  Args:
    model: an nnx model with the `models.Qwen` call signature (held by reference, so learner
      updates are seen), or a `(graphdef, state)` pair.
    tokenizer: HF tokenizer with a chat template.
    max_batch_size: items (suffix rows) per call; a trajectory with more items is split.
    max_tokens_per_batch: prefix rows * padded prefix length per call.
    max_prompt_tokens: a longer prompt keeps the first `head_tokens` and the end of its prefix
      (the criterion and the verdict position are in the suffix, always kept).
    min_len_bucket: smallest padded prefix length (see `_bucket`).
    threshold: P(yes) at or above which an item is `met`.
  """

  def __init__(self, model: Any, tokenizer, *, max_batch_size: int = 16,
               max_tokens_per_batch: int = 32768, max_prompt_tokens: int = 4096,
               head_tokens: int = 128, min_len_bucket: int = 64, threshold: float = 0.5,
               max_chars_per_message: int = 2000):
    if max_batch_size < 1 or max_tokens_per_batch < 1 or max_prompt_tokens <= head_tokens:
      raise ValueError("PYesJudge needs max_batch_size >= 1, max_tokens_per_batch >= 1 and "
                       "max_prompt_tokens > head_tokens")
    if not 0.0 < threshold < 1.0:
      raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    self.model = model
    self.tokenizer = tokenizer
    self.max_batch_size = max_batch_size
    self.max_tokens_per_batch = max_tokens_per_batch
    self.max_prompt_tokens = max_prompt_tokens
    self.head_tokens = head_tokens
    self.min_len_bucket = min_len_bucket
    self.threshold = threshold
    self.max_chars_per_message = max_chars_per_message
    self.yes_ids = answer_token_ids(tokenizer, YES_VARIANTS)
    self.no_ids = answer_token_ids(tokenizer, NO_VARIANTS)
    if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
      raise ValueError(f"yes ids {self.yes_ids} and no ids {self.no_ids} must be non-empty and "
                       "disjoint in this tokenizer")
    self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    self.forward_calls = 0
    self.truncated_prompts = 0
    self.timings = {"prepare_s": 0.0, "split_s": 0.0, "forward_s": 0.0}
    self._held = None  # (model or pair it was split from, _Graph, state)

  def _split(self):
    """(_Graph, state), split once per held model or pair (see the module docstring)."""
    if self._held is None or self._held[0] is not self.model:
      graphdef, state = self.model if isinstance(self.model, tuple) else nnx.split(self.model)
      self._held = (self.model, _Graph(graphdef), state)
    return self._held[1], self._held[2]

  def prompt_pieces(self, request: JudgeRequest, suffix_memo: dict | None = None
                    ) -> tuple[list[int], list[list[int]]]:
    """(shared prefix ids, [suffix ids per item]); item k's prompt is prefix + suffixes[k].
    `suffix_memo` (text -> ids) lets one call tokenize each distinct suffix once."""
    rendered = chat_format.render_text(
        self.tokenizer, _messages(request, self.max_chars_per_message, _CRITERION_MARK),
        add_generation_prompt=True)
    cut = rendered.index(_CRITERION_MARK)
    prefix = chat_format.encode(self.tokenizer, rendered[:cut])
    after = rendered[cut + len(_CRITERION_MARK):]
    memo = {} if suffix_memo is None else suffix_memo
    suffixes = []
    for section, item in request.items:
      text = _criterion_text(section, item) + after
      if text not in memo:
        memo[text] = chat_format.encode(self.tokenizer, text)
      suffixes.append(list(memo[text]))
    longest = max((len(x) for x in suffixes), default=0)
    budget = self.max_prompt_tokens - longest
    if len(prefix) > budget:
      self.truncated_prompts += 1
      tail = max(budget - self.head_tokens, 1)
      prefix = prefix[:self.head_tokens] + prefix[-tail:]
    return prefix, suffixes

  def prompt_ids(self, request: JudgeRequest, section: str, item) -> list[int]:
    """The token ids the judge scores for one item (its verdict position is the last)."""
    one = JudgeRequest(request.task, request.messages, [(section, item)])
    prefix, (suffix,) = self.prompt_pieces(one)
    return prefix + suffix

  def _pack(self, units: list[tuple[list[int], list[list[int]], list[int]]]):
    """First-fit packing of (prefix, suffixes, output slots) units into batches."""
    units = sorted(units, key=lambda u: -len(u[0]))
    while units:
      batch, items, rest = [], 0, []
      length = _bucket(len(units[0][0]), self.min_len_bucket)
      max_rows = max(1, self.max_tokens_per_batch // length)
      for u in units:
        if items + len(u[1]) <= self.max_batch_size and len(batch) < max_rows:
          batch.append(u)
          items += len(u[1])
        else:
          rest.append(u)
      units = rest
      yield length, batch

  def judge(self, requests: Sequence[JudgeRequest]) -> list[list[ItemScore]]:
    out: list[list[ItemScore | None]] = [[None] * len(r.items) for r in requests]
    units = []
    t0 = time.perf_counter()
    memo: dict[str, list[int]] = {}
    for r, req in enumerate(requests):
      if not req.items:
        continue
      prefix, suffixes = self.prompt_pieces(req, memo)
      slots = [(r, k) for k in range(len(suffixes))]
      for start in range(0, len(suffixes), self.max_batch_size):
        units.append((prefix, suffixes[start:start + self.max_batch_size],
                      slots[start:start + self.max_batch_size]))
    t1 = time.perf_counter()
    self.timings["prepare_s"] += t1 - t0
    graph, state = self._split()
    self.timings["split_s"] += time.perf_counter() - t1
    yes = jnp.asarray(self.yes_ids, jnp.int32)
    no = jnp.asarray(self.no_ids, jnp.int32)
    for length, batch in self._pack(units):
      t0 = time.perf_counter()
      suffixes = [sfx for u in batch for sfx in u[1]]
      rows_n = [row for row, u in enumerate(batch) for _ in u[1]]
      slots = [slot for u in batch for slot in u[2]]
      n_bucket = _bucket(len(suffixes), 1) if len(suffixes) > 1 else 1
      prefix_ids, prefix_mask = _left_pad([u[0] for u in batch], _bucket(len(batch), 1), length,
                                          self.pad_id)
      s_len = _bucket(max(len(x) for x in suffixes), 16)
      suffix_ids, suffix_mask = _left_pad(suffixes, n_bucket, s_len, self.pad_id)
      row_n = np.zeros((n_bucket,), np.int32)
      row_n[:len(rows_n)] = rows_n
      arrays = (jnp.asarray(prefix_ids), jnp.asarray(prefix_mask), jnp.asarray(suffix_ids),
                jnp.asarray(suffix_mask), jnp.asarray(row_n), yes, no)
      t1 = time.perf_counter()
      self.timings["prepare_s"] += t1 - t0
      log_odds_n = np.asarray(_verdict_log_odds_held(graph, state, *arrays))
      self.timings["forward_s"] += time.perf_counter() - t1
      self.forward_calls += 1
      p_yes_n = 1.0 / (1.0 + np.exp(-log_odds_n.astype(np.float64)))
      for (r, k), p in zip(slots, p_yes_n):
        out[r][k] = ItemScore(score=float(p), met=bool(p >= self.threshold))
    return out  # type: ignore[return-value]
