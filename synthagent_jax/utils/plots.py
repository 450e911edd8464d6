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
)


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
  """A matplotlib Figure with one panel per entry of `panels` (2 rows x 3 columns for 6)."""
  ncols = 3
  nrows = max(1, math.ceil(len(panels) / ncols))
  fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    draw_panel(ax, panel, records)
  for ax in list(axes.flat)[len(panels):]:
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
