"""The LLM side of `MockToolSystem` (envs/tools.py): how an unscripted tool call is simulated,
cached and keyed.

The simulation prompt holds the tool's doc, the world facts and initial state, a few example
outputs of the same tool, and the episode's earlier calls with the answers it got (the last
`history_limit`; failed calls left out), so a simulated answer stays consistent with what the
episode was already told (an order the agent saw cancelled is not "pending" a call later).

Cache key: (task id, tool, canonical arguments, history digest). The answer may depend on
everything in the prompt that varies between episodes of one task, which is exactly the
history shown: facts, initial state and tool docs are fixed by the task id, and the episode's
state is a function of the task and the calls in its history (only scripted effects change it).
The examples are NOT in the key: they only steer the style of the first answer, and the first
answer stored for a key wins, so every later episode with the same history gets the same answer
whatever examples its prompt would have had. With no earlier calls the digest is empty, so an
episode's first unscripted call shares its key (and the cache rows written before history was
part of the prompt) with every rollout of the task; later calls share it with the rollouts that
took the same path. The episode memo (envs/tools.py, step 3) makes a repeated call inside one
episode agree with itself even though its history, and so its key, has grown.

`ToolCache` stores the answers (sqlite, first answer wins); `render_simulation_prompt` builds one
call's prompt; `history_digest` is the history part of its cache key; `simulate_round` sends one
batched `LLM.chat` and turns failures into per-prompt errors instead of raising.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from typing import Sequence

from synthagent_jax.envs.task import Task, Tool
from synthagent_jax.inference.engine import SamplingParams
from synthagent_jax.llm.base import LLM

SIMULATOR_SYSTEM = """You simulate one tool of a software system for testing an assistant.
Reply with ONLY the tool's raw output (JSON or a short plain-text result), nothing else: no
explanations, no code fences. Stay consistent with the world facts and the example outputs. If the
facts do not contain the requested record, reply with a not-found or error result in the same
style; never invent records that contradict the facts."""


# Between canonical arguments and the history digest in a cache key: canonical JSON escapes
# control characters, so it never holds this one raw.
HISTORY_SEP = "\x1e"
HISTORY_OBSERVATION_CHARS = 400  # each earlier answer shown in a simulation prompt, at most


class ToolCache:
  """Simulated tool answers on disk (sqlite), keyed by (task id, tool, canonical arguments).

  Safe across threads (one lock-guarded connection) and processes (sqlite file locking). `put`
  never overwrites: the first answer stored for a key is the answer forever, and `put` returns it.
  `path=None` keeps the cache in memory (this process only).
  """

  def __init__(self, path: str | os.PathLike | None = None):
    self.path = None if path is None else os.fspath(path)
    if self.path is not None:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._lock = threading.Lock()
    self._conn = sqlite3.connect(self.path or ":memory:", timeout=60.0, check_same_thread=False,
                                 isolation_level=None)
    if self.path is not None:
      self._conn.execute("PRAGMA journal_mode=WAL")
    self._conn.execute("CREATE TABLE IF NOT EXISTS answers (task_id TEXT, tool TEXT, args TEXT, "
                       "output TEXT, PRIMARY KEY (task_id, tool, args))")

  def get(self, task_id: str, tool: str, args_key: str) -> str | None:
    with self._lock:
      row = self._conn.execute("SELECT output FROM answers WHERE task_id=? AND tool=? AND args=?",
                               (task_id, tool, args_key)).fetchone()
    return None if row is None else row[0]

  def put(self, task_id: str, tool: str, args_key: str, output: str) -> str:
    """Stores `output` unless the key already has an answer; returns the stored answer."""
    with self._lock:
      self._conn.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                         (task_id, tool, args_key, output))
      row = self._conn.execute("SELECT output FROM answers WHERE task_id=? AND tool=? AND args=?",
                               (task_id, tool, args_key)).fetchone()
    return row[0]

  def examples(self, task_id: str, tool: str, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` cached (canonical arguments, output) pairs of one tool, oldest first."""
    with self._lock:
      rows = self._conn.execute("SELECT args, output FROM answers WHERE task_id=? AND tool=? "
                                "ORDER BY rowid LIMIT ?", (task_id, tool, limit)).fetchall()
    return [(a.split(HISTORY_SEP)[0], o) for a, o in rows]

  def __len__(self) -> int:
    with self._lock:
      return self._conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

  def close(self):
    with self._lock:
      self._conn.close()


def history_digest(history: Sequence[tuple[str, str, str]]) -> str:
  """The part of a cache key the episode's history decides; "" for no history."""
  if not history:
    return ""
  text = json.dumps([list(h) for h in history], ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def render_simulation_prompt(task: Task, tool: Tool, arguments: dict,
                             examples: list[tuple[str, str]],
                             history: Sequence[tuple[str, str, str]] = ()) -> list[dict]:
  """The chat prompt an LLM answers to simulate one unscripted call."""
  lines = [f"Tool: {tool.name} ({tool.kind})", f"Description: {tool.description}",
           f"Parameters (JSON schema): {json.dumps(tool.parameters, sort_keys=True)}",
           f"World facts: {json.dumps(task.world.get('facts', {}), sort_keys=True)}",
           f"Initial world state: {json.dumps(task.world.get('state', {}), sort_keys=True)}"]
  if examples:
    lines.append("Example calls of this tool and their outputs:")
    lines += [f"- arguments {a} -> {o}" for a, o in examples]
  if history:
    lines.append("Earlier calls in this session, in order, and what they returned (stay "
                 "consistent with them, including any changes they made):")
    lines += [f"- {name}({args}) -> {obs[:HISTORY_OBSERVATION_CHARS]}"
              for name, args, obs in history]
  lines.append(f"Now the call: {tool.name}({json.dumps(arguments, sort_keys=True)})")
  return [{"role": "system", "content": SIMULATOR_SYSTEM},
          {"role": "user", "content": "\n".join(lines)}]


_FENCE = re.compile(r"^```[a-zA-Z]*\n?(.*?)\n?```$", re.DOTALL)


def _clean_llm_output(text: str) -> str:
  text = text.strip()
  m = _FENCE.match(text)
  return m.group(1).strip() if m else text


def simulate_round(llm: LLM, prompts: list[list[dict]], sampling: SamplingParams
                   ) -> list[tuple[str, Exception | None]]:
  """One batched `llm.chat` over `prompts`: (cleaned answer, error) per prompt, never raising.

  A batch error that carries per-item results (llm.openai_http.LLMBatchError) keeps the answers
  that did arrive; any other failure (or a wrong answer count) fails every prompt of the round.
  """
  errors: list[Exception | None] = [None] * len(prompts)
  try:
    texts = list(llm.chat(prompts, sampling))
    if len(texts) != len(prompts):
      raise ValueError(f"the LLM answered {len(texts)} of {len(prompts)} prompts")
  except Exception as e:  # noqa: BLE001 - any backend failure becomes an observation.
    results = getattr(e, "results", None)
    if isinstance(results, list) and len(results) == len(prompts):
      texts = [r.text if getattr(r, "ok", False) else "" for r in results]
      errors = [None if getattr(r, "ok", False) else e for r in results]
    else:
      texts, errors = [""] * len(prompts), [e] * len(prompts)
  return [(_clean_llm_output(t or ""), err) for t, err in zip(texts, errors)]
