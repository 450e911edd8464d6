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


def test_train_writes_every_artifact_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  _train(wd, 2)
  for rel in ("config.json", "metrics.jsonl", "rollouts/step_000001.jsonl",
              "rollouts/step_000002.jsonl", "checkpoints/rl/2", "checkpoints/sft/2",
              "plots/curves.png", "tensorboard", "eval/step_000000.json", "eval/step_000002.json",
              "sft/metrics.jsonl"):
    assert os.path.exists(os.path.join(wd, rel)), rel
  rows = _rl_rows(wd)
  assert sorted(rows) == [1, 2]
  for key in ("rl/reward_mean", "rl/rubric_reward_mean", "rl/frac_groups_dropped", "rollout/turns_mean",
              "rollout/response_tokens_mean", "perf/step_s"):
    assert key in rows[1], key
  with open(os.path.join(wd, "eval", "step_000002_rewards.json")) as f:
    eval_rewards = json.load(f)
  with open(os.path.join(wd, "eval", "step_000002.json")) as f:
    eval_metrics = json.load(f)
  assert len(eval_rewards) == 2 and all(len(v) == 1 for v in eval_rewards.values())
  assert abs(sum(v[0] for v in eval_rewards.values()) / 2 - eval_metrics["eval/reward_mean"]) < 1e-9
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


def test_turn_credit_trains_on_per_turn_advantages(tmp_path):
  wd = str(tmp_path / "turn")
  _train(wd, 1, "--config.rl.credit=turn", "--config.rl.kl_coef=0.0", "--config.eval.num_tasks=1")
  assert "learner/loss" in _rl_rows(wd)[1]
  with open(os.path.join(wd, "rollouts", "step_000001.jsonl")) as f:
    episodes = [json.loads(line) for line in f]
  for ep in episodes:
    assert len(ep["turn_advantages"]) == ep["num_turns"] >= 1
    assert ep["advantage"] == pytest.approx(sum(ep["turn_advantages"]) / ep["num_turns"])


@pytest.mark.slow
def test_killed_mid_step_rerun_continues_the_same_curve(tmp_path):
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  _train(ref, 3)
  proc = subprocess.Popen(_cmd(killed, 3), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env())
  marker = os.path.join(killed, "checkpoints", "rl", "2", "commit_success.txt")
  deadline = time.time() + 600
  while not os.path.exists(marker) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
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
