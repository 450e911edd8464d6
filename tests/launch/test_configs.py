"""Every config file parses, overrides reach it, a mistyped key fails, bad setups fail in one line."""

import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not p.endswith("__init__.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_parses(path):
  module = _load(path)
  if not hasattr(module, "get_config"):
    assert os.path.basename(path) == "base.py"
    return
  config = module.get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert "python -m launch." in module.__doc__, "docstring must hold the launch command"


def _run_train(*args):
  return subprocess.run([sys.executable, "-m", "launch.train", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_qwen_3b_without_checkpoint_fails_in_one_line(tmp_path):
  proc = _run_train("--config=configs/qwen_3b.py", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert "--config.model.checkpoint" in lines[0]
  assert "Traceback" not in proc.stderr


def test_mistyped_override_fails(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.lrr=1")
  assert proc.returncode != 0
  assert "lrr" in proc.stderr


def test_override_reaches_config(tmp_path):
  # A missing checkpoint directory is reported with the overridden value: the override reached it.
  proc = _run_train("--config=configs/qwen_3b.py", f"--workdir={tmp_path}",
                    "--config.model.checkpoint=/nonexistent/qwen")
  assert proc.returncode != 0
  assert "/nonexistent/qwen" in proc.stderr and "Traceback" not in proc.stderr


def test_negative_kl_coef_fails_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.kl_coef=-0.1")
  assert proc.returncode != 0
  assert "rl.kl_coef" in proc.stderr and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_unknown_credit_fails_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.rl.credit=item")
  assert proc.returncode != 0
  assert "rl.credit must be one of episode, turn, got 'item'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_greedy_rollouts_for_rl_fail_before_work(tmp_path):
  proc = _run_train("--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.rollout.temperature=0.0")
  assert proc.returncode != 0
  assert "rollout.temperature" in proc.stderr and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_learner_trains_the_rollout_temperature():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from launch import builders  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.rollout.temperature = 0.7
  assert builders.rl_learner_config(config).temperature == 0.7
  config.rollout.temperature = 0.0  # evaluation-only greedy runs still build the (unused) learner
  assert builders.rl_learner_config(config).temperature == 1.0


def test_adversarial_user_is_an_llm_user_switch():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from launch import builders  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  assert not builders.user(config).__dict__.get("adversarial")  # off by default, rule user
  config.env.adversarial_user = True
  with pytest.raises(ValueError, match="env.adversarial_user=True needs env.user='llm'"):
    builders.user(config)
  config.env.user = "llm"
  config.env.llm.base_url, config.env.llm.model = "http://127.0.0.1:1/v1", "m"
  assert builders.user(config).adversarial is True


@pytest.mark.slow  # a real launch up to the learner config (~50 s on the shared CPU)
def test_bad_minibatch_tasks_fails_in_one_line(tmp_path):
  # Caught when the learner config is built (after tasks load, before any model or checkpoint);
  # the test process's 8 fake CPU devices are left out so the 1-device mesh builds.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                         f"--workdir={tmp_path}", "--config.rl.minibatch_tasks=0"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert lines and "rl.minibatch_tasks must be an integer >= 1" in lines[-1], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
