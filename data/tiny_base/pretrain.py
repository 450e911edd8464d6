"""Pretrains the shipped tiny base model (data/tiny_base/) on a generated copy corpus.

The paper's recipes start from a pretrained Qwen; the embedded default (configs/tiny.py) starts
from this instead. A from-scratch 4-layer, 128-wide model does not learn, within SFT's minutes, to
copy a multi-digit id from the conversation into a tool call's arguments (docs/benchmarks.md,
"why no tool call is ever right"), so no tool call of the default run was ever right. This script
gives it that skill first, as pretraining gives a real base model:

    python data/tiny_base/pretrain.py    # 52 min, 2-core CPU: data/tiny_base/{*.json,*.safetensors}
    python data/tiny_base/pretrain.py --steps=20 --out_dir=/tmp/base    # a quick look

The corpus is generated here, never read from data/tasks/: ChatML exchanges in which a user gives
2-5 facts (ids sharing a prefix, dates, names, numbers; several surface forms) and the assistant
calls a made-up tool with some of them copied by key, then copies a reference id from the tool's
response into an <answer>; plus span-repeat drills. Key names and tools are generic lists below,
so the base knows how to copy, not what any task wants. Loss on every token (plain LM
pretraining). Seeded: the corpus is a function of --seed (tested); the weights also depend on
XLA's float summation order, so another machine may differ in the last bits.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

# pylint: disable=wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from configs import tiny  # noqa: E402
from launch import builders  # noqa: E402
from synthagent_jax import models  # noqa: E402
from synthagent_jax.models import qwen  # noqa: E402
from synthagent_jax.rl import learner as learner_lib  # noqa: E402
from synthagent_jax.rl import state as state_lib  # noqa: E402

KEYS = ("account_id order_id ticket_id booking_id member_id device_id card_id claim_id policy_id "
        "invoice_id case_id patient_id flight_id lot_id unit_id serial plan_code voucher badge "
        "route seat reference code date time name city party_size amount quantity room size "
        "item color currency email phone doctor hotel restaurant product").split()
ID_KEYS = {"serial", "plan_code", "voucher", "badge", "route", "seat", "reference", "code"}
NAMES = ("Ana Ben Cara Dev Eli Fay Gus Hal Ivy Jon Kai Lea Max Nia Oto Pia Rex Sol Tia Uma Vic "
         "Wes Yara Zed").split()
WORDS = ("river stone maple cedar harbor summit garden meadow falcon comet orchid willow ember "
         "atlas nova aurora lotus cobalt juniper sierra delta vega orion pine").split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
VERBS = ("get set find check send book cancel update open close list move verify reserve "
         "track").split()
NOUNS = "order account ticket booking card room flight item claim case plan payment record".split()
LETTERS, DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"


def _ident(rng: random.Random, prefix: str) -> str:
  return prefix + "".join(rng.choice(DIGITS) for _ in range(rng.randint(3, 6)))


def _value(rng: random.Random, key: str, prefix: str) -> str:
  if key.endswith("_id") or key in ID_KEYS:
    return _ident(rng, prefix)
  if key == "date":
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"
  if key == "time":
    return f"{rng.randint(7, 21)}:{rng.choice(['00', '15', '30', '45'])}"
  if key in ("party_size", "quantity", "amount", "room", "size"):
    return str(rng.randint(1, 999))
  if key == "email":
    return f"{rng.choice(NAMES).lower()}{rng.randint(1, 99)}@{rng.choice(WORDS)}.com"
  if key == "phone":
    return "555-" + "".join(rng.choice(DIGITS) for _ in range(4))
  words = [rng.choice(NAMES + WORDS).capitalize() for _ in range(rng.choice((1, 1, 2)))]
  return " ".join(words)


def _spoken(key: str) -> str:
  return key.replace("_id", " ID").replace("_", " ")


def _facts_text(rng: random.Random, facts: dict[str, str]) -> str:
  items, style = list(facts.items()), rng.randrange(4)
  if style == 0:
    return " ".join(f"My {_spoken(k)} is {v}." for k, v in items)
  if style == 1:
    return "; ".join(f"{_spoken(k)}: {v}" for k, v in items)
  if style == 2:
    return "Use " + ", ".join(f"{v} for the {_spoken(k)}" for k, v in items) + "."
  return json.dumps(facts)


def _call_text(name: str, args: dict[str, str]) -> str:
  return ('<tool_call>\n{"name": ' + json.dumps(name) + ', "arguments": ' + json.dumps(args)
          + "}\n</tool_call>")


def exchange(rng: random.Random) -> list[tuple[str, str]]:
  """(role, text) turns: facts -> a call copying some of them by key -> a reference -> answer."""
  if rng.random() < 0.2:  # span-repeat drill
    span = "".join(rng.choice(LETTERS + DIGITS) for _ in range(rng.randint(4, 10)))
    return [("user", f"Repeat {span} please."), ("assistant", span)]
  prefix = "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 2)))
  keys = rng.sample(KEYS, rng.randint(2, 5))
  facts = {k: _value(rng, k, prefix) for k in keys}
  picked = rng.sample(keys, rng.randint(1, min(3, len(keys))))
  tool = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
  turns = [("user", f"{_facts_text(rng, facts)} Please {tool.replace('_', ' ')}."),
           ("assistant", _call_text(tool, {k: facts[k] for k in picked}))]
  if rng.random() < 0.6:
    ref = _ident(rng, "".join(rng.choice(LETTERS) for _ in range(2)))
    turns += [("user", f"<tool_response>\nDone. Reference {ref}.\n</tool_response>"),
              ("assistant", f"<answer>Done, reference {ref}.</answer>")]
  return turns


def document(rng: random.Random, tok, max_tokens: int) -> tuple[list[int], list[int]]:
  """Token ids of whole exchanges up to max_tokens, and each token's kind (for measuring the copy,
  not for the loss): 0 not the assistant's, 1 an assistant turn, 2 an <answer> turn (whose every
  token follows from the context: it copies the tool response's reference id)."""
  ids, assistant = [], []
  while True:
    piece, mask = [], []
    for role, text in exchange(rng):
      head = tok.encode(f"<|im_start|>{role}\n", add_special_tokens=False)
      body = tok.encode(f"{text}<|im_end|>\n", add_special_tokens=False)
      piece += head + body
      kind = 0 if role != "assistant" else 2 if text.startswith("<answer>") else 1
      mask += [0] * len(head) + [kind] * len(body)
    if len(ids) + len(piece) > max_tokens:
      if ids:
        return ids, assistant
      piece, mask = piece[:max_tokens], mask[:max_tokens]
    ids += piece
    assistant += mask


def batch(rng: random.Random, tok, rows: int, seq_len: int, pad: int) -> dict[str, np.ndarray]:
  out = {k: np.zeros((rows, seq_len), np.int32)
         for k in ("input_ids", "attention_mask", "loss_mask", "assistant")}
  out["input_ids"][:] = pad
  for r in range(rows):
    ids, assistant = document(rng, tok, seq_len)
    n = len(ids)
    out["input_ids"][r, :n], out["attention_mask"][r, :n] = ids, 1
    out["loss_mask"][r, :n], out["assistant"][r, :n] = 1, assistant
  return out


def next_token_argmax(model, ids, mask) -> jax.Array:
  """The model's argmax next token at every position [B, T] (teacher forcing)."""
  layout, kernel = model.head_kernel()
  return qwen.head_logits(model.hidden_states(ids, attention_mask_bt=mask), layout,
                          kernel).argmax(-1)


def copy_figures_of(pred: np.ndarray, b: dict[str, np.ndarray]) -> dict[str, float]:
  """Teacher-forced figures of next-token argmaxes `pred` [B, T] on batch `b`: the share of
  assistant tokens right, and of <answer> turns (copies of a reference id never seen before)
  right in every token."""
  ok = pred[:, :-1] == b["input_ids"][:, 1:]
  kind = b["assistant"][:, 1:]
  exact = []
  for r in range(kind.shape[0]):
    answer = np.concatenate([[0], (kind[r] == 2).astype(int), [0]])
    edges = np.flatnonzero(np.diff(answer))
    exact += [bool(ok[r, a:e].all()) for a, e in zip(edges[::2], edges[1::2])]
  return {"token_acc": float(ok[kind > 0].mean()), "answers_exact": float(np.mean(exact))}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out_dir", default=str(HERE))
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--eval_every", type=int, default=100)
  p.add_argument("--save_every", type=int, default=500,
                 help="Also write the params so far to OUT_DIR/partial (removed at the end).")
  args = p.parse_args(argv)

  c = tiny.get_config()  # the default's dims and tokenizer: the base must load into it
  c.model.from_scratch = True
  tok = builders.tokenizer(c)
  mesh = builders.mesh(c)
  model_cfg = builders.model_config(c, tok)
  tx = builders.optimizer(c.optim, args.steps, lr=args.lr,
                          warmup_steps=min(50, args.steps // 10), schedule="cosine")
  spec = state_lib.plan_state(model_cfg, tx, mesh, builders.rules(c), args.seed)
  step_fn = learner_lib.make_train_step(
      spec, tx, learner_lib.LearnerConfig(loss="sft", minibatch_size=args.batch_size,
                                          micro_batch_size=args.batch_size), mesh)
  state = state_lib.state_from_params(builders.initial_params(c, model_cfg, spec), spec, tx,
                                      args.seed)
  pad = tok.pad_token_id or 0
  held_out = batch(random.Random(10_000 + args.seed), tok, 64, args.seq_len, pad)

  @jax.jit
  def argmax_next(params, ids, mask):
    return next_token_argmax(nnx.merge(spec.graphdef, params), ids, mask)

  def copy_figures(params) -> dict[str, float]:
    pred = np.asarray(argmax_next(params, jnp.asarray(held_out["input_ids"]),
                                  jnp.asarray(held_out["attention_mask"])))
    return copy_figures_of(pred, held_out)

  def save(params, out_dir):
    models.save_pretrained(nnx.merge(spec.graphdef, params), out_dir, dtype="float32")

  rng, t0 = random.Random(args.seed), time.time()
  for step in range(args.steps):
    b = batch(rng, tok, args.batch_size, args.seq_len, pad)
    del b["assistant"]
    state, m = step_fn(state, learner_lib.make_batch(b, mesh, loss="sft"))
    if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
      f = copy_figures(state.params)
      print(f"step {step + 1} loss {float(m['learner/loss']):.3f} assistant tokens right "
            f"{f['token_acc']:.3f} answers exact {f['answers_exact']:.3f} "
            f"({time.time() - t0:.0f} s)",
            flush=True)
    if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
      save(state.params, os.path.join(args.out_dir, "partial"))
  save(state.params, args.out_dir)
  shutil.rmtree(os.path.join(args.out_dir, "partial"), ignore_errors=True)
  print(f"wrote {args.out_dir}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
