"""Learner throughput: our jitted train_step vs a PyTorch + transformers AdamW step, same run.

    python -m benchmarks.learner_throughput [--hidden 256 --layers 4 --batch 8 --seq 256 ...]
    python -m benchmarks.learner_throughput --dims=qwen_0_5b --dtype=bfloat16 --attention=xla \
        --batch=8 --micro=4 --seq=2048 --no_torch --json      # MFU on a GPU (gpu_suite.sh)

Both sides train the same architecture (Qwen2, tied embeddings) on the same token batch with
full-sequence next-token cross-entropy and AdamW: ours is rl.learner's train_step with
loss="sft" (plus its entropy metric and non-finite guard); theirs is Qwen2ForCausalLM
(labels=input_ids) + loss.backward() + clip_grad_norm_ + torch.optim.AdamW.step(), on CUDA when
JAX runs on a GPU and torch sees one, else on the CPU. Rounds alternate between the two so load
from other processes hits both alike; medians are reported.

`--dtype` is the compute dtype (ModelConfig.dtype; params and moments stay float32 in the state;
torch runs under autocast in that dtype). `--dims` takes a named shape from
benchmarks.judge_throughput.DIMS (qwen_0_5b: Qwen2.5-0.5B's 24 layers, vocab 151936) over the
--hidden/--layers/... flags; its params are then random normals drawn tensor by tensor
(`random_train_state`: one unrolled 0.5B initializer compiles too slowly on a GPU).
MFU = tokens/s x train FLOPs/token (6 N + 12 L T D, N = matmul params incl. the LM head; model
FLOPs: a remat's recomputed forward is not counted) divided by a matmul peak measured in the
same run in the same dtype (jnp.dot, and torch.mm unless --no_torch; the best of them).
"""

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

REMATS = ("none", "full", "dots", "dots_no_batch")  # models.config.REMAT_NAMES
ATTENTIONS = ("naive", "blocked", "chunked", "xla")  # models.config.ATTENTION_NAMES


def _args(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--dims", default=None,
                 help="a named shape of benchmarks.judge_throughput.DIMS (tiny, qwen_0_5b); it "
                      "replaces --hidden/--intermediate/--layers/--heads/--kv_heads and, where "
                      "the table gives one, --vocab")
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--intermediate", type=int, default=768)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--kv_heads", type=int, default=2)
  p.add_argument("--vocab", type=int, default=4096)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--micro", type=int, default=0, help="micro-batch (0: whole batch)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps_per_round", type=int, default=2)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype (params stay float32)")
  p.add_argument("--attention", default="naive", choices=ATTENTIONS)
  p.add_argument("--remat", default="none", choices=REMATS)
  p.add_argument("--no_torch", action="store_true",
                 help="time ours only (no transformers step, no torch.mm peak)")
  p.add_argument("--peak_n", type=int, default=0,
                 help="matmul size of the peak measurement (0: 1024 on a CPU, 8192 otherwise)")
  p.add_argument("--json", action="store_true", help="print the result as one JSON line")
  a = p.parse_args(argv)
  if a.dims is not None:
    apply_dims(a, a.dims)
  return a


def apply_dims(a, name: str) -> None:
  """Overwrites a's hidden/intermediate/layers/heads/kv_heads (and vocab, where the table has
  one: tiny's 0 means the shipped tokenizer's there, a's own --vocab here) with DIMS[name]."""
  from benchmarks.judge_throughput import DIMS  # transformers etc.: only when asked for
  if name not in DIMS:
    raise SystemExit(f"--dims must be one of {sorted(DIMS)}, got {name!r}")
  d = DIMS[name]
  a.hidden, a.intermediate, a.layers = d["hidden_size"], d["intermediate_size"], d["num_layers"]
  a.heads, a.kv_heads = d["num_heads"], d["num_kv_heads"]
  a.vocab = d["vocab_size"] or a.vocab


def model_config(a):
  """The ModelConfig of a's shape and numerics (Qwen2, tied embeddings, float32 params)."""
  from synthagent_jax import models
  return models.ModelConfig(family="qwen2", vocab_size=a.vocab, hidden_size=a.hidden,
                            intermediate_size=a.intermediate, num_layers=a.layers,
                            num_heads=a.heads, num_kv_heads=a.kv_heads, dtype=a.dtype,
                            param_dtype="float32", attention=a.attention, remat=a.remat)


def _time_matmul(fn, reps: int) -> float:
  fn()
  t = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - t) / reps


def matmul_peak_flops(n: int = 1024, reps: int = 10, dtype: str = "float32",
                      torch_side: bool = True) -> dict:
  """FLOP/s of an [n, n] @ [n, n] product in `dtype`: jnp.dot on JAX's default device and
  (torch_side) torch.mm on the device the torch step uses; "peak" is the best of them."""
  a = jnp.ones((n, n), jnp.dtype(dtype))
  f = jax.jit(lambda x: x @ x)
  out = {"jax": 2 * n**3 / _time_matmul(lambda: f(a).block_until_ready(), reps)}
  if torch_side:
    import torch  # benchmarks only
    dev = _torch_device()
    ta = torch.ones(n, n, dtype=getattr(torch, dtype), device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def mm():
      ta @ ta
      sync()
    out["torch"] = 2 * n**3 / _time_matmul(mm, reps)
  out["peak"] = max(out.values())
  return out


def flops_per_token(a) -> float:
  head_dim = a.hidden // a.heads
  attn = a.hidden * head_dim * (2 * a.heads + 2 * a.kv_heads)
  mlp = 3 * a.hidden * a.intermediate
  n_matmul = a.layers * (attn + mlp) + a.hidden * a.vocab  # + LM head (tied)
  return 6 * n_matmul + 12 * a.layers * a.seq * a.hidden


@functools.lru_cache(maxsize=None)
def _filler(shape, dtype, sharding, kind):
  if kind == "normal":
    fn = lambda key: 0.02 * jax.random.normal(key, shape, dtype)
  else:
    fn = lambda key: jnp.full(shape, 1.0 if kind == "ones" else 0.0, dtype)
  return jax.jit(fn, out_shardings=sharding)


def random_train_state(model_cfg, tx, mesh, seed: int = 0):
  """(TrainState, StateSpec) like rl.state.create_train_state, but each parameter is drawn by
  its own small jitted program (0.02 x normal for matrices, 1 for vectors, 0 for biases),
  already on its sharding: a 0.5B model's one unrolled initializer compiles too slowly on a GPU,
  and a benchmark needs shapes, not the init distribution."""
  from synthagent_jax import parallel
  from synthagent_jax.rl import state as state_lib
  spec = state_lib.plan_state(model_cfg, tx, mesh, parallel.DEFAULT_RULES, seed)
  paths, treedef = jax.tree_util.tree_flatten_with_path(spec.abstract.params)
  leaves = []
  for i, (path, a) in enumerate(paths):
    kind = ("zeros" if "bias" in jax.tree_util.keystr(path) else
            "ones" if len(a.shape) == 1 else "normal")
    leaves.append(_filler(a.shape, a.dtype, a.sharding, kind)(jax.random.PRNGKey(seed + i)))
  params = jax.tree_util.tree_unflatten(treedef, leaves)

  def new(params):
    return state_lib.TrainState(params=params, opt_state=tx.init(params),
                                step=jnp.zeros((), jnp.int32), rng=jax.random.PRNGKey(seed + 1))
  state = jax.jit(new, out_shardings=spec.shardings, donate_argnums=0)(params)
  return state, spec


def build_ours(a, ids_bt):
  from synthagent_jax import parallel
  from synthagent_jax.rl import learner, optim
  from synthagent_jax.rl import state as state_lib
  cfg = model_config(a)
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-4, clip_norm=1.0))
  if a.dims is None:
    state, spec = state_lib.create_train_state(cfg, tx, mesh, parallel.DEFAULT_RULES)
  else:
    state, spec = random_train_state(cfg, tx, mesh)
  lcfg = learner.LearnerConfig(loss="sft", micro_batch_size=a.micro or None)
  step = learner.make_train_step(spec, tx, lcfg, mesh)
  ones = np.ones_like(ids_bt)
  batch = learner.make_batch(dict(input_ids=ids_bt, attention_mask=ones, loss_mask=ones), mesh,
                             loss="sft")
  holder = {"state": state}

  def run(n):
    for _ in range(n):
      holder["state"], m = step(holder["state"], batch)
    jax.block_until_ready(m)
    return float(m["learner/loss"])
  return run


def _torch_device() -> str:
  import torch
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def build_theirs(a, ids_bt):
  import contextlib

  import torch
  import transformers
  hf_cfg = transformers.Qwen2Config(
      vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
      tie_word_embeddings=True, max_position_embeddings=max(512, a.seq))
  dev = _torch_device()
  model = transformers.Qwen2ForCausalLM(hf_cfg).to(torch.float32).to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
  ids = torch.as_tensor(ids_bt, dtype=torch.long, device=dev)
  # float32 params either way; bf16 compute under autocast, like ours.
  compute = (contextlib.nullcontext if a.dtype == "float32" else
             lambda: torch.autocast(dev, dtype=getattr(torch, a.dtype)))

  def run(n):
    for _ in range(n):
      with compute():
        loss = model(input_ids=ids, labels=ids).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
    return loss.item()
  return run


def main(argv=None):
  a = _args(argv)
  ids_bt = np.random.default_rng(0).integers(0, a.vocab, (a.batch, a.seq)).astype(np.int32)
  sides = {"ours": build_ours(a, ids_bt)}
  if not a.no_torch:
    sides["transformers"] = build_theirs(a, ids_bt)
  t = time.perf_counter()
  first_loss = sides["ours"](1)
  compile_s = time.perf_counter() - t
  if not a.no_torch:
    sides["transformers"](1)
  times = {name: [] for name in sides}
  for _ in range(a.rounds):
    for name, fn in sides.items():
      t = time.perf_counter()
      fn(a.steps_per_round)
      times[name].append((time.perf_counter() - t) / a.steps_per_round)
  on_cpu = jax.default_backend() == "cpu"
  peak = matmul_peak_flops(n=a.peak_n or (1024 if on_cpu else 8192), reps=10 if on_cpu else 50,
                           dtype=a.dtype, torch_side=not a.no_torch)
  tokens = a.batch * a.seq
  fpt = flops_per_token(a)
  res = {"dims": vars(a), "jax_devices": str(jax.devices()),
         "device_kind": jax.devices()[0].device_kind, "dtype": a.dtype,
         "attention": a.attention, "remat": a.remat, "compile_s": round(compile_s, 2),
         "first_loss": first_loss, "flops_per_token": fpt,
         "matmul_peak_gflops": {k: round(v / 1e9, 2) for k, v in peak.items()}}
  if not a.no_torch:
    import torch
    res["torch_threads"] = torch.get_num_threads()
    res["torch_device"] = _torch_device()
  for name, ts in times.items():
    s = statistics.median(ts)
    res[name] = {"step_s": round(s, 4), "tokens_per_s": round(tokens / s, 1),
                 "mfu": round(tokens / s * fpt / peak["peak"], 4)}
  if not a.no_torch:
    res["speedup"] = round(res["ours"]["tokens_per_s"] / res["transformers"]["tokens_per_s"], 3)
  print(json.dumps(res) if a.json else json.dumps(res, indent=1))
  return res


if __name__ == "__main__":
  main()
