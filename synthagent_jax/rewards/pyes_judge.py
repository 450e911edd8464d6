"""In-process judge: every (trajectory, item) pair scored as P("yes") at the verdict position.

Each pair becomes one chat prompt (full task, transcript, one criterion, "answer yes or no") that
ends with the assistant generation prompt; the verdict position is the prompt's last token, whose
next-token logits give the answer. No decoding: pairs are sorted by length, packed into batches
(at most `max_batch_size` rows and `max_tokens_per_batch` padded tokens), LEFT-padded to a
power-of-two length bucket so the verdict position is the last column, and each batch is ONE jitted
forward pass of the model (`forward_calls` counts them).

    P(yes) = sigmoid(logsumexp(logits[yes ids]) - logsumexp(logits[no ids]))

i.e. the probability of answering yes given that the answer is yes or no. The yes/no ids are the
first token of each spelling variant ("yes", "Yes", " yes", ...), so a tokenizer that splits
"yes" into several tokens still works (the first token decides). `met` is P(yes) >= threshold.

Memory note: the model's public call returns logits for every position; XLA does not prune them
to the last column, so a batch costs B * T * V floats of logits. `max_tokens_per_batch` bounds that.
"""

from __future__ import annotations

import functools
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


def render_item_prompt(request: JudgeRequest, section: str, item, max_chars_per_message: int
                       ) -> list[dict]:
  user = "\n".join([
      f"Full task (hidden from the assistant): {request.task.full_task}", "", "Conversation:",
      render_transcript(request.messages, max_chars_per_message), "",
      f"Criterion: {SECTION_QUESTIONS[section]} {item.text}", "Answer yes or no."])
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
  size = minimum
  while size < n:
    size *= 2
  return size


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _verdict_log_odds(graphdef, state, ids_bt, mask_bt, yes_ids, no_ids):
  """log P(yes) - log P(no) at the last position of each row: float32 [B]."""
  model = nnx.merge(graphdef, state)
  logits_btv = model(ids_bt, attention_mask_bt=mask_bt)
  last_bv = jax.nn.log_softmax(logits_btv[:, -1, :].astype(jnp.float32), axis=-1)
  yes_b = jax.nn.logsumexp(last_bv[:, yes_ids], axis=-1)
  no_b = jax.nn.logsumexp(last_bv[:, no_ids], axis=-1)
  return yes_b - no_b


class PYesJudge:
  """A `Judge` over our model, in-process.

  Args:
    model: an nnx model with the `models.Qwen` call signature (held by reference, so learner
      updates are seen), or a `(graphdef, state)` pair.
    tokenizer: HF tokenizer with a chat template.
    max_batch_size: rows per forward pass.
    max_tokens_per_batch: rows * padded length per forward pass.
    max_prompt_tokens: longer prompts keep their first `head_tokens` and their last tokens (the
      criterion and the verdict position are at the end).
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

  def _split(self):
    if isinstance(self.model, tuple):
      return self.model
    return nnx.split(self.model)

  def prompt_ids(self, request: JudgeRequest, section: str, item) -> list[int]:
    ids = chat_format.render_prompt_ids(
        self.tokenizer, render_item_prompt(request, section, item, self.max_chars_per_message))
    if len(ids) > self.max_prompt_tokens:
      self.truncated_prompts += 1
      tail = self.max_prompt_tokens - self.head_tokens
      ids = ids[:self.head_tokens] + ids[-tail:]
    return ids

  def score_prompts(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
    """P(yes) for each prompt (token ids ending at the verdict position): float [N]."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    p_yes = np.zeros((len(prompts),), np.float32)
    graphdef, state = self._split()
    yes = jnp.asarray(self.yes_ids, jnp.int32)
    no = jnp.asarray(self.no_ids, jnp.int32)
    start = 0
    while start < len(order):
      length = _bucket(len(prompts[order[start]]), self.min_len_bucket)
      rows = max(1, min(self.max_batch_size, self.max_tokens_per_batch // length))
      rows = 1 << (rows.bit_length() - 1)  # A power of two, so the row bucket never exceeds it.
      batch = order[start:start + rows]
      start += len(batch)
      rows_bucket = _bucket(len(batch), 1)
      ids_bt = np.full((rows_bucket, length), self.pad_id, np.int32)
      mask_bt = np.zeros((rows_bucket, length), np.int32)
      for r, i in enumerate(batch):
        p = prompts[i]
        ids_bt[r, length - len(p):] = p
        mask_bt[r, length - len(p):] = 1
      mask_bt[len(batch):, -1] = 1  # Filler rows: one real token so softmax rows stay finite.
      log_odds_b = _verdict_log_odds(graphdef, state, jnp.asarray(ids_bt), jnp.asarray(mask_bt),
                                     yes, no)
      self.forward_calls += 1
      p_yes[batch] = np.asarray(jax.nn.sigmoid(log_odds_b))[:len(batch)]
    return p_yes

  def judge(self, requests: Sequence[JudgeRequest]) -> list[list[ItemScore]]:
    prompts, where = [], []
    for r, req in enumerate(requests):
      for section, item in req.items:
        prompts.append(self.prompt_ids(req, section, item))
        where.append(r)
    out: list[list[ItemScore]] = [[] for _ in requests]
    if not prompts:
      return out
    for r, p in zip(where, self.score_prompts(prompts)):
      out[r].append(ItemScore(score=float(p), met=bool(p >= self.threshold)))
    return out
