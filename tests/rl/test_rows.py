"""rl/rows: minibatch / micro-batch row orders, checked against orders written out by hand."""

import jax
import numpy as np

from synthagent_jax.rl import rows


def test_split_takes_strided_rows_and_unsplit_inverts_it():
  x = np.arange(6 * 2).reshape(6, 2)
  y = np.asarray(rows.split(x, 3))
  # chunk i = rows i, i + 3
  np.testing.assert_array_equal(y[:, :, 0], [[0, 6], [2, 8], [4, 10]])
  np.testing.assert_array_equal(np.asarray(rows.unsplit(y)), x)


def test_blocks_first_puts_padding_rows_in_the_last_chunks():
  pad = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)  # rows 1 and 4 are padding
  order = np.asarray(rows.blocks_first(pad, 4))
  # Real rows in order (0 2 3 5 6 7), then 1 4; chunk i of split(4) is a block of two:
  chunks = np.asarray(rows.split(order, 4))
  np.testing.assert_array_equal(chunks, [[0, 2], [3, 5], [6, 7], [1, 4]])
  assert sorted(order.tolist()) == list(range(8))


def test_shuffle_keeps_real_chunks_when_more_padding_rows_are_added():
  key = jax.random.PRNGKey(3)
  pad6 = np.array([0, 0, 0, 0, 1, 1], bool)
  pad8 = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
  c6 = np.asarray(rows.split(rows.shuffle(key, pad6, 3), 3))
  c8 = np.asarray(rows.split(rows.shuffle(key, pad8, 4), 4))
  np.testing.assert_array_equal(c6[:2], c8[:2])  # the same two real chunks of two rows
  assert sorted(c6[:2].ravel().tolist()) == [0, 1, 2, 3]
  assert set(c8[2:].ravel().tolist()) == {4, 5, 6, 7}
