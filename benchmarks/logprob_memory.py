"""Compiled memory of the learner's log-prob gradient: chunked LM head vs the [B, T, V] logits.

    python -m benchmarks.logprob_memory [--vocab 151936 --seq 8192 --batch 1] [--json]

Compiles (never runs) `jax.grad` of sum(token_logprobs) over a 1-layer, 64-wide Qwen2 with the
given vocabulary, and reads XLA's own memory analysis of the compiled program: the bytes of
temporaries (everything that is neither an argument nor an output). The figure of merit is those
temporaries divided by the size of the float32 logits [B, T, V]. `--path full` measures the
pre-issue-15 path (whole logits, log-softmax and softmax at once) for comparison. Runs on the
CPU in a few seconds per shape: nothing is allocated but the parameters' shapes.
"""

import argparse
import json

import jax
import jax.numpy as jnp
from flax import nnx

from synthagent_jax import models
from synthagent_jax.rl import learner


def _full_logits_logprobs(graphdef, params, input_ids_bt, attention_mask_bt, temperature):
  """The pre-chunking token_logprobs: materialises float32 [B, T, V] logits and softmax."""
  model = nnx.merge(graphdef, params)
  logits_btv = model(input_ids_bt, attention_mask_bt=attention_mask_bt)[:, :-1] / temperature
  logz_bt = jax.nn.logsumexp(logits_btv, axis=-1)
  picked_bt = jnp.take_along_axis(logits_btv, input_ids_bt[:, 1:, None], axis=-1)[..., 0]
  probs_btv = jax.nn.softmax(jax.lax.stop_gradient(logits_btv), axis=-1)
  entropy_bt = jax.lax.stop_gradient(logz_bt) - (probs_btv * jax.lax.stop_gradient(
      logits_btv)).sum(-1)
  return picked_bt - logz_bt, entropy_bt


def measure(vocab: int, seq: int, batch: int = 1, path: str = "chunked",
            attention: str = "chunked", logprob_chunk: int | None = None,
            attention_chunk: int = 512) -> dict:
  """Compiled temporaries of the gradient of token_logprobs, in bytes and x the fp32 logits."""
  cfg = models.ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_layers=1,
                           num_heads=1, num_kv_heads=1, head_dim=64, attention=attention,
                           attention_chunk=attention_chunk,
                           **({} if logprob_chunk is None else {"logprob_chunk": logprob_chunk}))
  graphdef, abstract = nnx.split(models.abstract_model(cfg))
  fn = learner.token_logprobs if path == "chunked" else _full_logits_logprobs

  def loss(params, ids_bt, mask_bt):
    logp_bt, ent_bt = fn(graphdef, params, ids_bt, mask_bt, 1.0)
    return logp_bt.sum() + jax.lax.stop_gradient(ent_bt).sum()

  ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
  compiled = jax.jit(jax.grad(loss)).lower(abstract, ids, ids).compile()
  temp = int(compiled.memory_analysis().temp_size_in_bytes)
  logits = batch * seq * vocab * 4
  return {"path": path, "attention": attention, "vocab": vocab, "seq": seq, "batch": batch,
          "logprob_chunk": cfg.logprob_chunk, "temp_bytes": temp, "logits_fp32_bytes": logits,
          "temp_vs_logits": temp / logits}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--vocab", type=int, default=151936)
  p.add_argument("--seq", type=int, default=8192)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--path", choices=("chunked", "full", "both"), default="both")
  p.add_argument("--attention", default="chunked", help="ModelConfig.attention")
  p.add_argument("--logprob_chunk", type=int, default=None)
  p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
  a = p.parse_args()
  paths = ("chunked", "full") if a.path == "both" else (a.path,)
  rows = [measure(a.vocab, a.seq, a.batch, path, a.attention, a.logprob_chunk) for path in paths]
  for r in rows:
    print(f"{r['path']:>8} attention={r['attention']} B={r['batch']} T={r['seq']} "
          f"V={r['vocab']}: temporaries {r['temp_bytes'] / 2**30:.3f} GiB = "
          f"{r['temp_vs_logits']:.3f}x the fp32 logits ({r['logits_fp32_bytes'] / 2**30:.2f} GiB)")
  if a.json:
    out = {"device": jax.devices()[0].platform, **{f"{r['path']}_temp_vs_logits":
                                                   r["temp_vs_logits"] for r in rows},
           **{f"{r['path']}_temp_gib": r["temp_bytes"] / 2**30 for r in rows}, "rows": rows}
    print(json.dumps(out))


if __name__ == "__main__":
  main()
