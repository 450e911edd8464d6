"""Training curves of a workdir as one PNG: `plot_curves(workdir) -> <workdir>/plots/curves.png`.

Reads `metrics.jsonl` (see utils/metrics.py). Each panel plots every key of its list that the run
logged; a panel with no data stays on the figure with a "no data" note naming the keys it looked
for, so the layout is the same for every run and a missing metric is visible, not hidden.
Non-finite values (a NaN loss) are skipped in the line and counted in the legend.

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global backend switch (a
notebook keeps its inline backend), no figure registry growing during a long run, and no display
needed on a headless server.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tempfile
import time

from matplotlib.figure import Figure

from synthagent_jax.utils import metrics as metrics_lib

PLOTS_DIR = "plots"
CURVES_FILE = "curves.png"


@dataclasses.dataclass(frozen=True)
class Panel:
  title: str
  keys: tuple[str, ...]   # metric keys drawn as lines, in legend order
  ylabel: str = ""


PANELS: tuple[Panel, ...] = (
    Panel("Reward", ("rl/reward_mean", "eval/reward_mean", "eval/pass_rate"), "mean rubric reward"),
    Panel("Loss", ("learner/loss", "sft/loss"), "loss"),
    Panel("KL (approx.)", ("learner/approx_kl", "learner/kl"), "KL"),
    Panel("Clip fraction", ("learner/clip_frac",), "fraction of tokens"),
    Panel("Response length", ("rollout/response_tokens_mean",), "tokens per episode"),
    Panel("Turns per episode", ("rollout/turns_mean", "rollout/tool_calls_mean"), "count"),
    Panel("Rubric items met", ("rollout/met/subgoals.tool_called",
                               "rollout/met/interactions.asked_user_for",
                               "eval/met/subgoals.tool_called"), "share of items"),
)
# The held-out reward of each phase, side by side: before SFT, after SFT (GRPO's start), after GRPO.
PHASES_TITLE = "Held-out reward by phase"


def phase_values(records) -> list[tuple[str, float, float]]:
  """(label, reward mean, standard error) of the held-out evaluations a run logged: the initial
  policy (`eval_init/`, step 0), the policy GRPO starts from (`eval/` at step 0) and the last
  `eval/` after it."""
  def last(prefix, label, pick):
    rows = [r for r in records if f"{prefix}/reward_mean" in r and pick(r["step"])]
    if rows:
      out.append((label, rows[-1][f"{prefix}/reward_mean"],
                  rows[-1].get(f"{prefix}/reward_stderr", 0.0)))
    return bool(rows)
  out = []
  init = last("eval_init", "before SFT", lambda s: s == 0)
  last("eval", "after SFT" if init else "start", lambda s: s == 0)
  last("eval", "after GRPO", lambda s: s > 0)
  return out


def draw_phases(ax, records) -> int:
  """Bars of `phase_values` with ± 1 s.e., and the last logged paired gain over SFT."""
  ax.set_title(PHASES_TITLE, fontsize=11)
  ax.set_ylabel("mean rubric reward")
  ax.grid(True, axis="y", alpha=0.3)
  phases = phase_values(records)
  if not phases:
    ax.text(0.5, 0.5, "no data\n(eval_init/reward_mean, eval/reward_mean)", transform=ax.transAxes,
            ha="center", va="center", fontsize=8, color="0.45")
    ax.set_xticks([])
    ax.set_yticks([])
    return 0
  xs = range(len(phases))
  ax.bar(xs, [v for _, v, _ in phases], yerr=[e for _, _, e in phases], capsize=4,
         color=["0.6", "tab:blue", "tab:green"][:len(phases)])
  ax.set_xticks(list(xs), [label for label, _, _ in phases])
  for x, (_, v, e) in zip(xs, phases):
    ax.text(x, v + e, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
  gains = [r for r in records if "eval/gain_vs_sft" in r]
  if gains:
    g, se = gains[-1]["eval/gain_vs_sft"], gains[-1]["eval/gain_vs_sft_se"]
    ax.set_xlabel(f"GRPO - SFT {g:+.3f} ± {se:.3f} (paired)")
  return len(phases)


def _finite_series(records, key):
  steps, values = metrics_lib.metric_series(records, key)
  pairs = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
  dropped = len(steps) - len(pairs)
  return [s for s, _ in pairs], [v for _, v in pairs], dropped


def draw_panel(ax, panel: Panel, records) -> int:
  """Draws one panel on `ax`; returns how many series had data."""
  ax.set_title(panel.title, fontsize=11)
  ax.set_xlabel("step")
  if panel.ylabel:
    ax.set_ylabel(panel.ylabel)
  ax.grid(True, alpha=0.3)
  drawn = 0
  for key in panel.keys:
    steps, values, dropped = _finite_series(records, key)
    if not steps and not dropped:
      continue
    label = key if not dropped else f"{key} ({dropped} non-finite)"
    marker = "o" if len(steps) <= 30 else None
    ax.plot(steps, values, marker=marker, markersize=3, linewidth=1.5, label=label)
    drawn += 1
  if drawn:
    ax.legend(fontsize=8, loc="best")
  else:
    ax.text(0.5, 0.5, "no data\n(" + ", ".join(panel.keys) + ")", transform=ax.transAxes,
            ha="center", va="center", fontsize=8, color="0.45", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
  return drawn


def curves_figure(records, panels=PANELS, title: str = ""):
  """A matplotlib Figure with one panel per entry of `panels` (3 columns), then, for the default
  panels, the held-out reward of each phase side by side (`draw_phases`)."""
  ncols = 3
  nrows = max(1, math.ceil((len(panels) + (panels is PANELS)) / ncols))
  fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    draw_panel(ax, panel, records)
  extra = list(axes.flat)[len(panels):]
  if extra and panels is PANELS:
    draw_phases(extra.pop(0), records)
  for ax in extra:
    ax.axis("off")
  if title:
    fig.suptitle(title, fontsize=12)
  fig.tight_layout()
  return fig


# out path -> (metrics.jsonl signature, PNG signature, monotonic time) of its last drawing.
_LAST_DRAWN: dict[str, tuple[tuple | None, tuple | None, float]] = {}


def _signature(path: pathlib.Path) -> tuple | None:
  """(size, mtime_ns) of a file, None when absent: changes whenever the file is rewritten."""
  try:
    st = path.stat()
  except FileNotFoundError:
    return None
  return st.st_size, st.st_mtime_ns


def plot_curves(workdir: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                every_s: float = 0.0, force: bool = False) -> pathlib.Path:
  """Renders `<workdir>/metrics.jsonl` to `<workdir>/plots/curves.png` (or `out_path`).

  Written atomically (temp file + rename) so a viewer refreshing during training never sees
  half a PNG. Works with a missing or empty metrics file (all panels say "no data").

  Cheap to call every step: the figure is redrawn only when metrics.jsonl changed since this
  process last drew `out` (or `out` was changed or removed meanwhile), and, with `every_s` > 0,
  at most once per `every_s` seconds. `force=True` redraws regardless (use it for the final
  call of a run that throttles with `every_s`). A skipped call leaves the file as the last
  drawing made it; a drawing is a pure function of metrics.jsonl, so the bytes written are
  the same as with a redraw on every call.
  """
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out_path) if out_path is not None else workdir / PLOTS_DIR / CURVES_FILE
  metrics_sig = _signature(workdir / metrics_lib.METRICS_FILE)
  last = _LAST_DRAWN.get(str(out))
  if not force and last is not None and last[1] is not None and last[1] == _signature(out):
    if last[0] == metrics_sig or time.monotonic() - last[2] < every_s:
      return out
  records = metrics_lib.read_metrics(workdir)
  title = f" (last step {records[-1]['step']})" if records else " (no metrics yet)"
  fig = curves_figure(records, title=f"{workdir.name}{title}")
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  _LAST_DRAWN[str(out)] = (metrics_sig, _signature(out), time.monotonic())
  return out
