import numpy as np
import pytest

from synthagent_jax.rollout.batching import length_buckets, round_up, to_batch
from synthagent_jax.rollout.trajectory import Trajectory


def _traj(ids, mask, lps):
  return Trajectory(task_id="t", sample_index=0, token_ids=ids, loss_mask=mask,
                    sampler_logprobs=lps, prompt_len=1, messages=[], turns=[], status="answered")


def test_to_batch_pads_rows_and_length():
  a = _traj([5, 6, 7], [0, 1, 1], [0.0, -0.5, -0.25])
  b = _traj([5, 9], [0, 1], [0.0, -1.0])
  batch = to_batch([a, b], [np.full(3, 1.5), np.full(2, -2.0)], pad_id=0, length_multiple=4,
                   rows_multiple=4)
  assert batch["input_ids"].shape == (4, 4)
  np.testing.assert_array_equal(batch["input_ids"][0], [5, 6, 7, 0])
  np.testing.assert_array_equal(batch["attention_mask"][1], [1, 1, 0, 0])
  np.testing.assert_array_equal(batch["loss_mask"][2], [0, 0, 0, 0])  # empty padding row
  np.testing.assert_allclose(batch["sampler_logprobs"][0], [0.0, -0.5, -0.25, 0.0])
  np.testing.assert_allclose(batch["advantages"][:, :3], [[1.5] * 3, [-2.0] * 2 + [0.0], [0.0] * 3,
                                                       [0.0] * 3])
  assert batch["advantages"].shape == (4, 4) and not batch["advantages"][:, 3].any()
  with pytest.raises(ValueError, match="has 3 tokens but advantages of shape"):
    to_batch([a], [1.5], pad_id=0)


def test_to_batch_sft_has_no_advantages_and_rejects_overlong():
  a = _traj([1, 2, 3], [0, 1, 1], [0.0, 0.0, 0.0])
  assert "advantages" not in to_batch([a], pad_id=0)
  with pytest.raises(ValueError, match="max_len"):
    to_batch([a], pad_id=0, max_len=2)
  assert round_up(0, 8) == 8 and round_up(9, 8) == 16


def test_length_buckets_are_powers_of_two_then_the_cap():
  assert length_buckets(128, 768) == (128, 256, 512, 768)
  assert length_buckets(100, 1024) == (128, 256, 512, 1024)  # floor rounds up to a power of 2
  assert length_buckets(128, 100) == (100,)
  assert len(length_buckets(128, 2048 + 8192)) == 8  # the qwen_3b recipe: 8 train-step shapes
  with pytest.raises(ValueError, match="floor >= 1"):
    length_buckets(0, 10)


def test_to_batch_fixed_rows_and_length_buckets():
  a = _traj(list(range(1, 6)), [0, 1, 1, 1, 1], [0.0] * 5)
  batch = to_batch([a], [np.ones(5)], pad_id=0, buckets=(4, 8, 12), rows=6, rows_multiple=2)
  assert batch["input_ids"].shape == (6, 8)
  assert batch["attention_mask"][1:].sum() == 0  # five empty rows
  assert to_batch([a], [np.ones(5)], pad_id=0, buckets=(5, 8))["input_ids"].shape == (1, 5)
  with pytest.raises(ValueError, match="largest length bucket 4"):
    to_batch([a], [np.ones(5)], pad_id=0, buckets=(2, 4))
  with pytest.raises(ValueError, match="rows=3 must be"):
    to_batch([a], [np.ones(5)], pad_id=0, rows=3, rows_multiple=2)
  with pytest.raises(ValueError, match="rows=0 must be"):
    to_batch([a], [np.ones(5)], pad_id=0, rows=0)
