"""Tests for the training-curve plot (utils/plots.py)."""

import math
import pathlib
import subprocess
import sys

import pytest

from synthagent_jax.utils import metrics, plots


def write_run(workdir, num_steps=12, with_nan=False):
  w = metrics.MetricWriter(workdir, process_index=0, tensorboard=False)
  for s in range(1, num_steps + 1):
    w.write(s, {
        "rl/reward_mean": 0.2 + 0.05 * s,
        "learner/loss": float("nan") if with_nan and s == 3 else 1.0 / s,
        "learner/approx_kl": 0.001 * s,
        "learner/clip_frac": 0.01 * (s % 4),
        "rollout/response_tokens_mean": 40.0 + s,
        "rollout/turns_mean": 2.0 + 0.1 * s,
        "rollout/met/subgoals.tool_called": 0.02 * s,
    })
    if s % 4 == 0:
      w.write(s, {"eval/reward_mean": 0.3 + 0.04 * s})


def test_plot_curves_writes_png_with_every_panel_filled(tmp_path):
  write_run(tmp_path)
  out = plots.plot_curves(tmp_path)
  assert out == tmp_path / "plots" / "curves.png"
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  fig = plots.curves_figure(metrics.read_metrics(tmp_path))
  axes = [ax for ax in fig.axes if ax.axison]
  assert [ax.get_title() for ax in axes] == [p.title for p in plots.PANELS] + [plots.PHASES_TITLE]
  axes = axes[:-1]  # the phase panel draws bars (below), the others lines
  assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
      "rl/reward_mean", "eval/reward_mean"]
  for ax in axes:
    assert ax.lines, f"panel {ax.get_title()} has no line"
  # The eval line holds exactly the eval steps.
  assert list(axes[0].lines[1].get_xdata()) == [4, 8, 12]


def test_phase_panel_shows_init_sft_grpo_side_by_side(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(0, {"eval_init/reward_mean": 0.01, "eval_init/reward_stderr": 0.005})
  w.write(0, {"eval/reward_mean": 0.2, "eval/reward_stderr": 0.02})
  w.write(1, {"rl/reward_mean": 0.3})
  w.write(5, {"eval/reward_mean": 0.35, "eval/reward_stderr": 0.03, "eval/gain_vs_sft": 0.15,
              "eval/gain_vs_sft_se": 0.04})
  assert plots.phase_values(metrics.read_metrics(tmp_path)) == [
      ("before SFT", 0.01, 0.005), ("after SFT", 0.2, 0.02), ("after GRPO", 0.35, 0.03)]
  fig = plots.curves_figure(metrics.read_metrics(tmp_path))
  ax = next(ax for ax in fig.axes if ax.get_title() == plots.PHASES_TITLE)
  assert [round(p.get_height(), 6) for p in ax.patches] == [0.01, 0.2, 0.35]
  assert [t.get_text() for t in ax.get_xticklabels()] == ["before SFT", "after SFT", "after GRPO"]
  assert "+0.150 ± 0.040" in ax.get_xlabel()


def test_missing_metrics_give_empty_panels_with_note(tmp_path):
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(1, {"rl/reward_mean": 0.5})
  out = plots.plot_curves(tmp_path)
  assert out.exists()
  fig = plots.curves_figure(metrics.read_metrics(tmp_path))
  by_title = {ax.get_title(): ax for ax in fig.axes}
  assert by_title["Reward"].lines
  clip = by_title["Clip fraction"]
  assert not clip.lines
  assert any("no data" in t.get_text() and "learner/clip_frac" in t.get_text() for t in clip.texts)


def test_no_metrics_file_at_all(tmp_path):
  out = plots.plot_curves(tmp_path / "fresh", out_path=tmp_path / "x.png")
  assert out.exists() and out.stat().st_size > 0


def test_nan_values_are_skipped_and_counted(tmp_path):
  write_run(tmp_path, num_steps=5, with_nan=True)
  fig = plots.curves_figure(metrics.read_metrics(tmp_path))
  loss_ax = next(ax for ax in fig.axes if ax.get_title() == "Loss")
  ys = list(loss_ax.lines[0].get_ydata())
  assert len(ys) == 4 and all(math.isfinite(y) for y in ys)
  assert "1 non-finite" in loss_ax.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize("n", [1, 3, 7])
def test_any_number_of_panels(n):
  panels = tuple(plots.Panel(f"p{i}", (f"x/k{i}",)) for i in range(n))
  fig = plots.curves_figure([{"step": 1, "x/k0": 1.0}], panels=panels)
  assert sum(1 for ax in fig.axes if ax.axison) == n


def test_plotting_leaves_pyplot_and_backend_alone(tmp_path):
  # A notebook keeps its inline backend and a long run accumulates no pyplot figures.
  code = ("import sys, matplotlib; before = dict.__getitem__(matplotlib.rcParams, 'backend'); "
          "from synthagent_jax.utils import plots; plots.plot_curves(sys.argv[1]); "
          "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
          "assert dict.__getitem__(matplotlib.rcParams, 'backend') == before, 'backend changed'")
  res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).resolve().parents[2], timeout=60)
  assert res.returncode == 0, res.stderr
  assert (tmp_path / "plots" / "curves.png").exists()


def test_plot_curves_redraws_only_when_metrics_change(tmp_path, monkeypatch):
  drawn = []
  real = plots.curves_figure
  monkeypatch.setattr(plots, "curves_figure", lambda *a, **k: drawn.append(1) or real(*a, **k))
  write_run(tmp_path, num_steps=3)
  out = plots.plot_curves(tmp_path)
  first = out.read_bytes()
  assert plots.plot_curves(tmp_path) == out and len(drawn) == 1  # nothing changed: no redraw
  assert out.read_bytes() == first
  out.unlink()
  plots.plot_curves(tmp_path)  # the PNG went away: drawn again
  assert len(drawn) == 2 and out.read_bytes() == first
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(4, {"rl/reward_mean": 0.9})
  plots.plot_curves(tmp_path)  # new metrics, no throttle: redrawn
  assert len(drawn) == 3 and out.read_bytes() != first


def test_plot_curves_throttle_and_force_give_the_same_file(tmp_path):
  write_run(tmp_path, num_steps=3)
  out = plots.plot_curves(tmp_path, every_s=3600.0)
  stale = out.read_bytes()
  w = metrics.MetricWriter(tmp_path, process_index=0, tensorboard=False)
  w.write(4, {"rl/reward_mean": 0.9})
  plots.plot_curves(tmp_path, every_s=3600.0)  # changed, but drawn less than an hour ago
  assert out.read_bytes() == stale
  plots.plot_curves(tmp_path, every_s=3600.0, force=True)
  fresh = plots.plot_curves(tmp_path, out_path=tmp_path / "plots" / "fresh.png")
  assert out.read_bytes() == fresh.read_bytes() != stale
