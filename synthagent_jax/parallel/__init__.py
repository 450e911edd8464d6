"""Meshes, logical-axis sharding rules and multi-host start-up."""

from synthagent_jax.parallel.distributed import broadcast_from_process0
from synthagent_jax.parallel.distributed import DistributedConfig
from synthagent_jax.parallel.distributed import gather_to_host
from synthagent_jax.parallel.distributed import initialize
from synthagent_jax.parallel.distributed import is_process0
from synthagent_jax.parallel.distributed import process0_print
from synthagent_jax.parallel.mesh import AXES
from synthagent_jax.parallel.mesh import BATCH_AXES
from synthagent_jax.parallel.mesh import make_mesh
from synthagent_jax.parallel.mesh import MeshConfig
from synthagent_jax.parallel.rules import batch_sharding
from synthagent_jax.parallel.rules import DEFAULT_RULES
from synthagent_jax.parallel.rules import logical_to_spec
from synthagent_jax.parallel.rules import replicated
from synthagent_jax.parallel.rules import spec_report
from synthagent_jax.parallel.rules import tree_shardings
