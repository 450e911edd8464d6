"""TrainState and its creation directly onto a mesh (no weights materialised on one device).

Params are the model's `nnx.Param` leaves as a pure nnx.State (raw arrays, fp32 master copies);
the model's structure (graphdef) is static and lives outside the state. The logical axes the
model names on each parameter are mapped to mesh axes by the rules table (parallel/rules.py);
optimizer moments inherit their parameter's sharding, scalars are replicated.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from synthagent_jax import models
from synthagent_jax import parallel


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes: a plain pytree.

  Attributes:
    params: nnx.State of fp32 parameter arrays.
    opt_state: optax state (moments shaped like params).
    step: int32 scalar, train_step calls so far.
    rng: uint32 [2] PRNG key (raw, so checkpoints store it as an array).
  """

  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def split_params(model: nnx.Module):
  """(graphdef, params): params as a pure nnx.State of arrays. Refuses non-Param state."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("model carries non-Param state; the learner only trains nnx.Param leaves")
  return graphdef, jax.tree.map(lambda v: v.get_value(), params, is_leaf=_is_var)


def _init_params(model_cfg: models.ModelConfig, seed: int):
  return split_params(models.Qwen(model_cfg, rngs=nnx.Rngs(params=seed)))[1]


def abstract_params(model_cfg: models.ModelConfig):
  """(graphdef, params of ShapeDtypeStructs, logical axes tree) without allocating weights."""
  abs_model = nnx.eval_shape(lambda: models.Qwen(model_cfg, rngs=nnx.Rngs(params=0)))
  graphdef, abs_p = split_params(abs_model)
  logical = jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]),
                         nnx.state(abs_model, nnx.Param), is_leaf=_is_var)
  return graphdef, abs_p, logical


def _new_state(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32),
                    rng=jax.random.PRNGKey(seed + 1))


def state_shardings(abs_state: TrainState, param_shardings, tx, mesh: Mesh) -> TrainState:
  """TrainState of NamedShardings: moments follow their params, everything else replicated."""
  rep = parallel.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_state.opt_state, param_shardings,
                                 transform_non_params=lambda _: rep,
                                 is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
  return TrainState(params=param_shardings, opt_state=opt_sh, step=rep, rng=rep)


@flax.struct.dataclass
class StateSpec:
  """Static facts about a TrainState on a mesh."""

  graphdef: Any = flax.struct.field(pytree_node=False)
  abstract: TrainState = flax.struct.field(pytree_node=False)
  shardings: TrainState = flax.struct.field(pytree_node=False)
  notes: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


def plan_state(model_cfg: models.ModelConfig, tx: optax.GradientTransformation, mesh: Mesh,
               rules, seed: int = 0) -> StateSpec:
  """Shapes, dtypes and shardings of the whole TrainState (jax.eval_shape; nothing allocated)."""
  graphdef, abs_p, logical = abstract_params(model_cfg)
  param_sh = parallel.tree_shardings(logical, abs_p, mesh, rules)
  abs_state = jax.eval_shape(functools.partial(_new_state, tx=tx, seed=seed), abs_p)
  shardings = state_shardings(abs_state, param_sh, tx, mesh)
  notes = tuple(parallel.spec_report(logical, abs_p, mesh, rules))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abs_state, shardings)
  return StateSpec(graphdef=graphdef, abstract=abstract, shardings=shardings, notes=notes)


def create_train_state(model_cfg: models.ModelConfig, tx: optax.GradientTransformation,
                       mesh: Mesh, rules, seed: int = 0) -> tuple[TrainState, StateSpec]:
  """A freshly initialised TrainState, each shard created on its own device (jit out_shardings)."""
  spec = plan_state(model_cfg, tx, mesh, rules, seed)

  def init():
    return _new_state(_init_params(model_cfg, seed), tx, seed)

  state = jax.jit(init, out_shardings=spec.shardings)()
  return state, spec


def create_params(model_cfg: models.ModelConfig, spec: StateSpec, seed: int = 0):
  """The params `models.init_model(model_cfg, seed)` draws, each shard created on its own device.

  One jitted program with `out_shardings=spec.shardings.params`: no device ever holds the whole
  model (the values are those of the unsharded path, bit for bit).
  """
  def init():
    variables = models.init_params(model_cfg, jax.random.key(seed))
    return jax.tree.map(lambda v: v.get_value(), variables, is_leaf=_is_var)
  return jax.jit(init, out_shardings=spec.shardings.params)()


def load_params(path: str, spec: StateSpec, dtype: str = "float32", remat: str = "none"):
  """Params of the Hugging Face checkpoint at `path`, each tensor placed straight onto its shards
  (`models.from_pretrained(..., sharding=spec.shardings.params)`; fp32 master copies)."""
  model = models.from_pretrained(path, dtype=dtype, remat=remat, sharding=spec.shardings.params)
  return split_params(model)[1]


def state_from_params(params, spec: StateSpec, tx: optax.GradientTransformation,
                      seed: int = 0) -> TrainState:
  """A TrainState around existing params, placed on the mesh (a no-op move for params made by
  `create_params` / `load_params`); the optimizer moments are created on their shards."""
  params = jax.device_put(params, spec.shardings.params)
  return jax.jit(functools.partial(_new_state, tx=tx, seed=seed),
                 out_shardings=spec.shardings)(params)


def process_local_params(params, model_cfg: models.ModelConfig, rules, on_device: bool = True):
  """For an engine that runs outside the multi-process SPMD program (rollouts driven by one
  process): the params gathered from every process (a collective: every process calls it) and,
  with `on_device`, placed on this process's own devices, FSDP-sharded over them by the same
  rules (else host numpy arrays). One process: `params` itself (no copy)."""
  if jax.process_count() == 1:
    return params
  host = parallel.gather_to_host(params)
  if not on_device:
    return host
  _, abs_p, logical = abstract_params(model_cfg)
  local_mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, -1, 1)), jax.local_devices())
  return jax.device_put(host, parallel.tree_shardings(logical, abs_p, local_mesh, rules))
