"""Evaluation during a training run: the held-out tasks (`eval.num_tasks`, scored by the rubric)
and every `eval.suites` benchmark, on the current params through the run's agent loop; the
paired gains between the phases (before SFT, after SFT, after GRPO) and the run's closing
summary. Process 0 (the driver) evaluates; the others return {}."""

from __future__ import annotations

import json
import os
import re

import numpy as np

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


def eval_file(run: Run, name: str) -> str:
  return os.path.join(run.workdir, "eval", name)


def _load_per_task(run: Run, name: str, kind: str = "rewards") -> dict | None:
  """What an earlier evaluation wrote per task: its held-out rewards (eval/<name>_rewards.json)
  or, with `kind="items"`, its rubric items met (eval/<name>_items.json); None if absent."""
  try:
    with open(eval_file(run, f"{name}_{kind}.json")) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def gains(run: Run, rewards: dict, prefix: str, unseen: set, items: dict | None = None) -> dict:
  """Paired gains of `rewards` over the evaluations before it on the same held-out tasks:
  `<prefix>/gain_vs_sft` (vs the policy GRPO starts from, step 0: after SFT, or the initial
  policy when there is no SFT) and `<prefix>/gain_vs_init` (vs the policy before SFT), each with
  its `_se` (harness.paired_gain). With `data.holdout_domains`, the same over the eval tasks of
  those domains, never trained on (`..._unseen`): the transfer figure. With `items`
  (`harness.task_items`), the met-rate of each rubric item kind paired the same way against
  step 0's: `<prefix>/gain_vs_sft/met/<kind>` and `<prefix>/gain_vs_sft_se/met/<kind>` (e.g.
  whether tool-call subgoals met rise, not only the reward)."""
  out = {}
  base_items = _load_per_task(run, "step_000000", "items") if items else None
  for kind in sorted({k for per_task in (base_items or {}).values() for k in per_task}):
    gain, se, n = harness.paired_gain(
        {i: v.get(kind, []) for i, v in items.items()},
        {i: v.get(kind, []) for i, v in base_items.items()})
    if n:
      out[f"{prefix}/gain_vs_sft/met/{kind}"], out[f"{prefix}/gain_vs_sft_se/met/{kind}"] = gain, se
  for base_name, key in (("step_000000", "gain_vs_sft"), ("init", "gain_vs_init")):
    base = _load_per_task(run, base_name)
    if base is None:
      continue
    for suffix, ids in (("", rewards), ("_unseen", unseen)):
      if suffix and not unseen:
        continue
      gain, se, n = harness.paired_gain({i: rewards[i] for i in ids if i in rewards}, base)
      if n:
        out[f"{prefix}/{key}{suffix}"], out[f"{prefix}/{key}{suffix}_se"] = gain, se
  return out


def evaluate(run: Run, loop: AgentLoop, step: int, writer, name: str | None = None) -> dict:
  """Held-out evaluation of the engine's current params (and the eval.suites benchmarks), logged
  at `step` and written to eval/step_<step>.json (+ `_rewards.json`, per task). `name="init"`
  is the policy before SFT: metrics `eval_init/...`, files eval/init*.json. Also logs the
  met-rate of each kind of rubric item (`harness.item_rates`) and, after the first evaluation,
  the paired gains over the earlier ones (`gains`)."""
  if not builders.is_process0():  # the driver's job
    return {}
  bench = bench_evaluate(run, loop, step) if run.bench and name is None else {}
  cfg = run.config.eval
  if not run.eval_tasks or cfg.num_tasks <= 0:
    if bench:
      writer.write(step, bench)
    return bench
  tasks = run.eval_tasks[:cfg.num_tasks]
  prefix = "eval" if name is None else f"eval_{name}"
  seed = builders.stable_seed("eval", step)
  # Scored as GRPO is trained: with rl.zero_unfinished an episode that never answers gets 0 (the
  # rubric alone pays one that asks and calls until its turns run out; docs/benchmarks.md,
  # session 10); eval/rubric_reward_mean is the rubric's mean of every episode.
  res = harness.evaluate(lambda ts, k: loop.run(ts, k, seed=seed),
                         lambda ts, trajs: score(run, ts, trajs), tasks, cfg.k, prefix=prefix,
                         zero_unfinished=bool(run.config.rl.get("zero_unfinished", False)))
  rewards = {t.id: [float(r) for r in row] for t, row in zip(tasks, res.rewards)}
  episode_tasks = [t for t in tasks for _ in range(cfg.k)]
  items = harness.task_items(episode_tasks, res.results)
  metrics = {**res.metrics, **harness.item_rates(episode_tasks, res.results, prefix)}
  held_out = set(builders.holdout_domain_names(run.config.data.get("holdout_domains", ())))
  unseen = {t.id for t in tasks if t.domain in held_out}
  if unseen:
    vals = [r for i in unseen for r in rewards[i]]
    metrics[f"{prefix}/reward_mean_unseen"] = float(np.mean(vals))
    metrics[f"{prefix}/reward_stderr_unseen"] = (
        float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0)
  if name is None:
    metrics.update(gains(run, rewards, prefix, unseen, items))
  file_name = name or f"step_{step:06d}"
  os.makedirs(os.path.join(run.workdir, "eval"), exist_ok=True)
  with open(eval_file(run, f"{file_name}.json"), "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
  # Per-episode rewards by task id, so two evaluations of the same tasks can be compared pairwise.
  with open(eval_file(run, f"{file_name}_rewards.json"), "w") as f:
    json.dump(rewards, f)
  with open(eval_file(run, f"{file_name}_items.json"), "w") as f:
    json.dump(items, f)
  writer.write(step, {**metrics, **bench})
  return {**metrics, **bench}


# The rubric item kinds whose paired met-rate gain the summaries print (issue 16: the gain should
# include tool use, not only asks).
ITEM_GAINS = (("subgoals.tool_called", "tool-call subgoals met"),
              ("interactions.asked_user_for", "asks met"))


def summary(run: Run) -> str:
  """The run's held-out story in a few lines: reward before SFT, after SFT and after GRPO (each
  ± its standard error, with the share of tool-call subgoals met), then the paired gains. Read
  from the eval/ files, so a resumed run reports its whole history."""
  def load(name):
    try:
      with open(eval_file(run, f"{name}.json")) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
  eval_dir = os.path.join(run.workdir, "eval")
  steps = sorted(n[:-5] for n in (os.listdir(eval_dir) if os.path.isdir(eval_dir) else ())
                 if re.fullmatch(r"step_\d{6}\.json", n))
  phases = [("before SFT", load("init"), "eval_init")]
  if steps:
    phases.append(("after SFT" if run.config.sft.num_steps > 0 else "start", load(steps[0]),
                   "eval"))
  if len(steps) > 1:
    phases.append(("after GRPO", load(steps[-1]), "eval"))
  shaped = any(m and f"{p}/rubric_reward_mean" in m for _, m, p in phases)
  lines = ["held-out reward (mean ± s.e." + ("; an episode that never answers scores 0, as in "
                                             "training; 'rubric': the rubric alone" if shaped
                                             else "") + "):"]
  for label, m, p in phases:
    if not m:
      continue
    tool = m.get(f"{p}/met/subgoals.tool_called")
    rubric = m.get(f"{p}/rubric_reward_mean")
    lines.append(f"  {label:<11} {m[f'{p}/reward_mean']:.3f} ± {m[f'{p}/reward_stderr']:.3f}"
                 + (f"   rubric {rubric:.3f}" if rubric is not None else "")
                 + f"   answered {m.get(f'{p}/status_answered', 0.0):.2f}"
                 f"   pass rate {m[f'{p}/pass_rate']:.3f}"
                 + (f"   tool-call subgoals met {tool:.3f}" if tool is not None else "")
                 + f"   ({int(m[f'{p}/episodes'])} episodes)")
  last = phases[-1][1] if len(phases) == 3 else None
  for key, label in (("gain_vs_sft", "GRPO - SFT"), ("gain_vs_init", "GRPO - init"),
                     ("gain_vs_sft_unseen", "GRPO - SFT on domains never trained on")):
    if last and f"eval/{key}" in last:
      gain, se = last[f"eval/{key}"], last[f"eval/{key}_se"]
      lines.append(f"  {label}: {gain:+.3f} ± {se:.3f}, paired by task"
                   + (f" ({gain / se:+.1f} s.e.)" if se > 0 else ""))
  for label, gain, se in item_gains(last or {}):
    lines.append(f"  GRPO - SFT, {label}: {gain:+.3f} ± {se:.3f}, paired by task"
                 + (f" ({gain / se:+.1f} s.e.)" if se > 0 else ""))
  return "\n".join(lines)


def item_gains(metrics: dict) -> list[tuple[str, float, float]]:
  """(label, gain, s.e.) of each `ITEM_GAINS` kind an evaluation's metrics hold."""
  return [(label, metrics[f"eval/gain_vs_sft/met/{kind}"],
           metrics[f"eval/gain_vs_sft_se/met/{kind}"])
          for kind, label in ITEM_GAINS if f"eval/gain_vs_sft/met/{kind}" in metrics]
