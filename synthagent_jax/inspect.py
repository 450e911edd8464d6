"""Look at what a run did: the functions behind notebooks/inspect_rollouts.ipynb.

Reads a workdir's rollout logs (`rollouts/step_XXXXXX.jsonl`, format in utils/metrics.py), or
the episodes.jsonl of a `python -m launch.eval` output directory (the same record format, one
"step" 0, plus the benchmark checker's "verdict"), and returns plain data, HTML strings (for `IPython.display.HTML`) or matplotlib figures:

    by_step = load_all_rollouts(workdir)            # {step: [record, ...]}
    html_table(step_summary(by_step))               # one row per step
    reward_distribution(by_step)                    # Figure: rewards per step + last-step histogram
    best, worst = best_and_worst(by_step[step], k=2)
    episode_html(best[0])                           # header, conversation turn by turn, verdicts
    html_table(item_pass_rates(by_step[step]))      # how often each rubric item is met

HTML uses inline styles only (no <style> block), so it renders the same in Jupyter, VS Code and
exported HTML. Every string from the log is escaped.
"""

from __future__ import annotations

import collections
import html
import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from synthagent_jax.utils import metrics as metrics_lib

Record = Mapping[str, Any]

# Role -> (label, left border colour, background colour).
ROLE_STYLES: dict[str, tuple[str, str, str]] = {
    "system": ("SYSTEM", "#9e9e9e", "#f5f5f5"),
    "user": ("USER", "#1e88e5", "#e3f2fd"),
    "assistant": ("ASSISTANT", "#43a047", "#e8f5e9"),
    "tool": ("TOOL", "#fb8c00", "#fff3e0"),
}
_UNKNOWN_ROLE_STYLE = ("?", "#e53935", "#ffebee")

_THINK_RE = re.compile(r"&lt;think&gt;(.*?)(?:&lt;/think&gt;|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"&lt;answer&gt;(.*?)&lt;/answer&gt;", re.DOTALL)
_PRE_STYLE = "white-space:pre-wrap;word-break:break-word;margin:2px 0;font-family:monospace;font-size:12px"


# ----------------------------------------------------------------------------- loading


def _is_eval_dir(workdir: str | os.PathLike) -> bool:
  """An output directory of `python -m launch.eval` (episodes.jsonl, no rollouts/)."""
  return (os.path.isfile(os.path.join(os.fspath(workdir), "episodes.jsonl"))
          and not metrics_lib.list_rollout_steps(workdir))


def list_steps(workdir: str | os.PathLike) -> list[int]:
  """Steps with a rollout log, ascending; [0] for a launch.eval output directory."""
  if _is_eval_dir(workdir):
    return [0]
  return metrics_lib.list_rollout_steps(workdir)


def load_rollouts(workdir: str | os.PathLike, step: int | None = None) -> list[dict]:
  """One step's episodes (the last logged step when `step` is None). A launch.eval output
  directory has one "step", 0: its episodes.jsonl."""
  if _is_eval_dir(workdir):
    if step not in (None, 0):
      raise FileNotFoundError(f"{workdir} is a launch.eval output: its only step is 0")
    return load_eval_episodes(workdir)
  if step is None:
    steps = list_steps(workdir)
    if not steps:
      raise FileNotFoundError(f"{workdir} has no rollout logs (rollouts/step_*.jsonl)")
    step = steps[-1]
  return metrics_lib.read_rollouts(workdir, step)


def load_eval_episodes(out_dir: str | os.PathLike) -> list[dict]:
  """The episodes of a `python -m launch.eval` run (OUT/episodes.jsonl: rollout records with
  step 0, reward = the benchmark score, plus the checker's "verdict"), in file order."""
  path = os.path.join(os.fspath(out_dir), "episodes.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{out_dir} has no episodes.jsonl (written by python -m launch.eval)")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def evenly_spaced(steps: Sequence[int], n: int) -> list[int]:
  """At most `n` (>= 2) of `steps`, evenly spaced, always keeping the first and the last."""
  if n < 2:
    raise ValueError(f"n must be >= 2, got {n}")
  steps = list(steps)
  if len(steps) <= n:
    return steps
  return [steps[i] for i in sorted({round(i * (len(steps) - 1) / (n - 1)) for i in range(n)})]


def load_all_rollouts(workdir: str | os.PathLike,
                      steps: Iterable[int] | None = None) -> dict[int, list[dict]]:
  """{step: episodes} for `steps` (default: every logged step), ascending."""
  chosen = list_steps(workdir) if steps is None else sorted(steps)
  return {s: load_rollouts(workdir, s) for s in chosen}


# ----------------------------------------------------------------------------- statistics


def _mean(xs: Sequence[float]) -> float:
  return sum(xs) / len(xs) if xs else math.nan


def step_summary(by_step: Mapping[int, Sequence[Record]]) -> list[dict[str, Any]]:
  """One row per step: episode count, reward stats, statuses, turns, tool calls, tokens.

  `zero_var_groups` counts tasks whose samples all got the same reward (no learning signal).
  """
  rows = []
  for step, records in sorted(by_step.items()):
    rewards = [float(r["reward"]) for r in records]
    groups = collections.defaultdict(list)
    for r in records:
      groups[r["task_id"]].append(float(r["reward"]))
    statuses = collections.Counter(r["status"] for r in records)
    rows.append({
        "step": step,
        "episodes": len(records),
        "reward_mean": _mean(rewards),
        "reward_std": statistics.pstdev(rewards) if rewards else math.nan,
        "reward_min": min(rewards, default=math.nan),
        "reward_max": max(rewards, default=math.nan),
        "zero_var_groups": f"{sum(1 for g in groups.values() if max(g) == min(g))}/{len(groups)}",
        "statuses": ", ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
        "turns_mean": _mean([r["num_turns"] for r in records]),
        "tool_calls_mean": _mean([r["num_tool_calls"] for r in records]),
        "response_tokens_mean": _mean([r["response_tokens"] for r in records]),
    })
  return rows


def item_pass_rates(records: Sequence[Record]) -> list[dict[str, Any]]:
  """Per rubric item (section, id) over `records`: episodes judged, fraction met, mean score."""
  stats: dict[tuple[str, str], dict[str, Any]] = {}
  for rec in records:
    for v in rec["verdicts"]:
      row = stats.setdefault((v["section"], v["id"]), {
          "section": v["section"], "id": v["id"], "text": v["text"], "episodes": 0, "met": 0,
          "score_sum": 0.0})
      row["episodes"] += 1
      row["met"] += bool(v["met"])
      row["score_sum"] += float(v["score"])
  out = []
  for row in stats.values():
    n = row.pop("episodes")
    out.append({"section": row["section"], "id": row["id"], "episodes": n,
                "met_frac": row["met"] / n, "score_mean": row["score_sum"] / n, "text": row["text"]})
  return out


def best_and_worst(records: Sequence[Record], k: int = 2) -> tuple[list[Record], list[Record]]:
  """(k highest-reward episodes, k lowest-reward episodes); ties broken by task id, sample."""
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  order = sorted(records, key=lambda r: (float(r["reward"]), str(r["task_id"]), r["sample_index"]))
  return list(reversed(order[-k:])), order[:k]


# ----------------------------------------------------------------------------- figures


def reward_distribution(by_step: Mapping[int, Sequence[Record]], max_steps: int = 40):
  """Figure: reward box plot per step (mean as a line) and a histogram of the last step.

  With more than `max_steps` steps, evenly spaced steps (always the first and last) are shown.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(12, 3.8))
  ax_box, ax_hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
  steps = evenly_spaced(sorted(s for s, recs in by_step.items() if recs), max_steps)
  if not steps:
    for ax in (ax_box, ax_hist):
      ax.text(0.5, 0.5, "no rollouts", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    return fig
  rewards = [[float(r["reward"]) for r in by_step[s]] for s in steps]
  positions = list(range(len(steps)))
  ax_box.boxplot(rewards, positions=positions, widths=0.6, showfliers=True)
  ax_box.plot(positions, [_mean(r) for r in rewards], color="#43a047", marker="o", markersize=3,
              linewidth=1.2, label="mean")
  ax_box.set_xticks(positions)
  ax_box.set_xticklabels([str(s) for s in steps], rotation=90 if len(steps) > 15 else 0, fontsize=8)
  ax_box.set_xlabel("step")
  ax_box.set_ylabel("episode reward")
  ax_box.set_title("Reward per step")
  ax_box.grid(True, alpha=0.3)
  ax_box.legend(fontsize=8, loc="best")
  ax_hist.hist(rewards[-1], bins=min(20, max(5, len(rewards[-1]) // 2)), color="#1e88e5",
               alpha=0.8)
  ax_hist.set_title(f"Step {steps[-1]} ({len(rewards[-1])} episodes)")
  ax_hist.set_xlabel("episode reward")
  ax_hist.set_ylabel("episodes")
  fig.tight_layout()
  return fig


# ----------------------------------------------------------------------------- HTML


def _fmt(value: Any) -> str:
  if isinstance(value, bool):
    return "✓" if value else "✗"
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.3g}"
  return str(value)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
  """A plain HTML table of `rows` (columns default to the first row's keys)."""
  if not rows:
    return "<p><i>(no rows)</i></p>"
  columns = list(columns or rows[0])
  cell = "border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top"
  head = "".join(f'<th style="{cell};background:#fafafa">{html.escape(c)}</th>' for c in columns)
  body = "".join(
      "<tr>" + "".join(f'<td style="{cell}">{html.escape(_fmt(r.get(c, "")))}</td>' for c in columns)
      + "</tr>" for r in rows)
  return (f'<table class="sa-table" style="border-collapse:collapse;font-size:12px">'
          f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _render_text(text: str) -> str:
  """Escapes text; collapses <think> blocks into <details>; highlights <answer>."""
  escaped = html.escape(text)
  escaped = _THINK_RE.sub(
      lambda m: ('<details class="sa-think" style="color:#757575"><summary>think '
                 f'({len(html.unescape(m.group(1)))} chars)</summary>{m.group(1)}</details>'),
      escaped)
  return _ANSWER_RE.sub(
      lambda m: ('<span class="sa-answer" style="background:#fff59d;font-weight:bold">'
                 f"&lt;answer&gt;{m.group(1)}&lt;/answer&gt;</span>"), escaped)


def _render_tool_call(call: Any) -> str:
  fn = call.get("function", call) if isinstance(call, Mapping) else {}
  name = fn.get("name", "?") if isinstance(fn, Mapping) else "?"
  args = fn.get("arguments", {}) if isinstance(fn, Mapping) else call
  args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, sort_keys=True)
  return (f'<div class="sa-tool-call" style="{_PRE_STYLE};background:#fff;border:1px dashed #43a047;'
          f'padding:2px 4px">🔧 <b>{html.escape(str(name))}</b>({html.escape(args_text)})</div>')


def render_message(message: Any, index: int | None = None) -> str:
  """One chat message as a coloured block: role label, content, tool calls."""
  if not isinstance(message, Mapping):
    return (f'<div class="sa-msg sa-invalid" style="color:#e53935">invalid message '
            f"{html.escape(repr(message)[:300])}</div>")
  role = str(message.get("role", "?"))
  label, border, background = ROLE_STYLES.get(role, _UNKNOWN_ROLE_STYLE)
  if label == "?":
    label = f"UNKNOWN ROLE {role!r}"
  if role == "tool" and message.get("name"):
    label = f"TOOL · {message['name']}"
  number = f"#{index} " if index is not None else ""
  content = message.get("content") or ""
  if not isinstance(content, str):
    content = json.dumps(content, ensure_ascii=False)
  body = f'<div style="{_PRE_STYLE}">{_render_text(content)}</div>' if content else ""
  body += "".join(_render_tool_call(c) for c in message.get("tool_calls") or [])
  if role == "system":  # System prompts are long and the same every episode: fold them.
    body = f"<details><summary>show system prompt ({len(content)} chars)</summary>{body}</details>"
  return (f'<div class="sa-msg sa-{html.escape(role)}" style="border-left:4px solid {border};'
          f'background:{background};padding:4px 8px;margin:4px 0">'
          f'<div style="font-size:11px;font-weight:bold;color:{border}">{number}'
          f"{html.escape(label)}</div>{body}</div>")


def render_conversation(messages_or_record: Sequence[Any] | Record) -> str:
  """A conversation (list of messages, or a rollout record) turn by turn as HTML."""
  messages = (messages_or_record["messages"] if isinstance(messages_or_record, Mapping)
              else messages_or_record)
  if not messages:
    return '<div class="sa-conversation"><i>(no messages)</i></div>'
  inner = "".join(render_message(m, i) for i, m in enumerate(messages))
  return f'<div class="sa-conversation" style="max-width:900px">{inner}</div>'


def verdict_table(record: Record) -> str:
  """The episode's rubric verdicts, one row per item, met items green and unmet red; for an
  outside benchmark's episode (launch.eval), its checker's verdict."""
  verdicts = record["verdicts"]
  if not verdicts and isinstance(record.get("verdict"), Mapping):
    colour = "#c8e6c9" if record.get("passed") else "#ffcdd2"
    text = json.dumps(record["verdict"], ensure_ascii=False, sort_keys=True, indent=1)
    return (f'<div class="sa-bench-verdict" style="background:{colour};padding:4px">'
            f'<b>{html.escape(str(record.get("suite", "benchmark")))} verdict</b>'
            f'<pre style="{_PRE_STYLE}">{html.escape(text)}</pre></div>')
  if not verdicts:
    return "<p><i>(no rubric verdicts)</i></p>"
  cell = "border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top"
  head = "".join(f'<th style="{cell};background:#fafafa">{c}</th>'
                 for c in ("section", "item", "met", "score", "source", "text"))
  rows = []
  for v in verdicts:
    colour = "#c8e6c9" if v["met"] else "#ffcdd2"
    mark = "✓ met" if v["met"] else "✗ not met"
    rows.append(
        f'<tr style="background:{colour}"><td style="{cell}">{html.escape(v["section"])}</td>'
        f'<td style="{cell}">{html.escape(v["id"])}</td><td style="{cell}">{mark}</td>'
        f'<td style="{cell}">{float(v["score"]):.3g}</td>'
        f'<td style="{cell}">{html.escape(v["source"])}</td>'
        f'<td style="{cell}">{html.escape(v["text"])}</td></tr>')
  return (f'<table class="sa-verdicts" style="border-collapse:collapse;font-size:12px">'
          f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def episode_header(record: Record) -> str:
  fields = [("step", record["step"]), ("task", record["task_id"]),
            ("sample", record["sample_index"]), ("domain", record["domain"]),
            ("status", record["status"]), ("reward", float(record["reward"])),
            ("advantage", float(record["advantage"])), ("turns", record["num_turns"]),
            ("tool calls", record["num_tool_calls"]), ("response tokens", record["response_tokens"])]
  if record.get("error"):
    fields.append(("error", record["error"]))
  text = " · ".join(f"<b>{html.escape(k)}</b> {html.escape(_fmt(v))}" for k, v in fields)
  return f'<div class="sa-header" style="font-size:13px;margin:6px 0">{text}</div>'


def episode_html(record: Record) -> str:
  """Header, conversation and verdicts of one episode."""
  return (f'<div class="sa-episode" style="border:1px solid #ccc;padding:6px;margin:8px 0">'
          f"{episode_header(record)}{render_conversation(record)}{verdict_table(record)}</div>")
