"""Memory plan of a training config on its mesh, without weights.

    python -m launch.plan --config=configs/qwen_3b.py
    python -m launch.plan --config=configs/qwen_3b.py --config.mesh.shape="(1,8,1)" --devices=8

Builds the TrainState abstractly (jax.eval_shape) on the configured mesh (simulated CPU devices
when --devices is given) and prints the parameter count and the bytes each device holds for
parameters, optimizer state, gradients and an activation estimate of one micro-batch.

Model dims come from `config.model.checkpoint`'s config.json when that is set (only config.json
is read), else from config.model's dims (hidden_size, ..., and vocab_size, or the tokenizer's
vocabulary when vocab_size is absent).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def model_config(config):
  """ModelConfig for the plan: checkpoint config.json, else config.model's dims."""
  from synthagent_jax import models  # pylint: disable=g-import-not-at-top
  m = config.model
  if m.get("checkpoint", ""):
    return models.load_hf_config(m.checkpoint, dtype=m.dtype, remat=m.remat)
  vocab = m.get("vocab_size", 0)
  if not vocab and not config.get("tokenizer", ""):
    raise ValueError("the plan needs model dims: set --config.model.checkpoint=DIR (only its "
                     "config.json is read) or config.model.vocab_size and the other dims")
  if not vocab:
    import transformers  # pylint: disable=g-import-not-at-top
    vocab = len(transformers.AutoTokenizer.from_pretrained(config.tokenizer))
  return models.ModelConfig(
      family=m.family, vocab_size=vocab, hidden_size=m.hidden_size,
      intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, rope_theta=m.rope_theta,
      tie_word_embeddings=m.tie_word_embeddings, dtype=m.dtype, remat=m.remat)


def _device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
  return total


def activation_bytes(model_cfg, mesh_shape, micro_batch_size: int, seq_len: int) -> int:
  """Rough per-device activation bytes of one micro-batch's forward + backward.

  Sequences split over data x fsdp, heads / MLP / vocab over tensor. Saved per layer: the layer
  input only under remat "full"; otherwise ~10 D-wide and 3 F-wide tensors per token plus the
  float32 attention scores and probabilities. Add one layer's working set (recomputed under remat)
  and the float32 logits, their softmax and gradient.
  """
  data, fsdp, tensor = mesh_shape
  rows = max(1, -(-micro_batch_size // (data * fsdp)))
  tokens = rows * seq_len
  c = _BYTES[model_cfg.dtype]
  d, f = model_cfg.hidden_size, model_cfg.intermediate_size // tensor
  heads = max(1, model_cfg.num_heads // tensor)
  layer_full = tokens * (10 * d + 3 * f) * c + 2 * rows * heads * seq_len * seq_len * 4
  saved = tokens * d * c if model_cfg.remat == "full" else layer_full
  logits = 3 * tokens * (model_cfg.vocab_size // tensor) * 4
  return model_cfg.num_layers * saved + layer_full + logits


def plan(config) -> dict:
  """The memory plan of `config` as a dict (see module docstring); allocates no weights."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from synthagent_jax import parallel  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import optim  # pylint: disable=g-import-not-at-top
  from synthagent_jax.rl import state as state_lib  # pylint: disable=g-import-not-at-top

  model_cfg = model_config(config)
  mesh_cfg = parallel.MeshConfig.from_config(config.mesh)
  mesh = parallel.make_mesh(mesh_cfg)
  optim_cfg = optim.OptimConfig.from_config(config.optim, schedule="constant")
  tx = optim.make_optimizer(optim_cfg)
  spec = state_lib.plan_state(model_cfg, tx, mesh, mesh_cfg.rules, config.get("seed", 0))
  n_params = sum(int(np.prod(x.shape, dtype=np.int64))
                 for x in jax.tree.leaves(spec.abstract.params))
  params_b = _device_bytes(spec.abstract.params)
  opt_b = _device_bytes(spec.abstract.opt_state)
  seq_len = config.rollout.max_total_tokens
  micro = config.rl.micro_batch_size
  act_b = activation_bytes(model_cfg, tuple(mesh.devices.shape), micro, seq_len)
  notes = list(spec.notes)
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  if micro % dp:
    notes.append(f"rl.micro_batch_size={micro} is not a multiple of data x fsdp = {dp}: "
                 "rl.learner.make_train_step will refuse it")
  return {
      "model": model_cfg, "mesh_shape": dict(zip(mesh.axis_names, mesh.devices.shape)),
      "num_devices": mesh.devices.size, "num_params": n_params,
      "params_bytes_per_device": params_b, "opt_state_bytes_per_device": opt_b,
      "grads_bytes_per_device": params_b, "activation_bytes_per_device": act_b,
      "total_bytes_per_device": 2 * params_b + opt_b + act_b,
      "micro_batch_size": micro, "seq_len": seq_len, "notes": notes,
  }


def _gib(n: int) -> str:
  return f"{n / 2**30:8.3f} GiB"


def format_plan(p: dict) -> str:
  m = p["model"]
  lines = [
      f"model: {m.family} L={m.num_layers} D={m.hidden_size} F={m.intermediate_size} "
      f"H={m.num_heads} K={m.num_kv_heads} Dh={m.head_dim} V={m.vocab_size} "
      f"compute={m.dtype} remat={m.remat}",
      f"mesh: {p['mesh_shape']} ({p['num_devices']} devices)",
      f"parameters: {p['num_params']:,} ({p['num_params'] / 1e9:.3f} B)",
      "per device:",
      f"  params (fp32)      {_gib(p['params_bytes_per_device'])}",
      f"  optimizer state    {_gib(p['opt_state_bytes_per_device'])}",
      f"  gradients (fp32)   {_gib(p['grads_bytes_per_device'])}",
      f"  activations (est.) {_gib(p['activation_bytes_per_device'])}   "
      f"(micro-batch {p['micro_batch_size']} x {p['seq_len']} tokens)",
      f"  total (est.)       {_gib(p['total_bytes_per_device'])}",
  ]
  lines += [f"note: {n}" for n in p["notes"]]
  return "\n".join(lines)


def print_plan(config) -> dict:
  """Prints the plan (process 0 only) and returns it; `launch.train --dry_run` calls this."""
  _simulate_devices(config, 0)
  from synthagent_jax import parallel  # pylint: disable=g-import-not-at-top
  p = plan(config)
  parallel.process0_print(format_plan(p), flush=True)
  return p


def _simulate_devices(config, requested: int) -> None:
  """Sets XLA_FLAGS for simulated CPU devices (the plan is shape arithmetic, so CPU stand-ins
  give the same per-device bytes); has no effect once jax has initialised a backend."""
  shape = tuple(config.mesh.shape)
  n = requested or (abs(int(shape[0] * shape[1] * shape[2])) if -1 not in shape else 0)
  if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _define_flags():
  """Flags of `python -m launch.plan` only: importing this module (launch.train --dry_run does)
  must not define a second --config."""
  global _CONFIG, _DEVICES  # pylint: disable=global-statement
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().",
                                            lock_config=True)
  _DEVICES = flags.DEFINE_integer(
      "devices", 0, "Simulate this many CPU devices (0: the real ones, or the mesh's size when "
      "the real ones are too few).")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  _simulate_devices(config, _DEVICES.value)
  try:
    print_plan(config)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flag_as_required("config")
  app.run(main)
