"""Learning benchmark: does GRPO improve a tiny agent beyond its SFT warm start?

    python -m benchmarks.e2e_tiny --workdir=runs/e2e_tiny [--sft_steps=N --rl_steps=M ...]

The defaults are the recorded recipe (docs/benchmarks.md, e2e_tiny): 100 SFT steps, 30 GRPO steps
of 8 tasks x 4 samples at lr 2e-4 (RECIPE, applied on top of configs/tiny.py before any --set),
128 held-out tasks x 2 samples per phase; about 22 minutes on a 2-core CPU.

On held-out offline-world tasks (data/tasks/offline_eval.jsonl, never trained on), the mean rubric
reward with its standard error over `--eval_tasks` x `--eval_k` sampled episodes:
  1. at initialisation (random weights),
  2. after SFT on reference trajectories (stopped early, so its reward stays well below 1),
  3. after GRPO from that SFT policy.
Each phase is the real `launch.train` run on `configs/tiny.py` (phases 2 and 3 are one workdir:
the GRPO invocation resumes from the SFT checkpoint). Reports wall time and tokens/s per phase and
the share of rollout time spent outside generation, then prints a markdown section for
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import time

from absl import app
from absl import flags

from configs import tiny
from launch import train_loop
from synthagent_jax.utils import metrics as metrics_lib

_WORKDIR = flags.DEFINE_string("workdir", "runs/e2e_tiny", "Root of the benchmark's runs.")
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 100, "SFT warm-start steps.")
_RL_STEPS = flags.DEFINE_integer("rl_steps", 30, "GRPO steps.")
_EVAL_TASKS = flags.DEFINE_integer("eval_tasks", 128, "Held-out tasks evaluated per phase.")
_EVAL_K = flags.DEFINE_integer("eval_k", 2, "Sampled episodes per held-out task.")
_OVERRIDES = flags.DEFINE_multi_string(
    "set", [], "Extra config overrides key=value (python literals), applied after RECIPE.")

# The benchmark's settings on top of configs/tiny.py (which keeps its own, faster defaults for
# the README's first run): a larger learning rate and more tasks per GRPO step.
RECIPE = ("optim.lr=2e-4", "rl.tasks_per_step=8", "checkpoint.every_steps=10")


def _config(sft_steps: int, rl_steps: int):
  import ast  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.sft.num_steps = sft_steps
  c.rl.num_steps = rl_steps
  c.eval.num_tasks = _EVAL_TASKS.value
  c.eval.k = _EVAL_K.value
  c.eval.every_steps = 0
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


def _eval_at(workdir: str, step: int) -> dict:
  with open(os.path.join(workdir, "eval", f"step_{step:06d}.json")) as f:
    return json.load(f)


def _paired(workdir_a: str, step_a: int, workdir_b: str, step_b: int) -> tuple[float, float, int]:
  """Mean and s.e. of (b - a) over the tasks both evaluations ran, each task's k episodes averaged."""
  def load(workdir, step):
    with open(os.path.join(workdir, "eval", f"step_{step:06d}_rewards.json")) as f:
      return {k: sum(v) / len(v) for k, v in json.load(f).items()}
  a, b = load(workdir_a, step_a), load(workdir_b, step_b)
  diffs = [b[k] - a[k] for k in a if k in b]
  n = len(diffs)
  mean = sum(diffs) / n
  var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
  return mean, (var / n) ** 0.5, n


def _mean(records, key):
  vals = [r[key] for r in records if key in r and r[key] is not None]
  return sum(vals) / len(vals) if vals else float("nan")


def main(argv):
  del argv
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  rows = []

  t0 = time.time()
  init_dir = os.path.join(root, "init")
  train_loop.train(_config(0, 0), init_dir)
  init = _eval_at(init_dir, 0)
  rows.append(("init", init, time.time() - t0, {}))

  run_dir = os.path.join(root, "sft_grpo")
  t0 = time.time()
  train_loop.train(_config(_SFT_STEPS.value, 0), run_dir)
  sft_time = time.time() - t0
  sft = _eval_at(run_dir, 0)
  sft_metrics = metrics_lib.read_metrics(os.path.join(run_dir, "sft"))
  rows.append(("sft", sft, sft_time,
               {"tokens/s": _mean(sft_metrics, "perf/sft_tokens_per_s"),
                "final loss": sft_metrics[-1].get("sft/loss") if sft_metrics else float("nan")}))

  t0 = time.time()
  train_loop.train(_config(_SFT_STEPS.value, _RL_STEPS.value), run_dir)
  rl_time = time.time() - t0
  grpo = _eval_at(run_dir, _RL_STEPS.value)
  rl = [r for r in metrics_lib.read_metrics(run_dir) if "rl/reward_mean" in r]
  rows.append(("grpo", grpo, rl_time,
               {"sampled tokens/s": _mean(rl, "perf/sampled_tokens_per_s"),
                "learner tokens/s": _mean(rl, "perf/learner_tokens_per_s"),
                "rollout share outside generation": 1 - _mean(rl, "perf/generate_frac"),
                "train rubric reward first/last step": (
                    rl[0].get("rl/rubric_reward_mean", rl[0]["rl/reward_mean"]),
                    rl[-1].get("rl/rubric_reward_mean", rl[-1]["rl/reward_mean"])) if rl else None}))

  gap = grpo["eval/reward_mean"] - sft["eval/reward_mean"]
  se = (grpo["eval/reward_stderr"] ** 2 + sft["eval/reward_stderr"] ** 2) ** 0.5
  lines = [
      "## e2e_tiny: GRPO vs SFT on held-out offline worlds",
      "",
      f"Command: `python -m benchmarks.e2e_tiny --workdir={root} --sft_steps={_SFT_STEPS.value} "
      f"--rl_steps={_RL_STEPS.value} --eval_tasks={_EVAL_TASKS.value} --eval_k={_EVAL_K.value}"
      + "".join(f" --set={s}" for s in _OVERRIDES.value) + "`"
      + f" (RECIPE: {', '.join(RECIPE)})",
      f"Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU.",
      "",
      "| phase | held-out reward (± s.e.) | pass rate | episodes | wall time | throughput |",
      "|---|---|---|---|---|---|",
  ]
  for name, ev, secs, extra in rows:
    lines.append(f"| {name} | {ev['eval/reward_mean']:.3f} ± {ev['eval/reward_stderr']:.3f} | "
                 f"{ev['eval/pass_rate']:.3f} | {int(ev['eval/episodes'])} | {secs / 60:.1f} min | "
                 + "; ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                             for k, v in extra.items()) + " |")
  lines += ["", f"GRPO - SFT = {gap:+.3f} (2 s.e. of the difference = {2 * se:.3f}): "
            f"{'GRPO beats SFT by more than two standard errors' if gap > 2 * se else 'NOT significant'}."]
  p_gap, p_se, p_n = _paired(run_dir, 0, run_dir, _RL_STEPS.value)
  lines += [f"Paired over the same {p_n} held-out tasks (each task's GRPO reward minus its SFT "
            f"reward): {p_gap:+.3f} ± {p_se:.3f} s.e. ({p_gap / p_se if p_se else float('nan'):.1f} "
            "s.e.)."]
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(root, "result.md"), "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
