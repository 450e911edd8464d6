"""In-process P(yes) judge: one forward pass per batch, exact probabilities, ranking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from flax import nnx

from synthagent_jax import models
from synthagent_jax.rewards import rubric
from synthagent_jax.rewards.judge import JudgeRequest
from synthagent_jax.rewards.pyes_judge import PYesJudge
from tests import toys
from tests.envs.fixtures import make_task
from tests.rewards.test_rubric import BAD, GOOD, _judge_only_task


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained("data/tokenizer")


class ScriptedLogits(nnx.Module):
  """Logits 2.0 on the yes ids and 0.5 on the no ids at every position, 0 elsewhere."""

  def __init__(self, vocab, yes_ids, no_ids):
    self.vocab, self.yes_ids, self.no_ids = vocab, tuple(yes_ids), tuple(no_ids)

  def init_cache(self, batch_size, max_len):
    return models.KVCache(k=(jnp.zeros((batch_size, 1, 1, max_len)),),
                          v=(jnp.zeros((batch_size, 1, max_len, 1)),))

  def forward_cached(self, ids_bt, positions_bt, cache, cache_index, kv_mask_bs, last_only=False):
    b, t = ids_bt.shape
    t = 1 if last_only else t
    row = jnp.zeros((self.vocab,)).at[jnp.array(self.yes_ids)].set(2.0)
    row = row.at[jnp.array(self.no_ids)].set(0.5)
    return jnp.broadcast_to(row, (b, t, self.vocab)), cache


def _requests(task, n_convs):
  convs = [GOOD, BAD, GOOD[:3]][:n_convs]
  return [JudgeRequest(task, c, task.rubric.items()) for c in convs]


def test_one_forward_per_batch_and_exact_two_way_probability(tok):
  task = _judge_only_task()
  judge = PYesJudge(None, tok, max_batch_size=4)
  judge.model = ScriptedLogits(len(tok), judge.yes_ids, judge.no_ids)
  requests = _requests(task, 3)  # 3 trajectories x 5 items = 15 pairs
  out = judge.judge(requests)
  # Each trajectory's 5 items split into units of 4 + 1; first-fit packs [4], [4], [4], [1, 1, 1].
  assert judge.forward_calls == 4
  ny, nn = len(judge.yes_ids), len(judge.no_ids)
  expected = 1 / (1 + np.exp(-(np.log(ny) + 2.0 - np.log(nn) - 0.5)))
  assert [len(r) for r in out] == [5, 5, 5]
  assert all(s.score == pytest.approx(expected, rel=1e-5) and s.met and s.ok
             for r in out for s in r)
  # The token budget also splits batches: every prefix here pads to the 512-token minimum bucket,
  # so a budget of 1024 tokens holds 2 trajectories per call.
  assert max(len(judge.prompt_pieces(r)[0]) for r in requests) <= 512
  judge2 = PYesJudge(judge.model, tok, max_batch_size=16, max_tokens_per_batch=1024,
                     min_len_bucket=512)
  assert [len(r) for r in judge2.judge(requests)] == [5, 5, 5]
  assert judge2.forward_calls == 2


def test_batched_left_padded_scores_match_unpadded_reference(tok):
  task = _judge_only_task()
  model = toys.tiny_model(vocab_size=len(tok), seed=0)
  judge = PYesJudge(model, tok, max_batch_size=8, min_len_bucket=512)  # One compiled shape.
  requests = _requests(task, 3)
  got = [s.score for r in judge.judge(requests) for s in r]
  assert judge.forward_calls == 3  # 5 items per trajectory; two trajectories exceed 8 items.
  graphdef, state = nnx.split(model)
  forward_jit = jax.jit(lambda state, ids: nnx.merge(graphdef, state)(ids))
  forward = lambda m, ids: forward_jit(state, ids)
  want = []
  # Unpadded references for two pairs of different lengths (each length compiles once).
  picks = [(0, 0), (2, 4)]
  got = [got[r * 5 + k] for r, k in picks]
  for r, k in picks:
    req = requests[r]
    section, item = req.items[k]
    ids = jnp.asarray([judge.prompt_ids(req, section, item)], jnp.int32)
    logp = jax.nn.log_softmax(forward(model, ids)[0, -1])
    ly = jax.nn.logsumexp(logp[jnp.array(judge.yes_ids)])
    ln = jax.nn.logsumexp(logp[jnp.array(judge.no_ids)])
    want.append(float(jax.nn.sigmoid(ly - ln)))
  np.testing.assert_allclose(got, want, atol=2e-4)


def test_trained_tiny_judge_ranks_met_above_unmet(tok):
  task = _judge_only_task()
  item = ("subgoals", task.rubric.subgoals[0])  # "Cancels order A17."
  model = toys.tiny_model(vocab_size=len(tok), seed=0)
  judge = PYesJudge(model, tok)
  met_req, unmet_req = (JudgeRequest(task, c, [item]) for c in (GOOD, BAD))
  prompts = [judge.prompt_ids(met_req, *item), judge.prompt_ids(unmet_req, *item)]
  length = max(map(len, prompts))
  ids = np.full((2, length), judge.pad_id, np.int32)
  mask = np.zeros((2, length), np.int32)
  for r, p in enumerate(prompts):
    ids[r, length - len(p):], mask[r, length - len(p):] = p, 1
  targets = jnp.asarray([judge.yes_ids[0], judge.no_ids[0]])
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    def loss_fn(model):
      logp = jax.nn.log_softmax(model(ids, attention_mask_bt=mask)[:, -1])
      return -jnp.take_along_axis(logp, targets[:, None], axis=1).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  before = [s.score for s in (r[0] for r in judge.judge([met_req, unmet_req]))]
  for _ in range(60):
    step(model, opt)
  met, unmet = (r[0] for r in judge.judge([met_req, unmet_req]))
  assert met.score > 0.8 and unmet.score < 0.2, (before, met, unmet)
  assert met.met and not unmet.met
  # Plugged into the rubric: the met trajectory gets the higher reward.
  good, bad = rubric.score_batch([task, task], [GOOD, BAD], judge, aggregation="weighted")
  assert good.verdicts[0].score > bad.verdicts[0].score


class CountingTokenizer:
  """The real tokenizer, counting encode calls per text."""

  def __init__(self, tok):
    self._tok, self.encoded = tok, {}

  def __getattr__(self, name):
    return getattr(self._tok, name)

  def __call__(self, text, *args, **kwargs):
    self.encoded[text] = self.encoded.get(text, 0) + 1
    return self._tok(text, *args, **kwargs)

  def encode(self, text, *args, **kwargs):
    self.encoded[text] = self.encoded.get(text, 0) + 1
    return self._tok.encode(text, *args, **kwargs)


def test_suffixes_tokenized_once_per_call_and_model_split_once(tok):
  """3 trajectories x the same 5 criteria: each criterion suffix is tokenized once per call; the
  model is split once across calls, and in-place parameter updates are still seen."""
  task = _judge_only_task()
  counting = CountingTokenizer(tok)
  model = toys.tiny_model(vocab_size=len(tok), seed=3)
  judge = PYesJudge(model, counting, max_batch_size=8)
  counting.encoded.clear()
  requests = _requests(task, 3)
  first = judge.judge(requests)
  criteria = [t for t in counting.encoded if t.startswith("Criterion:")]
  assert len(criteria) == 5 and all(counting.encoded[t] == 1 for t in criteria)
  held = judge._split()
  again = judge.judge(requests)
  assert judge._split()[0] is held[0] and judge._split()[1] is held[1]
  assert [s.score for r in again for s in r] == [s.score for r in first for s in r]
  assert set(judge.timings) == {"prepare_s", "split_s", "forward_s"}
  assert judge.timings["forward_s"] > 0
  nnx.update(model, jax.tree.map(lambda p: p * 3.0, nnx.state(model, nnx.Param)))
  updated = judge.judge(requests)
  assert [s.score for r in updated for s in r] != [s.score for r in first for s in r]
