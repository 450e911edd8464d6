"""Learning benchmark: does GRPO improve a tiny agent beyond its SFT warm start?

    python -m benchmarks.e2e_tiny --workdir=runs/e2e_tiny [--sft_steps=N --rl_steps=M ...]

The defaults are the recorded recipe (docs/benchmarks.md, sessions 11 and 16): configs/tiny.py's
SFT (80 steps), then 30 GRPO steps of 16 tasks x 4 samples in 4 updates of 4 tasks at lr 1e-4 with
the symmetric PPO clip (RECIPE, applied on top of configs/tiny.py before any --set), training on
every domain but banking and clinic, 162 held-out tasks x 8 samples per phase; 35-45 minutes on
a 2-core CPU shared with another run (session 14's K0, session 16's N2). (DAPO's clip-higher,
tiny's 0.28, let the entropy climb over the 120 updates: 0.74 -> 0.94 on seed 0, 0.68 -> 0.93 on
seed 1, and the gain fell: +0.037 / +0.021 against +0.046 / +0.040 with the symmetric clip.) 8
samples per task, not 2: the paired s.e. of GRPO - SFT is almost all the evaluation's own
sampling noise, so it halves (0.011 -> 0.006-0.007 on three seeds, docs/benchmarks.md session
14); `--eval_k=2` is a quicker look (~20 minutes) at twice the s.e.

On held-out offline-world tasks (the config's eval file, never trained on), the mean reward with
its standard error over `--eval_tasks` x `--eval_k` sampled episodes, scored as GRPO is trained
(`rl.zero_unfinished`: an episode that never answers scores 0; the rubric alone and the share of
episodes that answered beside it), and the share of tool-call subgoals and asks met:
  1. at initialisation (launch.train's evaluation before SFT): configs/tiny.py's starting point,
     the shipped base data/tiny_base (runs 1-13 in docs/benchmarks.md started from random
     weights: `--set=model.from_scratch=True`),
  2. after SFT on reference trajectories (stopped early, so its reward stays well below 1),
  3. after GRPO from that SFT policy;
then the paired gains (by task) GRPO - SFT and, with `--holdout_domains`, GRPO - SFT on the
domains never trained on (transfer), and the same paired gain per domain (`domain_gains`). One
`launch.train` workdir: the GRPO invocation resumes from the SFT checkpoint. Prints a markdown
section for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app
from absl import flags

from configs import tiny
from launch import builders
from launch import train_eval
from launch import train_loop
from synthagent_jax.evals import harness
from synthagent_jax.utils import metrics as metrics_lib

_WORKDIR = flags.DEFINE_string("workdir", "runs/e2e_tiny", "Root of the benchmark's runs.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 80, "SFT warm-start steps.")
_RL_STEPS = flags.DEFINE_integer("rl_steps", 30, "GRPO steps.")
_EVAL_TASKS = flags.DEFINE_integer("eval_tasks", 162, "Held-out tasks evaluated per phase.")
_EVAL_K = flags.DEFINE_integer("eval_k", 8, "Sampled episodes per held-out task.")
_HOLDOUT = flags.DEFINE_string(
    "holdout_domains", "banking,clinic", "Comma-separated domains never trained on "
    "(data.holdout_domains; '' trains on all): the transfer figure is GRPO - SFT on their "
    "held-out tasks.")
_OVERRIDES = flags.DEFINE_multi_string(
    "set", [], "Extra config overrides key=value (python literals), applied after RECIPE.")

# The benchmark's settings on top of configs/tiny.py (which keeps its own, faster defaults for
# the README's first run): 64 episodes per step in 4 clipped updates (tiny's 16 in one update
# learn to finish and little else: +0.029 here), and clip_high = clip_low. lr 1e-4, not 3e-4: at
# 3e-4 one GRPO seed of one SFT policy let the entropy climb 0.72 -> 1.06 and lost its gain (+0.7
# s.e.); at 1e-4 the same seed gained +6.5 s.e. (docs/benchmarks.md, session 16).
RECIPE = ("optim.lr=1e-4", "rl.tasks_per_step=16", "rl.minibatch_tasks=4", "rl.clip_high=0.2",
          "checkpoint.every_steps=10")


def _config(sft_steps: int, rl_steps: int):
  import ast  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.sft.num_steps = sft_steps
  c.rl.num_steps = rl_steps
  c.eval.num_tasks = _EVAL_TASKS.value
  c.eval.k = _EVAL_K.value
  c.eval.every_steps = 0
  c.data.holdout_domains = _HOLDOUT.value
  for item in RECIPE + tuple(_OVERRIDES.value):
    key, value = item.split("=", 1)
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    try:
      node[leaf] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      node[leaf] = value
  return c


def _eval_file(workdir: str, name: str) -> dict:
  with open(os.path.join(workdir, "eval", f"{name}.json")) as f:
    return json.load(f)


def domain_gains(domain_of: dict, sft: dict, grpo: dict, unseen) -> list[str]:
  """Markdown rows `| domain | unseen? | tasks | SFT | GRPO | GRPO - SFT (s.e.) |`, one per
  domain of the held-out tasks (`harness.paired_gain_by`). `domain_of` maps task id -> domain;
  `sft` and `grpo` are eval/*_rewards.json (id -> rewards)."""
  return [f"| {d} | {'unseen' if d in unseen else ''} | {n} | {base:.3f} | {new:.3f} | "
          f"{gain:+.3f} ± {se:.3f} |"
          for d, (gain, se, n, base, new) in harness.paired_gain_by(domain_of, grpo, sft).items()]


def _mean(records, key):
  vals = [r[key] for r in records if key in r and r[key] is not None]
  return sum(vals) / len(vals) if vals else float("nan")


def main(argv):
  del argv
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  run_dir = os.path.join(root, "sft_grpo")

  # One workdir: launch.train evaluates the initial policy (eval/init.json) before SFT and the
  # SFT policy at step 0; the second invocation resumes it for the GRPO steps.
  t0 = time.time()
  train_loop.train(_config(_SFT_STEPS.value, 0), run_dir)
  sft_time = time.time() - t0
  sft_metrics = metrics_lib.read_metrics(os.path.join(run_dir, "sft"))
  t0 = time.time()
  train_loop.train(_config(_SFT_STEPS.value, _RL_STEPS.value), run_dir)
  rl_time = time.time() - t0
  rl = [r for r in metrics_lib.read_metrics(run_dir) if "rl/reward_mean" in r]
  phases = [
      ("init", _eval_file(run_dir, "init"), "eval_init", None, {}),
      ("sft", _eval_file(run_dir, "step_000000"), "eval", sft_time,
       {"tokens/s": _mean(sft_metrics, "perf/sft_tokens_per_s"),
        "final loss": sft_metrics[-1].get("sft/loss") if sft_metrics else float("nan")}),
      ("grpo", _eval_file(run_dir, f"step_{_RL_STEPS.value:06d}"), "eval", rl_time,
       {"sampled tokens/s": _mean(rl, "perf/sampled_tokens_per_s"),
        "learner tokens/s": _mean(rl, "perf/learner_tokens_per_s"),
        "train rubric reward first/last step": (
            rl[0].get("rl/rubric_reward_mean", rl[0]["rl/reward_mean"]),
            rl[-1].get("rl/rubric_reward_mean", rl[-1]["rl/reward_mean"])) if rl else None}),
  ]
  holdout = f" --holdout_domains={_HOLDOUT.value}" if _HOLDOUT.value else ""
  lines = [
      "## e2e_tiny: GRPO vs SFT on held-out offline worlds",
      "",
      f"Command: `python -m benchmarks.e2e_tiny --workdir={root} --sft_steps={_SFT_STEPS.value} "
      f"--rl_steps={_RL_STEPS.value} --eval_tasks={_EVAL_TASKS.value} --eval_k={_EVAL_K.value}"
      + holdout + "".join(f" --set={s}" for s in _OVERRIDES.value) + "`"
      + f" (RECIPE: {', '.join(RECIPE)})",
      f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU.",
      "",
      "| phase | held-out reward (± s.e.) | rubric alone | answered | pass rate | "
      "tool-call subgoals met | asks met | episodes | wall time | throughput |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, ev, p, secs, extra in phases:
    met = lambda kind: ev.get(f"{p}/met/{kind}", float("nan"))  # pylint: disable=cell-var-from-loop
    lines.append(
        f"| {name} | {ev[f'{p}/reward_mean']:.3f} ± {ev[f'{p}/reward_stderr']:.3f} | "
        f"{ev.get(f'{p}/rubric_reward_mean', ev[f'{p}/reward_mean']):.3f} | "
        f"{ev.get(f'{p}/status_answered', 0.0):.2f} | {ev[f'{p}/pass_rate']:.3f} | "
        f"{met('subgoals.tool_called'):.3f} | "
        f"{met('interactions.asked_user_for'):.3f} | {int(ev[f'{p}/episodes'])} | "
        + (f"{secs / 60:.1f} min" if secs is not None else "") + " | "
        + "; ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                    for k, v in extra.items()) + " |")
  final = phases[-1][1]
  lines.append("")
  for key, label in (("gain_vs_sft", "GRPO - SFT"), ("gain_vs_init", "GRPO - init"),
                     ("gain_vs_sft_unseen", "GRPO - SFT on the held-out domains")):
    if f"eval/{key}" in final:
      gain, se = final[f"eval/{key}"], final[f"eval/{key}_se"]
      lines.append(f"- {label}, paired by task: {gain:+.3f} ± {se:.3f} "
                   f"({gain / se if se else float('nan'):+.1f} s.e.)")
  for label, gain, se in train_eval.item_gains(final):
    lines.append(f"- GRPO - SFT, {label}, paired by task: {gain:+.3f} ± {se:.3f} "
                 f"({gain / se if se else float('nan'):+.1f} s.e.)")
  _, eval_tasks = builders.task_splits(_config(_SFT_STEPS.value, 0))
  lines += ["", "Per domain (held-out tasks, paired by task):", "",
            "| domain | | tasks | SFT | GRPO | GRPO - SFT |", "|---|---|---|---|---|---|"]
  lines += domain_gains({t.id: t.domain for t in eval_tasks},
                        _eval_file(run_dir, "step_000000_rewards"),
                        _eval_file(run_dir, f"step_{_RL_STEPS.value:06d}_rewards"),
                        set(builders.holdout_domain_names(_HOLDOUT.value)))
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(root, "result.md"), "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
