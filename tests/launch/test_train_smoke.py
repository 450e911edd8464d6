"""The real `python -m launch.train` main, in a tiny mode, for a few steps: artifacts and resume.

The kill test SIGKILLs a run in the middle of a step and checks the rerun continues the exact
curve of an uninterrupted run (rollout seeds are per step, the task iterator is checkpointed).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "--config=configs/tiny.py:smoke",  # 2 tasks x 2 rollouts, 2 SFT steps, 2 eval tasks
    # KL to the post-SFT policy (its reference must survive a resume); every group is trained
    # even when its rewards tie, so the learner runs on every step of this tiny model.
    "--config.rl.kl_coef=0.05", "--config.rl.drop_zero_variance=False",
]


def _cmd(workdir, steps, *extra):
  return [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *TINY,
          f"--config.rl.num_steps={steps}", *extra]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run
  return env


def _train(workdir, steps, *extra):
  proc = subprocess.run(_cmd(workdir, steps, *extra), cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _rl_rows(workdir):
  return {r["step"]: r for r in _metrics(workdir) if "rl/reward_mean" in r}


def _logged_rl_steps(workdir):
  """The RL steps a running job has logged so far (a line still being written is skipped)."""
  steps = set()
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if "rl/reward_mean" in row:
          steps.add(row["step"])
  except FileNotFoundError:
    pass
  return steps


def test_train_writes_every_artifact_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  proc = _train(wd, 2)
  for rel in ("eval/init.json", "eval/init_rewards.json", "config.json", "metrics.jsonl",
              "rollouts/step_000001.jsonl",
              "rollouts/step_000002.jsonl", "checkpoints/rl/2", "checkpoints/sft/2",
              "plots/curves.png", "tensorboard", "eval/step_000000.json", "eval/step_000002.json",
              "sft/metrics.jsonl"):
    assert os.path.exists(os.path.join(wd, rel)), rel
  rows = _rl_rows(wd)
  assert sorted(rows) == [1, 2]
  for key in ("rl/reward_mean", "rl/rubric_reward_mean", "rl/frac_groups_dropped", "rollout/turns_mean",
              "rollout/met/subgoals.tool_called",
              "rollout/response_tokens_mean", "perf/step_s"):
    assert key in rows[1], key
  with open(os.path.join(wd, "eval", "step_000002_rewards.json")) as f:
    eval_rewards = json.load(f)
  with open(os.path.join(wd, "eval", "step_000002.json")) as f:
    eval_metrics = json.load(f)
  assert len(eval_rewards) == 2 and all(len(v) == 1 for v in eval_rewards.values())
  assert abs(sum(v[0] for v in eval_rewards.values()) / 2 - eval_metrics["eval/reward_mean"]) < 1e-9
  # Before SFT, after SFT, after GRPO: the paired gains recomputed from the per-task files.
  phases = {}
  for name in ("init", "step_000000", "step_000002"):
    with open(os.path.join(wd, "eval", f"{name}_rewards.json")) as f:
      phases[name] = json.load(f)
  diffs = [phases["step_000002"][t][0] - phases["step_000000"][t][0] for t in eval_rewards]
  assert eval_metrics["eval/gain_vs_sft"] == pytest.approx(sum(diffs) / 2)
  assert "eval/gain_vs_sft_se" in eval_metrics and "eval/gain_vs_init" in eval_metrics
  assert "eval/met/subgoals.tool_called" in eval_metrics
  # The tool-call met-rate paired by task against step 0, recomputed from the per-task items.
  items = {}
  for name in ("step_000000", "step_000002"):
    with open(os.path.join(wd, "eval", f"{name}_items.json")) as f:
      items[name] = json.load(f)
  rate = lambda per_task, t: np.mean(per_task[t]["subgoals.tool_called"])
  item_diffs = [rate(items["step_000002"], t) - rate(items["step_000000"], t)
                for t in items["step_000000"] if "subgoals.tool_called" in items["step_000000"][t]]
  assert item_diffs and eval_metrics["eval/gain_vs_sft/met/subgoals.tool_called"] == pytest.approx(
      np.mean(item_diffs))
  assert "GRPO - SFT, tool-call subgoals met" in proc.stdout
  init_rows = [r for r in _metrics(wd) if "eval_init/reward_mean" in r]
  assert [r["step"] for r in init_rows] == [0]
  for label in ("before SFT", "after SFT", "after GRPO", "GRPO - SFT"):
    assert label in proc.stdout, (label, proc.stdout[-2000:])
  with open(os.path.join(wd, "rollouts", "step_000001.jsonl")) as f:
    episodes = [json.loads(line) for line in f]
  assert len(episodes) == 4  # 2 tasks x 2 generations
  assert {"messages", "verdicts", "reward", "advantage", "status"} <= set(episodes[0])

  proc = _train(wd, 3)  # same command, more steps: resumes
  assert "Resuming from checkpoint step 2" in proc.stdout + proc.stderr
  assert sorted(_rl_rows(wd)) == [1, 2, 3]
  assert "sft:" not in proc.stderr  # the warm start is not redone
  assert os.path.exists(os.path.join(wd, "checkpoints", "ref", "0"))
  rows = _rl_rows(wd)
  assert all(rows[s]["learner/kl_ref"] >= 0 for s in (1, 2, 3))  # step 3 used the restored ref


def test_turn_credit_and_dynamic_sampling(tmp_path):
  wd = str(tmp_path / "turn")
  _train(wd, 1, "--config.rl.credit=turn", "--config.rl.kl_coef=0.0", "--config.eval.num_tasks=1",
         "--config.rl.drop_zero_variance=True", "--config.rl.dynamic_sampling=True",
         "--config.rl.dynamic_max_rounds=2")
  row = _rl_rows(wd)[1]
  rounds = row["rl/dynamic_rounds"]
  assert rounds in (1.0, 2.0) and row["rl/dynamic_groups_sampled"] == 2 * rounds
  with open(os.path.join(wd, "rollouts", "step_000001.jsonl")) as f:
    episodes = [json.loads(line) for line in f]
  assert len(episodes) == rounds * 2 * 2  # every round's 2 tasks x 2 generations are logged
  for ep in episodes:
    assert len(ep["turn_advantages"]) == ep["num_turns"] >= 1
    assert ep["advantage"] == pytest.approx(sum(ep["turn_advantages"]) / ep["num_turns"])


@pytest.mark.slow
def test_killed_mid_step_rerun_continues_the_same_curve(tmp_path):
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  _train(ref, 3)
  proc = subprocess.Popen(_cmd(killed, 3), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env())
  # Kill once step 2 is logged: its checkpoint is then being written (asynchronously) and step 3
  # is sampling, >1 s from its own log line. (Waiting for checkpoint 2's commit marker raced:
  # on a busy CPU the marker could land after step 3 was logged.) The rerun resumes from the
  # last committed checkpoint, 2 or 1, and drops the logged lines after it.
  deadline = time.time() + 600
  while 2 not in _logged_rl_steps(killed) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  assert proc.poll() is None, "run finished before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)  # inside step 3
  proc.wait()
  assert 3 not in _rl_rows(killed)
  _train(killed, 3)
  a, b = _rl_rows(ref), _rl_rows(killed)
  assert sorted(a) == sorted(b) == [1, 2, 3]
  for step in (1, 2, 3):
    for key in ("rl/reward_mean", "rollout/length_mean", "rollout/response_tokens_mean"):
      assert a[step][key] == b[step][key], (step, key)
    if "learner/loss" in a[step]:
      assert a[step]["learner/loss"] == b[step]["learner/loss"], step
      assert a[step]["learner/kl_ref"] == b[step]["learner/kl_ref"], step


def test_slot_aliases_reach_the_rollouts(tmp_path):
  """data.alias_slots=1: every drawn task whose id slot a called tool takes is renamed, so the
  rubric items GRPO scores ask for alias names, never the task file's own."""
  from synthagent_jax.envs import task as task_lib  # pylint: disable=g-import-not-at-top
  from synthagent_jax.synthesis import aliases  # pylint: disable=g-import-not-at-top
  tasks, _ = task_lib.load_tasks(os.path.join(ROOT, "data/tasks/offline_v1_train.jsonl"))
  train = str(tmp_path / "train.jsonl")
  task_lib.save_tasks([t for t in tasks if aliases.aliasable_slots(t)][:8], train)
  wd = str(tmp_path / "alias")
  _train(wd, 1, "--config.data.alias_slots=1.0", f"--config.data.train_file={train}",
         "--config.eval.num_tasks=1", "--config.eval.before_sft=False")
  with open(os.path.join(wd, "rollouts", "step_000001.jsonl")) as f:
    episodes = [json.loads(line) for line in f]
  asks = [v["id"] for ep in episodes for v in ep["verdicts"] if v["id"].startswith("ask_")]
  assert asks and all(a[len("ask_"):-len("_id")] in aliases.ALIAS_WORDS for a in asks), asks
