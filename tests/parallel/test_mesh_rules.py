"""Mesh config, logical-axis rules and distributed config: pure logic, no compilation."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from synthagent_jax import parallel


def test_mesh_shapes_and_minus_one():
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, -1, 2)))
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  with pytest.raises(ValueError, match="needs 6 devices"):
    parallel.make_mesh(parallel.MeshConfig(shape=(3, 2, 1)))
  with pytest.raises(ValueError, match="at most one -1"):
    parallel.MeshConfig(shape=(-1, -1, 1))
  with pytest.raises(ValueError, match="not a mesh axis"):
    parallel.MeshConfig(rules=(("embed", "model"),))


def test_mesh_config_from_config_section():
  cfg = parallel.MeshConfig.from_config({"shape": [1, 8, 1], "rules": [["embed", "fsdp"]]})
  assert cfg.shape == (1, 8, 1) and cfg.rules == (("embed", "fsdp"),)
  assert parallel.MeshConfig.from_config({"shape": (2, 2, 2)}).rules == parallel.DEFAULT_RULES


def test_logical_to_spec():
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(2, 2, 2)))
  rules = parallel.DEFAULT_RULES
  spec, notes = parallel.logical_to_spec(("vocab", "embed"), rules, (128, 32), mesh)
  assert spec == P("tensor", "fsdp") and not notes
  # 3 heads do not split over tensor=2: replicated, and reported.
  spec, notes = parallel.logical_to_spec(("embed", "heads", "head_dim"), rules, (32, 3, 8), mesh)
  assert spec == P("fsdp", None, None) and "heads=3" in notes[0]
  # A mesh axis shards at most one dimension of an array.
  spec, _ = parallel.logical_to_spec(("mlp", "heads"), rules, (8, 8), mesh)
  assert spec == P("tensor", None)
  # Size-1 mesh axes are dropped; tuples of axes shard over their product.
  mesh1 = parallel.make_mesh(parallel.MeshConfig(shape=(1, 8, 1)))
  spec, _ = parallel.logical_to_spec(("vocab", "embed"), rules, (128, 32), mesh1)
  assert spec == P(None, "fsdp")
  spec, _ = parallel.logical_to_spec(("embed",), (("embed", ("data", "fsdp")),), (32,), mesh)
  assert spec == P(("data", "fsdp"))
  with pytest.raises(ValueError, match="no rule"):
    parallel.logical_to_spec(("experts",), rules)


def test_distributed_config_from_config_and_env():
  cfg = parallel.DistributedConfig.from_config(
      {"coordinator_address": "", "num_processes": 1, "process_id": 0}, environ={})
  assert not cfg.multi_process
  assert parallel.initialize(cfg) is False  # single process: a no-op
  cfg = parallel.DistributedConfig.from_config(
      {"coordinator_address": "", "num_processes": 1, "process_id": 0},
      environ={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
               "JAX_PROCESS_ID": "3"})
  assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.1:1234", 4, 3)
  with pytest.raises(ValueError, match="coordinator_address"):
    parallel.DistributedConfig(num_processes=2)
  with pytest.raises(ValueError, match="process_id"):
    parallel.DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=2)
  assert parallel.is_process0() == (jax.process_index() == 0)
