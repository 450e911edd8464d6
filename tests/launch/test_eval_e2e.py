"""A real (random-weight) policy end to end: a tiny Qwen2 checkpoint written by transformers with
the shipped tokenizer's vocabulary runs `python -m launch.eval` through the in-process JAX sampler
and through `python -m launch.serve` + the SGLang engine. Scores are whatever they are; nothing
crashes, every episode is accounted for, and context_full is reported as such.

BFCL and tau2 prompts are far longer than the toy's context, so their episodes end context_full,
which the table must say.
"""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "data", "tokenizer")
VOCAB = 4096  # data/tokenizer's size
# (suite, its flags): small slices; a 256-position toy cannot hold long prompts (context_full).
SUITES = [
    ("math", ["--dataset=aime24", "--limit=3"]),
    ("bfcl_multi_turn", ["--category=base", "--limit=2"]),
    ("tau2_airline", ["--limit=2", "--user=scripted:I want to change my flight."]),
]
SHORT = ["--config=configs/tiny.py:smoke"]  # its rollout section: 2 turns of 8 new tokens


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return env


def _eval(out, policy, suite, flags):
  proc = subprocess.run([sys.executable, "-m", "launch.eval", f"--suite={suite}",
                         f"--policy={policy}", f"--out={out}", f"--tokenizer={TOKENIZER}",
                         *SHORT, *flags], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert results["episodes"] == sum(results["statuses"].values()) > 0
  # Rates lie in [0, 1]; counts (BFCL's episodes/<category>, tau2's tasks / trials) are >= 0.
  assert all(v >= 0.0 for v in results["metrics"].values()), results["metrics"]
  rates = {k: v for k, v in results["metrics"].items() if k in (
      "accuracy", "overall", "pass^1", "avg_reward", "floor") or k.startswith("accuracy/")}
  assert rates and all(0.0 <= v <= 1.0 for v in rates.values()), results["metrics"]
  for status, count in results["statuses"].items():
    label = "status: context_full (prompt longer than the policy's context)" if (
        status == "context_full") else f"status: {status}"
    assert f"| {label} | {count}/{results['episodes']} |" in proc.stdout
  return results


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  from tests import toys
  return toys.write_hf_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2", vocab_size=VOCAB)


@pytest.mark.parametrize("suite,flags", SUITES)
def test_in_process_checkpoint(tmp_path, checkpoint, suite, flags):
  results = _eval(tmp_path / "out", f"checkpoint:{checkpoint}", suite, flags)
  assert results["policy"] == f"checkpoint:{checkpoint}"


def test_context_full_with_the_toy_context(tmp_path, checkpoint):
  """The toy's 256 positions cap the loop's budget: a longer prompt ends as context_full."""
  data = tmp_path / "long.jsonl"
  data.write_text(json.dumps({"question": "Compute " + " + ".join(["1"] * 200), "answer": "200"})
                  + "\n")
  results = _eval(tmp_path / "out", checkpoint, "math", [f"--dataset={data}"])
  assert results["statuses"] == {"context_full": 1} and results["metrics"]["accuracy"] == 0.0


@pytest.fixture(scope="module")
def server(checkpoint):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen([sys.executable, "-m", "launch.serve", f"--checkpoint={checkpoint}",
                           f"--tokenizer={TOKENIZER}", f"--port={port}"], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 240
    while True:
      try:
        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
          break
      except httpx.TransportError:
        pass
      if proc.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"launch.serve did not come up: {proc.stderr.read()[-2000:]}")
      time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


@pytest.mark.parametrize("suite,flags", SUITES)
def test_served_checkpoint_through_sglang_engine(tmp_path, server, suite, flags):
  results = _eval(tmp_path / "out", f"sglang:{server}", suite, flags)
  assert results["policy"] == f"sglang:{server}"


def test_served_checkpoint_through_openai_adapter(tmp_path, server):
  """The same server's /v1/chat/completions behind the OpenAI-compatible policy adapter. The
  server reports its 256-token context, so an episode that outgrows it ends context_full instead
  of a refused request."""
  results = _eval(tmp_path / "out", f"openai:{server}/v1:synthagent_jax", "math",
                  ["--dataset=aime24", "--limit=2"])
  assert results["statuses"].keys() <= {"user_stopped", "answered", "max_steps", "context_full"}
