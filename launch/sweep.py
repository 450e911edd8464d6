"""Run an ablation grid of training runs and tabulate their final metrics.

    python -m launch.sweep --config=configs/tiny.py --workdir=runs/sweep \
        --sweep="rl.num_generations=4,8 rl.clip_high=0.2,0.28"

The grid is the cartesian product of the space-separated `key=v1,v2,...` groups (values are Python
literals; a bare word such as `drgrpo` is a string). Each point trains in its own workdir
`ROOT/<point>` (e.g. `runs/sweep/num_generations=4,clip_high=0.2`) as a separate
`python -m launch.train --config=... --workdir=... --config.key=value ...` process, one after
another; rerunning the sweep resumes each point from its last checkpoint. `--overrides` applies
the same grammar (one value per key) to every point, e.g. `--overrides="rl.num_steps=5"`.

    --print_only      print one job command per line (for a cluster scheduler) and exit
    --summarize_only  only (re)write the summary from the points' metrics.jsonl

The summary, ROOT/summary.md and ROOT/summary.csv, has one row per point: the swept values, the
run status, the last step and, per metric in `--metrics`, the last value the run logged (metrics
logged at different cadences, e.g. eval/*, each keep their own last value).
Every key and value is checked against the config before anything runs.
"""

from __future__ import annotations

import ast
import copy
import csv
import importlib.util
import io
import itertools
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

_KEY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_BARE_WORD_RE = re.compile(r"^[A-Za-z_][\w\-./:]*$")
_OPEN, _CLOSE = "([{", ")]}"

METRICS_FILE = "metrics.jsonl"




class SweepError(ValueError):
  """A malformed sweep string or a key/value the config rejects."""


def split_top_level(text: str, separators: str) -> list[str]:
  """Splits `text` on any char of `separators` outside brackets and quotes.

  "a=1,(2, 3) b='x y'" with separators " " -> ["a=1,(2, 3)", "b='x y'"]. Raises SweepError on
  unbalanced brackets or quotes.
  """
  parts, current, stack, quote = [], [], [], None
  for ch in text:
    if quote:
      current.append(ch)
      if ch == quote:
        quote = None
      continue
    if ch in "'\"":
      quote = ch
    elif ch in _OPEN:
      stack.append(_CLOSE[_OPEN.index(ch)])
    elif ch in _CLOSE:
      if not stack or stack.pop() != ch:
        raise SweepError(f"unbalanced {ch!r} in {text!r}")
    elif ch in separators and not stack:
      parts.append("".join(current))
      current = []
      continue
    current.append(ch)
  if quote or stack:
    raise SweepError(f"unclosed {quote or stack[-1]!r} in {text!r}")
  parts.append("".join(current))
  return parts


def parse_value(token: str) -> Any:
  """A Python literal ("4", "0.2", "(1, 2)", "'a b'", "True") or a bare word ("drgrpo") -> value."""
  try:
    return ast.literal_eval(token)
  except (ValueError, SyntaxError):
    if _BARE_WORD_RE.match(token):
      return token
    raise SweepError(f"cannot parse value {token!r}: use a Python literal, e.g. 4, 0.2, 'text', "
                     "(1, 2)") from None


def parse_sweep(text: str) -> list[tuple[str, list[Any]]]:
  """ "rl.num_generations=4,8 rl.clip_high=0.2,0.28" -> [(key, [values...]), ...] in order."""
  if not text or not text.strip():
    raise SweepError('empty sweep: expected "key=v1,v2 key2=v3,..."')
  axes: list[tuple[str, list[Any]]] = []
  seen: set[str] = set()
  for group in split_top_level(text.strip(), " \t\n"):
    if not group:
      continue
    key, eq, values_text = group.partition("=")
    key = key.strip()
    if not eq:
      raise SweepError(f"sweep group {group!r} has no '=': expected key=v1,v2")
    if key.startswith("config."):
      raise SweepError(f"sweep key {key!r}: drop the 'config.' prefix (write {key[7:]!r})")
    if not _KEY_RE.match(key):
      raise SweepError(f"sweep key {key!r} is not a dotted config key like rl.clip_high")
    if key in seen:
      raise SweepError(f"sweep key {key!r} appears twice")
    seen.add(key)
    tokens = split_top_level(values_text, ",")
    if any(not t.strip() for t in tokens):
      raise SweepError(f"sweep group {group!r} has an empty value")
    values = [parse_value(t.strip()) for t in tokens]
    for i, v in enumerate(values):
      if v in values[:i]:
        raise SweepError(f"sweep key {key!r} lists value {v!r} twice")
    axes.append((key, values))
  if not axes:
    raise SweepError('empty sweep: expected "key=v1,v2 key2=v3,..."')
  return axes


def parse_overrides(text: str) -> dict[str, Any]:
  """ "rl.num_steps=5 sft.num_steps=0" -> {key: value}; each key takes exactly one value."""
  if not text.strip():
    return {}
  out = {}
  for key, values in parse_sweep(text):
    if len(values) != 1:
      raise SweepError(f"override {key!r} must have one value, got {values!r} (sweep it instead)")
    out[key] = values[0]
  return out


def grid(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
  """Cartesian product, first axis slowest: [{key: value, ...}, ...]."""
  keys = [k for k, _ in axes]
  return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def _slug(value: Any) -> str:
  text = value if isinstance(value, str) else repr(value)
  return re.sub(r"[^A-Za-z0-9.+\-]", "_", text)


def point_names(points: Sequence[dict[str, Any]]) -> list[str]:
  """Readable, filesystem-safe, unique directory names: "num_generations=4,clip_high=0.2".

  Uses each key's last component unless two swept keys share it, then the full key.
  """
  if not points:
    return []
  keys = list(points[0])
  leaves = [k.rsplit(".", 1)[-1] for k in keys]
  labels = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]
  names = [",".join(f"{label}={_slug(p[k])}" for label, k in zip(labels, keys)) for p in points]
  seen: dict[str, int] = {}
  unique = []
  for name in names:
    seen[name] = seen.get(name, 0) + 1
    unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
  return unique


def format_override(value: Any) -> str:
  """How ml_collections' --config.key=... flag expects a value: strings raw, others as repr."""
  return value if isinstance(value, str) else repr(value)


def job_command(python: str, train_module: str, config: str, workdir: str,
                overrides: dict[str, Any]) -> list[str]:
  cmd = [python, "-m", train_module, f"--config={config}", f"--workdir={workdir}"]
  cmd += [f"--config.{k}={format_override(v)}" for k, v in overrides.items()]
  return cmd


def load_config(config_arg: str):
  """Loads `path[:arg]` like ml_collections' config flag does -> ConfigDict."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise SweepError(f"--config={config_arg!r}: no such file {path!r}")
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (any error in the user's config file)
    raise SweepError(f"--config={config_arg!r}: loading {path} failed: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise SweepError(f"--config={config_arg!r}: {path} defines no get_config()")
  try:
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f"--config={config_arg!r}: get_config() failed: {type(e).__name__}: {e}") from e


def check_against_config(config, overrides: dict[str, Any]) -> None:
  """Raises SweepError if a key is not in `config` or its value has the wrong type."""
  cfg = copy.deepcopy(config)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = cfg
    for i, part in enumerate(parents):
      if part not in node:
        raise SweepError(f"config has no key {'.'.join(parents[:i + 1])!r} (from {key!r})")
      node = node[part]
    if not hasattr(node, "keys") or leaf not in node:
      raise SweepError(f"config has no key {key!r}")
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f"config key {key!r} rejects value {value!r}: {e}") from None


def read_last_metrics(workdir: pathlib.Path) -> tuple[int | None, dict[str, float]]:
  """(last step, {key: last logged value}) from a point's metrics.jsonl; (None, {}) if absent."""
  from synthagent_jax.utils import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  records = metrics_lib.read_metrics(workdir)
  if not records:
    return None, {}
  return int(records[-1]["step"]), metrics_lib.last_values(records)


def summary_rows(root: pathlib.Path, points, names, statuses, metric_keys) -> list[dict[str, Any]]:
  rows = []
  for point, name, status in zip(points, names, statuses):
    try:
      step, last = read_last_metrics(root / name)
    except ValueError as e:  # A corrupt metrics file must not hide the other points.
      step, last = None, {}
      status = f"{status}; unreadable metrics ({e})"
    if status == "not run":
      status = "done" if step is not None else "no metrics"
    row = {"point": name, **point, "status": status, "step": step}
    row.update({k: last.get(k) for k in metric_keys})
    rows.append(row)
  return rows


def _md_cell(value: Any) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4g}"
  return str(value).replace("|", "\\|")


def write_summary(root: pathlib.Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
  """Writes ROOT/summary.md (a markdown table) and ROOT/summary.csv (raw values)."""
  root.mkdir(parents=True, exist_ok=True)
  md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  md += ["| " + " | ".join(_md_cell(r.get(c)) for c in columns) + " |" for r in rows]
  (root / "summary.md").write_text("\n".join(md) + "\n")
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(columns)
  for r in rows:
    writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
  (root / "summary.csv").write_text(buf.getvalue())


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _CONFIG.value or not _SWEEP.value:
    sys.exit("error: --config and --sweep are required")
  try:
    axes = parse_sweep(_SWEEP.value)
    fixed = parse_overrides(_OVERRIDES.value)
    clash = sorted(set(fixed) & {k for k, _ in axes})
    if clash:
      raise SweepError(f"keys both swept and overridden: {clash}")
    points = grid(axes)
    config = load_config(_CONFIG.value)
    for point in points:
      check_against_config(config, {**fixed, **point})
  except SweepError as e:
    sys.exit(f"error: {e}")

  config_stem = pathlib.Path(_CONFIG.value.partition(":")[0]).stem
  root = pathlib.Path(_WORKDIR.value or os.path.join("runs", f"sweep_{config_stem}"))
  names = point_names(points)
  python = "python" if _PRINT_ONLY.value else sys.executable
  commands = [job_command(python, _TRAIN_MODULE.value, _CONFIG.value, str(root / name),
                          {**fixed, **point}) for point, name in zip(points, names)]
  if _PRINT_ONLY.value:
    for cmd in commands:
      print(shlex.join(cmd))
    return

  columns = ["point", *(k for k, _ in axes), "status", "step", *_METRICS.value]
  # "not run" (summarize_only) becomes done/no metrics from the files; "pending" stays as is.
  statuses = ["not run" if _SUMMARIZE_ONLY.value else "pending"] * len(points)

  def summarize():
    write_summary(root, summary_rows(root, points, names, statuses, _METRICS.value), columns)

  if not _SUMMARIZE_ONLY.value:
    for i, (name, cmd) in enumerate(zip(names, commands)):
      print(f"[sweep] point {i + 1}/{len(points)}: {name}\n[sweep] {shlex.join(cmd)}", flush=True)
      try:
        rc = subprocess.run(cmd, check=False).returncode
      except KeyboardInterrupt:
        statuses[i] = "interrupted"
        summarize()
        sys.exit(f"[sweep] interrupted at point {i + 1}/{len(points)}; partial summary in {root}")
      statuses[i] = "ok" if rc == 0 else f"failed (rc={rc})"
      print(f"[sweep] point {i + 1}/{len(points)}: {statuses[i]}", flush=True)
      summarize()  # Refreshed after every point, so a long sweep shows progress.

  summarize()
  print(f"[sweep] summary: {root / 'summary.md'} and {root / 'summary.csv'}")
  print((root / "summary.md").read_text(), end="")
  failed = [n for n, s in zip(names, statuses) if s.startswith("failed")]
  if failed:
    sys.exit(f"error: {len(failed)} of {len(points)} points failed: {failed}")


def _define_flags():
  """Flags of this entry point, defined only when it runs as __main__, so tests (and other
  launch modules) can import it without a second --config."""
  global _CONFIG, _SWEEP, _WORKDIR, _OVERRIDES, _PRINT_ONLY, _SUMMARIZE_ONLY, _TRAIN_MODULE, _METRICS  # pylint: disable=global-statement
  _CONFIG = flags.DEFINE_string("config", None, "Config file (optionally `path:arg`) every point uses.")
  _SWEEP = flags.DEFINE_string("sweep", None, 'Grid: "key=v1,v2 key2=v3,v4" (space-separated groups).')
  _WORKDIR = flags.DEFINE_string("workdir", None,
                                 "Sweep root; each point writes ROOT/<point>. Default: runs/sweep_<config>.")
  _OVERRIDES = flags.DEFINE_string("overrides", "", 'Fixed overrides for every point: "key=v key2=v2".')
  _PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Print one job command per line; run nothing.")
  _SUMMARIZE_ONLY = flags.DEFINE_bool("summarize_only", False, "Only write summary.md/.csv.")
  _TRAIN_MODULE = flags.DEFINE_string("train_module", "launch.train", "Module run with `python -m`.")
  _METRICS = flags.DEFINE_list(
      "metrics",
      ["rl/reward_mean", "eval/reward_mean", "eval/pass_rate", "learner/loss", "learner/approx_kl",
       "rollout/response_tokens_mean", "rollout/turns_mean", "perf/tokens_per_s"],
      "Metric keys tabulated in the summary.")



if __name__ == "__main__":
  _define_flags()
  app.run(main)
