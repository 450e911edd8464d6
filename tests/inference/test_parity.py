"""Greedy decoding of JaxEngine == transformers' generate (do_sample=False), token for token.

The reference models are written by transformers itself (random weights, fp32); ours loads the
same checkpoint with models.from_pretrained. Ragged prompts run in one left-padded batch on our
side and both batched (left-padded) and one by one on the transformers side.
"""

import numpy as np
import pytest

from synthagent_jax import models
from synthagent_jax.inference import engine as engine_lib
from synthagent_jax.inference import sampler
from tests import toys

torch = pytest.importorskip("torch")

PROMPTS = [[5, 17, 3], [9, 2, 44, 61, 7, 8, 30, 12, 1, 77, 4], [100], [23, 23, 23, 23, 9]]
NEW_TOKENS = 12
PAD = 0


def _hf_generate(hf_model, prompts, max_new_tokens, eos_token_id=None):
  """transformers greedy generate on a left-padded batch; returns per-row (ids, logprobs)."""
  width = max(len(p) for p in prompts)
  ids = np.full((len(prompts), width), PAD, np.int64)
  mask = np.zeros_like(ids)
  for row, prompt in enumerate(prompts):
    ids[row, width - len(prompt):] = prompt
    mask[row, width - len(prompt):] = 1
  with torch.no_grad():
    out = hf_model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            output_logits=True, return_dict_in_generate=True,
                            pad_token_id=PAD, eos_token_id=eos_token_id, temperature=None,
                            top_p=None, top_k=None)
  new_bn = out.sequences[:, width:].numpy()
  logp_bnv = torch.log_softmax(torch.stack(out.logits, dim=1).to(torch.float32), dim=-1).numpy()
  rows = []
  for row in range(len(prompts)):
    n = new_bn.shape[1]
    if eos_token_id is not None and eos_token_id in new_bn[row]:
      n = list(new_bn[row]).index(eos_token_id) + 1
    toks = [int(t) for t in new_bn[row, :n]]
    rows.append((toks, [float(logp_bnv[row, i, t]) for i, t in enumerate(toks)]))
  return rows


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def pair(request, tmp_path_factory):
  path = toys.write_hf_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
  return toys.load_hf_reference(path), models.from_pretrained(path, dtype="float32")


def _check(ours, reference):
  for completion, (ref_ids, ref_logprobs) in zip(ours, reference):
    assert completion.token_ids == ref_ids
    np.testing.assert_allclose(completion.logprobs, ref_logprobs, atol=1e-3)


def test_greedy_matches_transformers_on_ragged_batch(pair):
  hf_model, model = pair
  ours = sampler.JaxEngine(model).generate(
      PROMPTS, engine_lib.SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0))
  batched = _hf_generate(hf_model, PROMPTS, NEW_TOKENS)
  _check(ours, batched)
  assert len({t for c in ours for t in c.token_ids}) >= 3  # non-degenerate outputs
  assert all(c.finish_reason == "length" for c in ours)


@pytest.mark.slow
def test_greedy_matches_transformers_prompt_by_prompt(pair):
  hf_model, model = pair
  ours = sampler.generate(model, PROMPTS, NEW_TOKENS)
  _check(ours, [_hf_generate(hf_model, [p], NEW_TOKENS)[0] for p in PROMPTS])


@pytest.mark.slow
def test_stop_token_matches_transformers_eos(pair):
  hf_model, model = pair
  free = _hf_generate(hf_model, PROMPTS, NEW_TOKENS)
  stop = free[1][0][4]
  reference = _hf_generate(hf_model, PROMPTS, NEW_TOKENS, eos_token_id=stop)
  ours = sampler.generate(model, PROMPTS, NEW_TOKENS, stop_token_ids=(stop,))
  _check(ours, reference)
  assert ours[1].finish_reason == "stop" and ours[1].token_ids[-1] == stop
