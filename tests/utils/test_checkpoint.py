"""Checkpointer: state + data-iterator JSON + config round trip, keep-last-N, restore sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from synthagent_jax.utils import checkpoint


def _state():
  return {"w": jnp.arange(12, dtype=jnp.float32).reshape(4, 3), "step": jnp.int32(7),
          "rng": jax.random.PRNGKey(3)}


def test_round_trip_with_data_and_config(tmp_path):
  state = _state()
  with checkpoint.Checkpointer(tmp_path / "ck", keep=2) as ck:
    assert ck.latest_step() is None
    ck.save(5, state, data_state={"epoch": 1, "pos": [3, 4]}, config={"lr": 1e-3, "mesh": (1, 2)})
    ck.wait_until_finished()
    assert ck.latest_step() == 5
    got, data, config = ck.restore(abstract_state=checkpoint.abstract_like(state))
  for k in state:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(state[k]))
    assert got[k].dtype == state[k].dtype
  assert data == {"epoch": 1, "pos": [3, 4]}
  assert config == {"lr": 1e-3, "mesh": [1, 2]}


def test_keep_last_n(tmp_path):
  with checkpoint.Checkpointer(tmp_path, keep=2) as ck:
    for step in (1, 2, 3):
      ck.save(step, _state())
    ck.wait_until_finished()
    assert ck.all_steps() == [2, 3]


def test_restore_onto_another_sharding(tmp_path):
  state = _state()
  with checkpoint.Checkpointer(tmp_path) as ck:
    ck.save(1, state)
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(4), ("fsdp",))
    target = checkpoint.abstract_like(state)
    target["w"] = jax.ShapeDtypeStruct((4, 3), jnp.float32,
                                       sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
    got, _, _ = ck.restore(1, abstract_state=target)
  assert got["w"].sharding.spec == PartitionSpec("fsdp")
  np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(state["w"]))


def test_errors(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ck:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      ck.restore(abstract_state=checkpoint.abstract_like(_state()))
    with pytest.raises(ValueError, match="JSON-serialisable"):
      ck.save(1, _state(), data_state={"f": object()})
  with pytest.raises(ValueError, match="keep"):
    checkpoint.Checkpointer(tmp_path / "x", keep=0)
