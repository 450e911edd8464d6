"""The qwen_3b recipe's wiring end to end on the CPU, at tiny size (issue 15).

`python -m launch.train` for 2 GRPO steps with the recipe's components swapped in: the policy
served by a `python -m launch.serve` process (engine.kind=sglang: /generate, weights synced each
step through /update_weights_from_disk), and a second `launch.serve` process as the
OpenAI-compatible LLM behind the user simulator (env.user=llm), the tool simulator
(env.tool_llm=True) and the rubric judge (reward.judge=http). The run is SIGKILLed after its first
checkpoint and rerun: it resumes and finishes. Every server listens on 127.0.0.1 only.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import transformers

from configs import tiny
from launch import builders
from synthagent_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _write_checkpoint(path: str) -> None:
  config = tiny.get_config("smoke")
  tok = transformers.AutoTokenizer.from_pretrained(os.path.join(ROOT, "data", "tokenizer"))
  models.save_pretrained(models.init_model(builders.model_config(config, tok), seed=0), path)


def _get(url: str, timeout: float = 5.0) -> dict:
  with urllib.request.urlopen(url, timeout=timeout) as r:
    return json.loads(r.read())


def _wait_healthy(url: str, proc, timeout_s: float = 300.0) -> None:
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    assert proc.poll() is None, f"server {url} exited:\n{proc.stdout.read()[-3000:]}"
    try:
      with urllib.request.urlopen(url + "/health", timeout=2) as r:
        if r.status == 200:
          return
    except OSError:
      time.sleep(1.0)
  raise TimeoutError(f"{url} not healthy after {timeout_s} s")


def _serve(checkpoint: str, port: int, log_path: str):
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen(
      [sys.executable, "-m", "launch.serve", f"--checkpoint={checkpoint}",
       "--tokenizer=data/tokenizer", "--host=127.0.0.1", f"--port={port}",
       "--batch_wait_ms=20"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _train_cmd(workdir, ckpt, policy_url, llm_url, weights_dir):
  llm = [f"--config.{s}.base_url={llm_url}/v1" for s in ("env.llm", "reward.judge_llm")]
  llm += [f"--config.{s}.model=synthagent_jax" for s in ("env.llm", "reward.judge_llm")]
  return [sys.executable, "-m", "launch.train", "--config=configs/tiny.py:smoke",
          f"--workdir={workdir}", "--config.model.from_scratch=False",
          f"--config.model.checkpoint={ckpt}", "--config.engine.kind=sglang",
          f"--config.engine.urls=('{policy_url}',)", f"--config.engine.weights_dir={weights_dir}",
          "--config.env.user=llm", "--config.env.tool_llm=True", "--config.reward.judge=http",
          *llm, "--config.sft.num_steps=0", "--config.eval.num_tasks=1",
          "--config.rl.drop_zero_variance=False"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", OPENAI_API_KEY="EMPTY")
  env.pop("XLA_FLAGS", None)
  return env


@pytest.mark.slow
def test_recipe_components_train_two_steps_and_resume(tmp_path):
  ckpt, workdir = str(tmp_path / "ckpt"), str(tmp_path / "run")
  _write_checkpoint(ckpt)
  ports = _free_port(), _free_port()
  policy_url, llm_url = (f"http://127.0.0.1:{p}" for p in ports)
  servers = [_serve(ckpt, p, str(tmp_path / f"serve_{p}.log")) for p in ports]
  try:
    for url, proc in zip((policy_url, llm_url), servers):
      _wait_healthy(url, proc)
    cmd = _train_cmd(workdir, ckpt, policy_url, llm_url, str(tmp_path / "weights"))
    with open(tmp_path / "train_1.log", "w") as log:
      run = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
      marker = os.path.join(workdir, "checkpoints", "rl", "1", "commit_success.txt")
      deadline = time.time() + 900
      while not os.path.exists(marker) and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
      killed = run.poll() is None
      if killed:
        run.send_signal(signal.SIGKILL)
      run.wait()
    first = (tmp_path / "train_1.log").read_text()
    assert killed or run.returncode == 0, first[-4000:]
    assert os.path.exists(marker), first[-4000:]
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=900)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert "Resuming from checkpoint step" in out
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = {r["step"]: r for r in map(json.loads, f) if "rl/reward_mean" in r}
    assert sorted(rows) == [1, 2]
    for r in rows.values():
      assert "learner/loss" in r and "rollout/judge_failures" in r
      assert r["perf/train_step_compiles"] in (1, 2, 3, 4)  # buckets (128, 256, 512, 768)
      assert r["perf/sampler_compiles"] == 0  # the policy ran in the server, not in-process
    # The policy server serves the weights of the last step (synced over HTTP).
    info = _get(policy_url + "/get_model_info")
    assert info["model_path"].endswith("step_000002"), info
    with open(os.path.join(workdir, "rollouts", "step_000002.jsonl")) as f:
      episodes = [json.loads(line) for line in f]
    assert len(episodes) == 4 and all(ep["messages"] for ep in episodes)
  finally:
    for proc in servers:
      proc.send_signal(signal.SIGTERM)
    for proc in servers:
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("path, command", [
    ("/nonexistent/teacher_train.jsonl", "python -m launch.synthesize "
     "--config=configs/synth_teacher.py --out=/nonexistent/teacher.jsonl "
     "--config.teacher.base_url=http://TEACHER_HOST/v1 --config.teacher.model=MODEL"),
    ("/nonexistent/offline_train.jsonl", "python -m launch.synthesize "
     "--config=configs/synth_offline.py --out=/nonexistent/offline.jsonl"),
])
def test_missing_task_file_names_the_command_that_makes_it(path, command):
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                         f"--config.data.train_file={path}", "--workdir=/nonexistent/run"],
                        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert lines[0].startswith(f"error: data.train_file='{path}' does not exist"), lines[0]
  assert command in lines[0], lines[0]
