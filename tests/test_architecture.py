"""The house plan (ARCHITECTURE.md) as checks on the source: imports point up the room table only,
no import cycles between modules, and no module over 400 lines in the package or launch/."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "synthagent_jax"
# The room table of ARCHITECTURE.md, top to bottom: a room imports only rooms above it (and
# utils/, which every room may import).
ROOMS = ("utils", "models", "parallel", "inference", "llm", "envs", "rollout", "rewards",
         "synthesis", "rl", "evals")
MAX_LINES = 400


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
  """Our modules `path` imports (function-local imports too unless top_level_only)."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  out = set()
  for node in nodes:
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    else:
      continue
    out |= {n for n in names if n.split(".")[0] == "synthagent_jax"}
  return out


def _sources():
  return sorted(PACKAGE.rglob("*.py"))


def test_rooms_import_only_rooms_above_them():
  assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ROOMS)
  bad = []
  for path in _sources():
    rel = path.relative_to(PACKAGE).parts
    if len(rel) < 2:
      continue  # the package's own __init__
    room = rel[0]
    for name in _imports(path, top_level_only=False):
      parts = name.split(".")
      if len(parts) < 2 or parts[1] not in ROOMS or parts[1] in (room, "utils"):
        continue
      if ROOMS.index(parts[1]) > ROOMS.index(room):
        bad.append(f"{path.relative_to(ROOT)} imports {name} ({parts[1]} is below {room})")
  assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
  modules = {_module(p): p for p in _sources()}

  def resolve(name):  # "synthagent_jax.x.y.Name" -> the longest prefix that is a module
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
      if ".".join(parts[:n]) in modules:
        return ".".join(parts[:n])
    return None

  def deps(path):
    """Top-level imports of `path` as modules: `from pkg import sub` depends on pkg.sub only (a
    package imported for a submodule is only partly initialised, which Python allows), `from
    pkg import name` on pkg."""
    out = set()
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for a in node.names:
          sub = f"{node.module}.{a.name}"
          out.add(resolve(sub) if sub in modules else resolve(node.module))
      elif isinstance(node, ast.Import):
        out |= {resolve(a.name) for a in node.names}
    return out

  graph = {m: {r for r in deps(p) if r and r != m} for m, p in modules.items()}
  # Find a cycle by depth-first search.
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    state[m] = "done"
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state:
      cycle = visit(m)
      assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("folder", ["synthagent_jax", "launch"])
def test_no_module_over_400_lines(folder):
  long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / folder).rglob("*.py"))
          if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, long
