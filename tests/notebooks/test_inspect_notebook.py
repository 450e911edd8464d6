"""Executes notebooks/inspect_rollouts.ipynb headless against a fabricated tiny workdir."""

import json
import pathlib
import sys

import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "inspect_rollouts.ipynb"
KERNEL = "synthagent-test"


def _verdicts(cancel_met, ask_met):
  return [{"section": "subgoals", "id": "cancel_order", "text": "Cancels order 42",
           "met": cancel_met, "score": float(cancel_met), "source": "check"},
          {"section": "interactions", "id": "ask_order_id", "text": "Asks which order",
           "met": ask_met, "score": float(ask_met), "source": "judge"}]


def _episode(step, task_id, sample_index, reward, cancel_met, ask_met, answer):
  messages = [
      {"role": "system", "content": "You are a retail support agent."},
      {"role": "user", "content": "Please cancel my order."},
      {"role": "assistant", "content": "<think>I need the id.</think>Which order number?"},
      {"role": "user", "content": "It is 42."},
      {"role": "assistant", "content": "",
       "tool_calls": [{"type": "function", "function": {"name": "cancel_order",
                                                        "arguments": {"order_id": "42"}}}]},
      {"role": "tool", "name": "cancel_order", "content": '{"status": "cancelled"}'},
      {"role": "assistant", "content": f"<answer>{answer}</answer>"},
  ]
  # Written by hand in the docs/SPECS.md rollout-log format, independent of our writer.
  return {"step": step, "task_id": task_id, "sample_index": sample_index, "domain": "retail",
          "messages": messages, "status": "answered", "num_turns": 3, "num_tool_calls": 1,
          "response_tokens": 30 + sample_index, "reward": reward, "advantage": reward - 0.5,
          "verdicts": _verdicts(cancel_met, ask_met)}


def fabricate_workdir(workdir: pathlib.Path) -> None:
  (workdir / "rollouts").mkdir(parents=True)
  with open(workdir / "metrics.jsonl", "w") as f:
    for step in (1, 2):
      f.write(json.dumps({"step": step, "time": 1.0e9 + step, "rl/reward_mean": 0.25 * step,
                          "learner/loss": 1.0 / step, "learner/approx_kl": 0.01,
                          "learner/clip_frac": 0.1, "rollout/response_tokens_mean": 31.5,
                          "rollout/turns_mean": 3.0}) + "\n")
  episodes = {
      1: [_episode(1, "task_a", 0, 0.0, False, False, "cannot help"),
          _episode(1, "task_a", 1, 0.5, True, False, "done")],
      2: [_episode(2, "task_a", 0, 1.0, True, True, "BEST-EPISODE order 42 cancelled"),
          _episode(2, "task_a", 1, 0.0, False, False, "WORST-EPISODE no idea"),
          _episode(2, "task_b", 0, 0.5, True, False, "middle")],
  }
  for step, eps in episodes.items():
    with open(workdir / "rollouts" / f"step_{step:06d}.jsonl", "w") as f:
      for ep in eps:
        f.write(json.dumps(ep) + "\n")


@pytest.fixture
def kernel(tmp_path, monkeypatch):
  """A kernelspec running this interpreter, with the repo importable, pointed at the workdir."""
  workdir = tmp_path / "run"
  fabricate_workdir(workdir)
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "synthagent test", "language": "python",
      "env": {"PYTHONPATH": str(ROOT), "SYNTHAGENT_WORKDIR": str(workdir), "MPLBACKEND": "",
              "JAX_PLATFORMS": "cpu"},
  }))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  return tmp_path


def _outputs(cell):
  html, text, images = [], [], 0
  for out in cell.get("outputs", []):
    data = out.get("data", {})
    html.append(data.get("text/html", ""))
    text.append(out.get("text", "") + data.get("text/plain", ""))
    images += "image/png" in data
  return "".join(html), "".join(text), images


def test_notebook_runs_and_renders(kernel):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=180,
                                   resources={"metadata": {"path": str(kernel)}})
  client.execute()  # Raises CellExecutionError on any failing cell.

  code_cells = [c for c in nb.cells if c.cell_type == "code"]
  for cell in code_cells:
    for out in cell.get("outputs", []):
      assert out["output_type"] != "error", out
      assert out.get("name") != "stderr" or "Error" not in out.get("text", ""), out["text"]
  html = "".join(_outputs(c)[0] for c in code_cells)
  text = "".join(_outputs(c)[1] for c in code_cells)
  images = sum(_outputs(c)[2] for c in code_cells)

  assert "inspecting step 2" in text
  assert images >= 2, "curves and reward distribution figures must render as PNG"
  # Roles visibly distinct, tool calls shown, think folded.
  for role in ("system", "user", "assistant", "tool"):
    assert f"sa-msg sa-{role}" in html
  assert "TOOL · cancel_order" in html and "cancel_order</b>(" in html
  assert 'class="sa-think"' in html
  # Rubric verdicts per item, and the per-item pass-rate table.
  assert "✓ met" in html and "✗ not met" in html
  assert "cancel_order" in html and "ask_order_id" in html and "Asks which order" in html
  # Best before worst; the best-episodes cell shows the best episode first.
  best_html = next(_outputs(c)[0] for c in code_cells if "best_and_worst" in c.source)
  assert best_html.index("BEST-EPISODE") < best_html.index("middle")
  worst_html = next(_outputs(c)[0] for c in code_cells if c.source.startswith("for rec in worst"))
  assert "WORST-EPISODE" in worst_html and "BEST-EPISODE" not in worst_html
  # The step table covers both steps.
  summary_html = next(_outputs(c)[0] for c in code_cells if "step_summary" in c.source)
  assert summary_html.count("<tr>") == 3


def test_notebook_is_committed_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None
