"""Learner throughput: our jitted train_step vs a PyTorch + transformers AdamW step, same run.

    python -m benchmarks.learner_throughput [--hidden 256 --layers 4 --batch 8 --seq 256 ...]

Both sides train the same architecture (Qwen2, float32, tied embeddings) on the same token
batch with full-sequence next-token cross-entropy and AdamW: ours is rl.learner's train_step
with loss="sft" (plus its entropy metric and non-finite guard); theirs is Qwen2ForCausalLM
(labels=input_ids) + loss.backward() + clip_grad_norm_ + torch.optim.AdamW.step(). Rounds
alternate between the two so load from other processes hits both alike; medians are reported.
MFU = tokens/s x train FLOPs/token (6 N + 12 L T D, N = matmul params incl. the LM head)
divided by a float32 matmul peak measured in the same run (jnp.dot and torch.mm, best of both).
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _args():
  p = argparse.ArgumentParser()
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
  return p.parse_args()


def matmul_peak_flops(n: int = 1024, reps: int = 10) -> dict:
  import torch  # benchmarks only
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  jax_peak = 2 * n**3 * reps / (time.perf_counter() - t)
  ta = torch.ones(n, n)
  ta @ ta
  t = time.perf_counter()
  for _ in range(reps):
    ta @ ta
  torch_peak = 2 * n**3 * reps / (time.perf_counter() - t)
  return {"jax": jax_peak, "torch": torch_peak, "peak": max(jax_peak, torch_peak)}


def flops_per_token(a) -> float:
  head_dim = a.hidden // a.heads
  attn = a.hidden * head_dim * (2 * a.heads + 2 * a.kv_heads)
  mlp = 3 * a.hidden * a.intermediate
  n_matmul = a.layers * (attn + mlp) + a.hidden * a.vocab  # + LM head (tied)
  return 6 * n_matmul + 12 * a.layers * a.seq * a.hidden


def build_ours(a, ids_bt):
  from synthagent_jax import models, parallel
  from synthagent_jax.rl import learner, optim
  from synthagent_jax.rl import state as state_lib
  cfg = models.ModelConfig(family="qwen2", vocab_size=a.vocab, hidden_size=a.hidden,
                           intermediate_size=a.intermediate, num_layers=a.layers,
                           num_heads=a.heads, num_kv_heads=a.kv_heads)
  mesh = parallel.make_mesh(parallel.MeshConfig(shape=(1, 1, 1)), jax.devices()[:1])
  tx = optim.make_optimizer(optim.OptimConfig(lr=1e-4, clip_norm=1.0))
  state, spec = state_lib.create_train_state(cfg, tx, mesh, parallel.DEFAULT_RULES)
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


def build_theirs(a, ids_bt):
  import torch
  import transformers
  hf_cfg = transformers.Qwen2Config(
      vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
      tie_word_embeddings=True, max_position_embeddings=max(512, a.seq))
  model = transformers.Qwen2ForCausalLM(hf_cfg).to(torch.float32).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
  ids = torch.as_tensor(ids_bt, dtype=torch.long)

  def run(n):
    for _ in range(n):
      loss = model(input_ids=ids, labels=ids).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
    return loss.item()
  return run


def main():
  a = _args()
  import torch
  ids_bt = np.random.default_rng(0).integers(0, a.vocab, (a.batch, a.seq)).astype(np.int32)
  ours, theirs = build_ours(a, ids_bt), build_theirs(a, ids_bt)
  t = time.perf_counter()
  ours(1)
  compile_s = time.perf_counter() - t
  theirs(1)
  times = {"ours": [], "transformers": []}
  for _ in range(a.rounds):
    for name, fn in (("ours", ours), ("transformers", theirs)):
      t = time.perf_counter()
      fn(a.steps_per_round)
      times[name].append((time.perf_counter() - t) / a.steps_per_round)
  peak = matmul_peak_flops()
  tokens = a.batch * a.seq
  fpt = flops_per_token(a)
  res = {"dims": vars(a), "torch_threads": torch.get_num_threads(),
         "jax_devices": str(jax.devices()), "compile_s": round(compile_s, 2),
         "matmul_peak_gflops": {k: round(v / 1e9, 2) for k, v in peak.items()}}
  for name, ts in times.items():
    s = statistics.median(ts)
    res[name] = {"step_s": round(s, 4), "tokens_per_s": round(tokens / s, 1),
                 "mfu": round(tokens / s * fpt / peak["peak"], 4)}
  res["speedup"] = round(res["ours"]["tokens_per_s"] / res["transformers"]["tokens_per_s"], 3)
  print(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
