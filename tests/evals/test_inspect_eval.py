"""notebooks/inspect_rollouts.ipynb, unchanged, on a `launch.eval` output directory (oracle run of
the math suite): it loads episodes.jsonl as step 0 and shows each episode with its verdict."""

import json
import pathlib
import sys

import pytest

from synthagent_jax import inspect as insp
from synthagent_jax.evals import math_sets, policies, runner
from synthagent_jax.evals.suite import SuiteOptions

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNEL = "synthagent-eval-test"


@pytest.fixture
def eval_dir(tmp_path):
  data = tmp_path / "set.jsonl"
  data.write_text("".join(json.dumps({"question": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n"
                          for i in range(2)))
  suite = math_sets.MathSuite(SuiteOptions(dataset=str(data)))
  out = tmp_path / "out"
  runner.run_suite(suite, policies.make_policy("oracle", suite=suite),
                   {"max_turns": 2, "max_new_tokens": 16, "max_total_tokens": 512}, str(out),
                   k=2, progress=False)
  return out


def test_inspect_reads_an_eval_dir(eval_dir):
  assert insp.list_steps(eval_dir) == [0]
  records = insp.load_rollouts(eval_dir)
  assert len(records) == 4 and records == insp.load_all_rollouts(eval_dir)[0]
  with pytest.raises(FileNotFoundError, match="only step is 0"):
    insp.load_rollouts(eval_dir, 3)


def test_notebook_on_an_eval_dir(eval_dir, tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient")
  nbformat = pytest.importorskip("nbformat")
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "synthagent eval test", "language": "python",
      "env": {"PYTHONPATH": str(ROOT), "SYNTHAGENT_WORKDIR": str(eval_dir), "MPLBACKEND": "",
              "JAX_PLATFORMS": "cpu"}}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  nb = nbformat.read(ROOT / "notebooks" / "inspect_rollouts.ipynb", as_version=4)
  nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=180,
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  html = "".join(out.get("data", {}).get("text/html", "")
                 for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", []))
  assert "sa-bench-verdict" in html and "math verdict" in html
  assert "&lt;answer&gt;1&lt;/answer&gt;" in html
