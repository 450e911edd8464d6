"""Evaluation during a training run: the held-out tasks (`eval.num_tasks`, scored by the rubric)
and every `eval.suites` benchmark, on the current params through the run's agent loop.
Process 0 (the driver) evaluates; the others return {}."""

from __future__ import annotations

import json
import os
import re

from launch import builders
from launch.train_run import Run, score
from synthagent_jax.evals import harness
from synthagent_jax.rollout.agent_loop import AgentLoop


def bench_suites(config) -> list:
  """(log name, Suite) for each `eval.suites` entry ("SUITE[:VALUE]"); bad entries fail here,
  before the model is built."""
  from synthagent_jax.evals import runner as bench_runner  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import suite as suite_lib  # pylint: disable=g-import-not-at-top
  cfg, out = config.eval, []
  for spec in cfg.suites:
    name, _, value = spec.partition(":")
    factory = suite_lib.get(name)
    suite = factory(bench_runner.options_from_spec(spec, factory, limit=cfg.suites_limit,
                                                   data_dir=cfg.suites_data_dir or None))
    suite.load()  # data present and well-formed
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(value))[0])
    out.append((f"{name}_{tag}" if tag else name, suite))
  return out


def bench_evaluate(run: Run, loop: AgentLoop, step: int) -> dict:
  """Every eval.suites benchmark on the current params through the loop's engine:
  bench/<name>/<metric> and bench/<name>/frac_<status>; episodes under eval/bench/<name>/.
  The in-process policy also plays the user of suites that need one."""
  from synthagent_jax.evals import policies as bench_policies  # pylint: disable=g-import-not-at-top
  from synthagent_jax.evals import runner as bench_runner  # pylint: disable=g-import-not-at-top
  from synthagent_jax.llm.jax_llm import JaxChatLLM  # pylint: disable=g-import-not-at-top
  cfg, out = run.config.eval, {}
  policy = bench_policies.Policy(
      f"train:step_{step}", "train", run.tokenizer, lambda task: loop.engine,
      max_context=run.model_cfg.max_position_embeddings,
      chat_llm=lambda: JaxChatLLM(loop.engine, run.tokenizer))
  for name, suite in run.bench:
    out_dir = (os.path.join(run.workdir, "eval", "bench", name, f"step_{step:06d}")
               if builders.is_process0() else None)
    res = bench_runner.run_suite(suite, policy, run.config.rollout, out_dir, k=cfg.suites_k,
                                 user_llm=policy.chat_llm(), seed=builders.stable_seed(
                                     "bench", name, step), progress=False).results
    # Metric keys allow [A-Za-z0-9_.-^]: "pass@k" is logged as "pass_at_k".
    out.update({f"bench/{name}/{re.sub(r'[^A-Za-z0-9_.^-]', '_', m.replace('@', '_at_'))}": v
                for m, v in res["metrics"].items()})
    out.update({f"bench/{name}/frac_{s}": c / res["episodes"] for s, c in res["statuses"].items()})
  return out


def evaluate(run: Run, loop: AgentLoop, step: int, writer) -> dict:
  if not builders.is_process0():  # the driver's job
    return {}
  bench = bench_evaluate(run, loop, step) if run.bench else {}
  cfg = run.config.eval
  if not run.eval_tasks or cfg.num_tasks <= 0:
    if bench:
      writer.write(step, bench)
    return bench
  tasks = run.eval_tasks[:cfg.num_tasks]
  seed = builders.stable_seed("eval", step)
  res = harness.evaluate(lambda ts, k: loop.run(ts, k, seed=seed),
                         lambda ts, trajs: score(run, ts, trajs), tasks, cfg.k)
  writer.write(step, {**res.metrics, **bench})
  if builders.is_process0():
    os.makedirs(os.path.join(run.workdir, "eval"), exist_ok=True)
    with open(os.path.join(run.workdir, "eval", f"step_{step:06d}.json"), "w") as f:
      json.dump(res.metrics, f, indent=2, sort_keys=True)
    # Per-episode rewards by task id, so two evaluations of the same tasks can be compared pairwise.
    with open(os.path.join(run.workdir, "eval", f"step_{step:06d}_rewards.json"), "w") as f:
      json.dump({t.id: [float(r) for r in row] for t, row in zip(tasks, res.rewards)}, f)
  return {**res.metrics, **bench}
