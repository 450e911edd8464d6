"""bfcl_multi_turn through the real AgentLoop with ReplayEngine and the shipped tokenizer, scored by
BFCL's own multi_turn_checker: the oracle passes and the null policy fails on the first entries of
every category; a correct sample scored after a wrong one of the same entry still passes (BFCL's
instance cache); bad calls become error observations and are never executed; BFCL's step limit
(force-termination, except on the last turn); hand-derived schema conversion, call strings, ground
truth parsing and metrics."""

import json
import pathlib
import sys

import pytest
import transformers

from synthagent_jax.envs.base import ToolCall
from synthagent_jax.evals import suite as suite_lib
from synthagent_jax.evals.replay import ReplayEngine
from synthagent_jax.evals.suite import EpisodeScore, EvalTask, SuiteError, SuiteOptions
from synthagent_jax.models import chat_format as cf
from synthagent_jax.rollout.agent_loop import AgentLoop, AgentLoopConfig

import bfcl_eval  # noqa: E402,F401  # installed by the README's test command (--no-deps)

from synthagent_jax.evals import bfcl, bfcl_exec  # noqa: E402

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[2] / "data" / "tokenizer"
PER_CATEGORY = 3


@pytest.fixture(scope="module")
def tok():
  return transformers.AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))


@pytest.fixture(scope="module")
def suite():
  return bfcl.BfclMultiTurn(SuiteOptions(limit=PER_CATEGORY))


@pytest.fixture(scope="module")
def tasks(suite):
  return suite.load()


def by_id(tasks, task_id):
  return next(t for t in tasks if t.id == task_id)


def run(suite, tok, task, turns):
  # The suite's own budget (131072 tokens in all, 4096 per step): the oracle needs up to ~75k.
  config = AgentLoopConfig.from_mapping({}, **suite.loop_overrides())
  loop = AgentLoop(ReplayEngine(tok, turns), tok, suite.tool_env(), suite.user_env(None), config)
  (traj,) = loop.run([task])
  return traj


def leftover_instances(suite):
  return [k for k in vars(suite.bfcl.exec) if k.startswith("synthagent_")]


# ---- options and tasks -----------------------------------------------------------------------
def test_registered_and_categories():
  assert suite_lib.get("bfcl_multi_turn") is bfcl.BfclMultiTurn
  assert bfcl.parse_categories(None) == ["base", "miss_func", "miss_param", "long_context"]
  assert bfcl.parse_categories("all") == list(bfcl.CATEGORIES)
  assert bfcl.parse_categories("miss_param, multi_turn_base,miss_param") == ["miss_param", "base"]


def test_unknown_category_is_a_suite_error_listing_the_known_ones():
  with pytest.raises(SuiteError, match="unknown BFCL multi-turn category 'composite'.*base, "
                     "miss_func, miss_param, long_context"):
    bfcl.BfclMultiTurn(SuiteOptions(category="base,composite"))
  with pytest.raises(SuiteError, match="unknown settings"):
    bfcl.BfclMultiTurn(SuiteOptions(extra={"temperature": 0.0}))
  with pytest.raises(SuiteError, match="max_new_tokens must be an integer >= 1"):
    bfcl.BfclMultiTurn(SuiteOptions(extra={"max_new_tokens": 0}))


def test_loop_overrides(suite):
  # BFCL: 20 tool steps per turn, the 21st force-quits; up to 8 user turns per entry; a local
  # model's step samples min(4096, room left) tokens.
  assert suite.loop_overrides() == {
      "answer_to_user": True, "max_steps_per_user_turn": 21, "max_turns": 21 * 8,
      "max_new_tokens": 4096, "max_total_tokens": 131072, "max_tool_response_tokens": 32768}
  small = bfcl.BfclMultiTurn(SuiteOptions(extra={"max_total_tokens": 8192}))
  assert small.loop_overrides()["max_total_tokens"] == 8192


def test_missing_package_names_the_install_command(monkeypatch):
  for name in [m for m in sys.modules if m == "bfcl_eval" or m.startswith("bfcl_eval.")]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, "bfcl_eval", None)  # import bfcl_eval -> ImportError
  with pytest.raises(SuiteError, match=r"pip install --no-deps bfcl-eval==2026\.3\.23 mpmath"):
    bfcl_exec.import_bfcl()


def test_unreadable_data_file_is_a_suite_error(monkeypatch, tmp_path):
  fresh = bfcl.BfclMultiTurn(SuiteOptions(category="base"))
  monkeypatch.setattr(fresh.bfcl.utils, "PROMPT_PATH", tmp_path)
  with pytest.raises(SuiteError, match="BFCL data file .*BFCL_v4_multi_turn_base.json cannot be "
                     "read"):
    fresh.load()


def test_load_slices_each_category_and_builds_tasks(suite, tasks):
  assert [t.id for t in tasks] == [f"multi_turn_{c}_{i}" for c in bfcl.CATEGORIES
                                   for i in range(PER_CATEGORY)]
  sliced = bfcl.BfclMultiTurn(SuiteOptions(category="miss_func", offset=1, limit=1)).load()
  assert [t.id for t in sliced] == ["multi_turn_miss_func_1"]
  base0 = by_id(tasks, "multi_turn_base_0")
  assert base0.instruction.startswith("Move 'final_report.pdf' within document directory")
  assert base0.data["turns"][0] == base0.instruction and len(base0.data["turns"]) == 4
  names = [t["function"]["name"] for t in base0.tools]
  assert {"cd", "mv", "post_tweet"} <= set(names) and all(t["type"] == "function"
                                                          for t in base0.tools)
  assert json.loads(json.dumps(base0.data)) == base0.data  # episodes.jsonl can hold it


def test_loading_a_slice_matches_bfcls_own_loader(suite):
  ours = [e for e, _ in bfcl.BfclMultiTurn(SuiteOptions(category="miss_func", offset=5,
                                                        limit=2)).entries("miss_func")]
  theirs = suite.bfcl.utils.load_dataset_entry("multi_turn_miss_func")[5:7]
  assert ours == theirs and ours[0]["missed_function"]


def test_miss_func_holds_back_functions_and_delivers_them_in_the_user_turn(suite, tasks):
  task = by_id(tasks, "multi_turn_miss_func_0")
  entry = dict(suite.entries("miss_func")[0][0])
  (turn, held) = next(iter(entry["missed_function"].items()))
  held_names = [d["name"] for d in held]
  assert held_names and not set(held_names) & {t["function"]["name"] for t in task.tools}
  text = task.data["turns"][int(turn)]
  assert text.endswith("\nI have updated some more functions you can choose from. What about now?")
  delivered = json.loads(text.split("\n")[0])
  assert [d["function"]["name"] for d in delivered] == held_names


def test_openai_tool_conversion_by_hand():
  doc = {"name": "pay", "description": "Pay.", "parameters": {"type": "dict", "properties": {
      "amount": {"type": "float", "description": "How much."},
      "tags": {"type": "array", "items": {"type": "float"}, "description": "T."},
      "card": {"type": "dict", "description": "C.",
               "properties": {"n": {"type": "integer", "description": "N."}}},
      "note": {"description": "no type"}}, "required": ["amount"]},
      "response": {"type": "dict", "properties": {}}}
  tool = bfcl_exec.openai_tool(doc, {"float": "number", "array": "array", "dict": "object",
                                     "integer": "integer"})
  props = tool["function"]["parameters"]["properties"]
  assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"
  assert props["amount"] == {"type": "number", "format": "float",
                             "description": "How much. This is a float type value."}
  assert props["tags"]["items"] == {"type": "number"}
  assert props["card"]["type"] == "object" and props["card"]["properties"]["n"]["type"] == "integer"
  assert props["note"]["type"] == "string"
  assert doc["parameters"]["type"] == "dict"  # the input is not modified


# ---- the adapter's self-test: oracle 100%, null 0% -------------------------------------------
def test_oracle_passes_and_null_fails_on_every_category(suite, tok, tasks):
  oracle, null = [], []
  for task in tasks:
    traj = run(suite, tok, task, suite.oracle_turns(task))
    oracle.append([suite.score(task, traj)])
    assert traj.status == "user_stopped", (task.id, traj.status)
    null_traj = run(suite, tok, task, [])
    null.append([suite.score(task, null_traj)])
  failed = [(t.id, s[0].verdict) for t, s in zip(tasks, oracle) if not s[0].passed]
  assert not failed
  assert not [t.id for t, s in zip(tasks, null) if s[0].passed]
  metrics = suite.metrics(tasks, oracle)
  assert metrics["overall"] == 1.0 and metrics["episodes"] == len(tasks)
  assert all(metrics[f"accuracy/{c}"] == 1.0 for c in bfcl.CATEGORIES)
  assert suite.metrics(tasks, null)["overall"] == 0.0
  assert leftover_instances(suite) == []


def test_correct_sample_after_a_wrong_one_of_the_same_entry_still_passes(suite, tok, tasks):
  task = by_id(tasks, "multi_turn_base_0")
  turns = suite.oracle_turns(task)
  wrong = [t.replace('"temp"', '"tmp"') for t in turns]  # mkdir / mv into another directory
  assert wrong != turns
  wrong_score = suite.score(task, run(suite, tok, task, wrong))
  right_score = suite.score(task, run(suite, tok, task, turns))
  assert not wrong_score.passed and wrong_score.verdict["error_type"].startswith("multi_turn:")
  assert right_score.passed, right_score.verdict
  assert leftover_instances(suite) == []
  # The trap is real: BFCL's checker under ONE model name judges the second sample on the first
  # sample's cached instances, and fails the correct one.
  entry = {"id": task.data["entry_id"], "initial_config": task.data["initial_config"],
           "involved_classes": task.data["involved_classes"]}
  methods = bfcl_exec.class_methods(suite.bfcl, task.data["involved_classes"])

  def decode(script):
    return bfcl.decoded_turns(run(suite, tok, task, script).messages, methods, True)
  name = "synthagent_trap_demo"
  try:
    first = suite.bfcl.checker.multi_turn_checker(decode(wrong), task.data["ground_truth"],
                                                  entry, "multi_turn_base", name)
    second = suite.bfcl.checker.multi_turn_checker(decode(turns), task.data["ground_truth"],
                                                   entry, "multi_turn_base", name)
  finally:
    bfcl_exec.drop_cached(suite.bfcl, name)
  assert not first["valid"] and not second["valid"]


# ---- the ToolEnv -----------------------------------------------------------------------------
def test_tool_env_executes_with_bfcl_and_turns_bad_calls_into_error_observations(
    suite, tasks, tmp_path):
  task = by_id(tasks, "multi_turn_base_0")
  env = suite.tool_env()
  world = env.new_episode(task)
  other = env.new_episode(task)
  assert env.call(task, ToolCall("cd", {"folder": "document"}), world) == json.dumps(
      {"current_working_directory": "document"})
  assert json.loads(env.call(task, ToolCall("ls", {}), world))["current_directory_content"] == [
      "final_report.pdf", "previous_report.pdf"]
  assert "document" in json.loads(env.call(task, ToolCall("ls", {}), other))[
      "current_directory_content"]  # another episode has its own world
  bad = env.call(task, ToolCall("cd", {"nope": 1}), world)
  assert bad.startswith("Error during execution:") and "nope" in bad
  target = tmp_path / "x.txt"
  assert env.call(task, ToolCall("open", {"file": str(target), "mode": "w"}), world) == (
      "Error during execution: name 'open' is not defined")
  assert env.call(task, ToolCall("cd", {"folder='..'),open(file": "x"}), world).startswith(
      "Error during execution: invalid argument name")
  assert not target.exists() and leftover_instances(suite) == []


@pytest.mark.parametrize("task_id", ["multi_turn_base_0", "multi_turn_long_context_0"])
def test_observations_are_what_bfcls_executor_returns(suite, tok, tasks, task_id):
  """The agent sees exactly BFCL's execution results: the oracle's tool observations equal the
  ground truth executed by BFCL itself on fresh instances (long_context loads the long worlds)."""
  task = by_id(tasks, task_id)
  traj = run(suite, tok, task, suite.oracle_turns(task))
  seen = [m["content"] for m in traj.messages if m["role"] == "tool"]
  name = bfcl_exec.unique_name("synthagent_test")
  methods = bfcl_exec.class_methods(suite.bfcl, task.data["involved_classes"])
  expected = []
  try:
    for turn in bfcl.decoded_turns(traj.messages, methods, stopped=True):
      for step in turn:
        results, _ = suite.bfcl.exec.execute_multi_turn_func_call(
            step, task.data["initial_config"], task.data["involved_classes"], name, task.id,
            long_context=task.data["category"] == "long_context")
        expected.extend(results)
  finally:
    bfcl_exec.drop_cached(suite.bfcl, name)
  assert seen == expected and len(seen) == sum(len(t) for t in task.data["ground_truth"])
  longest = max(len(x) for x in seen)
  assert (longest > 3000) == (task.data["category"] == "long_context")


def test_call_strings_are_built_from_values_only():
  methods = frozenset({"echo", "cd"})
  assert bfcl_exec.call_string("echo", {"content": "it's \"q\"\n", "n": [1, 2.5, None, True]},
                               methods) == "echo(content='it\\'s \"q\"\\n',n=[1, 2.5, None, True])"
  assert bfcl_exec.call_string("eval", {"source": "1"}, methods) is None
  assert bfcl_exec.call_string("cd", {"class": "x"}, methods) is None  # a keyword
  assert bfcl_exec.call_string("cd", {"a b": "x"}, methods) is None


def test_bad_call_through_the_loop_is_an_observation_and_scores_as_a_call(suite, tok, tasks):
  task = by_id(tasks, "multi_turn_base_0")
  turns = [cf.format_tool_call("cd", {"folder": 5, "extra": True}),
           cf.format_tool_call("__import__", {"name": "os"})]
  traj = run(suite, tok, task, turns)
  tool_msgs = [m for m in traj.messages if m["role"] == "tool"]
  assert tool_msgs[0]["content"].startswith("Error during execution:")
  assert tool_msgs[1]["content"] == "Error during execution: name '__import__' is not defined"
  methods = bfcl_exec.class_methods(suite.bfcl, task.data["involved_classes"])
  decoded = bfcl.decoded_turns(traj.messages, methods, stopped=True)
  assert decoded[0] == [["cd(folder=5,extra=True)"], [bfcl_exec.BLOCKED_CALL]]
  assert not suite.score(task, traj).passed


# ---- BFCL's step limit -----------------------------------------------------------------------
def test_step_limit_force_terminates_except_on_the_last_turn(suite, tok, tasks):
  task = by_id(tasks, "multi_turn_base_0")
  limit = suite.bfcl.prompts.MAXIMUM_STEP_LIMIT
  assert suite.loop_overrides()["max_steps_per_user_turn"] == limit + 1
  pwd = cf.format_tool_call("pwd", {})
  turns = suite.oracle_turns(task)
  ends = [i for i, t in enumerate(turns) if t == bfcl.END_OF_TURN_MESSAGE]
  first_turn = turns[:ends[0]]
  # Exactly `limit` tool steps in a turn is allowed; one more force-terminates the episode.
  ok = first_turn + [pwd] * (limit - len(first_turn)) + turns[ends[0]:]
  traj = run(suite, tok, task, ok)
  assert traj.status == "user_stopped" and suite.score(task, traj).passed
  over = first_turn + [pwd] * (limit + 1 - len(first_turn)) + turns[ends[0]:]
  traj = run(suite, tok, task, over)
  score = suite.score(task, traj)
  assert traj.status == "max_steps" and not score.passed
  assert score.verdict["error_type"] == bfcl.FORCE_TERMINATED and score.verdict["turns"] == 1
  # On the last turn BFCL still records the forced turn and checks the entry as usual.
  last = turns[ends[-2] + 1:ends[-1]]
  padded = turns[:ends[-2] + 1] + last + [pwd] * (limit + 1 - len(last))
  traj = run(suite, tok, task, padded)
  score = suite.score(task, traj)
  assert traj.status == "max_steps" and score.passed, score.verdict


def test_context_full_scores_as_force_terminated(tok, tasks):
  small = bfcl.BfclMultiTurn(SuiteOptions(category="base", limit=1,
                                          extra={"max_total_tokens": 2048}))
  task = by_id(tasks, "multi_turn_base_0")  # its prompt alone is ~9k tokens
  traj = run(small, tok, task, small.oracle_turns(task))
  score = small.score(task, traj)
  assert traj.status == "context_full" and not score.passed
  assert score.verdict["error_type"] == bfcl.FORCE_TERMINATED
  assert score.verdict["turns"] == 1 and score.verdict["expected_turns"] == 4


# ---- pieces by hand --------------------------------------------------------------------------
def test_parse_ground_truth_call_without_eval():
  sig = {"sort": ["file_name"], "mv": ["source", "destination"]}.__getitem__
  assert bfcl.parse_ground_truth_call("sort('final_report.pdf')", sig) == (
      "sort", {"file_name": "final_report.pdf"})
  assert bfcl.parse_ground_truth_call("mv('a', destination='b')", sig) == (
      "mv", {"source": "a", "destination": "b"})
  assert bfcl.parse_ground_truth_call("f(x=[1, -2.5], y={'k': None}, z=True)", sig) == (
      "f", {"x": [1, -2.5], "y": {"k": None}, "z": True})
  with pytest.raises(ValueError):
    bfcl.parse_ground_truth_call("cd(folder=open('x'))", sig)
  with pytest.raises(ValueError, match="not a plain function call"):
    bfcl.parse_ground_truth_call("os.system('x')", sig)


def test_split_steps():
  assert bfcl.split_steps(list("abc"), 20) == [["a"], ["b"], ["c"]]
  steps = bfcl.split_steps(list(range(34)), 20)
  assert len(steps) == 20 and sum(steps, []) == list(range(34))
  assert [len(s) for s in steps] == [2] * 14 + [1] * 6
  assert bfcl.split_steps([], 20) == []


def test_metrics_by_hand(suite):
  def task(cat):
    return EvalTask(id=cat, instruction="q", data={"category": cat})

  def s(x):
    return EpisodeScore(x, bool(x))
  tasks = [task("base"), task("base"), task("miss_func")]
  scores = [[s(1.0), s(0.0)], [s(1.0), s(1.0)], [s(0.0), s(0.0)]]
  m = suite.metrics(tasks, scores)
  # base: mean(0.5, 1.0) = 0.75; miss_func: 0; overall = (0.75 + 0) / 2 (unweighted by entries).
  assert m == {"accuracy/base": 0.75, "episodes/base": 4, "accuracy/miss_func": 0.0,
               "episodes/miss_func": 2, "overall": 0.375, "episodes": 6}
