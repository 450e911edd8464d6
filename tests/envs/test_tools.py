import concurrent.futures
import itertools
import json
import subprocess
import sys
import textwrap

from synthagent_jax.envs import base
from synthagent_jax.envs.tool_sim import ToolCache
from synthagent_jax.envs.tools import MockToolSystem, canonical_arguments
from synthagent_jax.llm.scripted import ScriptedLLM
from tests.envs.fixtures import make_task


def _counter_llm():
  """An LLM whose every reply differs, so only the cache can make answers agree."""
  counter = itertools.count()
  return ScriptedLLM(lambda conv: f'{{"simulated": {next(counter)}}}')


def test_is_a_tool_env():
  assert isinstance(MockToolSystem(), base.ToolEnv)


def test_unknown_tool_and_bad_arguments_give_error_observations():
  task = make_task()
  tools = MockToolSystem()
  ep = tools.new_episode(task)
  obs = tools.call(task, base.ToolCall("refund", {}), ep)
  assert obs.startswith("Error: unknown tool 'refund'") and "get_order" in obs
  obs = tools.call(task, base.ToolCall("get_order", {}), ep)
  assert obs == "Error: invalid arguments for get_order: 'order_id' is a required property"
  obs = tools.call(task, base.ToolCall("get_order", {"order_id": 17}), ep)
  assert obs == "Error: invalid arguments for get_order: order_id: 17 is not of type 'string'"
  obs = tools.call(task, base.ToolCall("get_order", {"order_id": "A17", "x": 1}), ep)
  assert "Additional properties are not allowed ('x' was unexpected)" in obs
  assert tools.stats["errors"] == 4


def test_scripted_answers_and_write_tools_mutate_only_their_episode():
  task = make_task()
  tools = MockToolSystem()
  ep1, ep2 = tools.new_episode(task), tools.new_episode(task)
  # Normalised matching: case and whitespace in argument values do not matter.
  assert json.loads(tools.call(task, base.ToolCall("get_order", {"order_id": " a17 "}), ep1)) == {
      "item": "teapot", "status": "pending"}
  out = tools.call(task, base.ToolCall("cancel_order", {"order_id": "A17", "reason": "size"}), ep1)
  assert json.loads(out)["status"] == "cancelled"
  assert json.loads(tools.call(task, base.ToolCall("get_order", {"order_id": "A17"}), ep1))[
      "status"] == "cancelled"
  assert ep1.state["log"] == ["cancelled A17"]
  # The other episode and the task's own world are untouched.
  assert json.loads(tools.call(task, base.ToolCall("get_order", {"order_id": "A17"}), ep2))[
      "status"] == "pending"
  assert task.world["state"]["orders"]["A17"]["status"] == "pending"
  assert [c["source"] for c in ep1.calls] == ["scripted"] * 3


def test_unscripted_without_llm_is_deterministic_not_found():
  task = make_task()
  tools = MockToolSystem()
  ep = tools.new_episode(task)
  a = tools.call(task, base.ToolCall("get_order", {"order_id": "B2"}), ep)
  b = tools.call(task, base.ToolCall("get_order", {"order_id": "b2"}), tools.new_episode(task))
  assert a == b == 'No record found for get_order with arguments {"order_id": "b2"}.'


def test_same_call_same_answer_across_16_concurrent_rollouts(tmp_path):
  task = make_task()
  llm = _counter_llm()
  tools = MockToolSystem(llm=llm, cache_path=tmp_path / "cache.db")

  def rollout(i):
    ep = tools.new_episode(task)
    return [tools.call(task, base.ToolCall("get_order", {"order_id": oid}), ep)
            for oid in ("B1", "B2", "b1 ", "C3")]

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(rollout, range(16)))
  assert all(r == results[0] for r in results)
  assert results[0][0] == results[0][2]  # "B1" and "b1 " are the same call.
  assert len({results[0][0], results[0][1], results[0][3]}) == 3
  assert len(tools.cache) == 3
  # The simulator prompt carried the tool doc, the world facts and scripted examples.
  prompt = llm.calls[0][1]["content"]
  assert "Look up an order by id." in prompt and "Ada Lovelace" in prompt
  assert 'arguments {"order_id": "a17"}' in prompt


def test_simulator_failure_is_reported_and_not_cached():
  task = make_task()

  def broken(conv):
    raise RuntimeError("down")

  tools = MockToolSystem(llm=ScriptedLLM(broken))
  obs = tools.call(task, base.ToolCall("get_order", {"order_id": "Z9"}), tools.new_episode(task))
  assert obs == "Error: the get_order service is unavailable (RuntimeError)."
  assert len(tools.cache) == 0 and tools.stats["simulator_failures"] == 1


_CHILD = textwrap.dedent("""
    import json, os, sys, time
    from synthagent_jax.envs import base
    from synthagent_jax.envs.tools import MockToolSystem
    from synthagent_jax.llm.scripted import ScriptedLLM
    from tests.envs.fixtures import make_task
    task = make_task()
    pid = os.getpid()
    tools = MockToolSystem(llm=ScriptedLLM(lambda conv: f"answer from process {pid}"),
                           cache_path=sys.argv[1])
    while not os.path.exists(sys.argv[2]):
      time.sleep(0.01)
    out = [tools.call(task, base.ToolCall("get_order", {"order_id": f"X{i}"}),
                      tools.new_episode(task)) for i in range(30)]
    print(json.dumps(out))
""")


def test_same_call_same_answer_across_two_processes(tmp_path):
  cache = tmp_path / "shared.db"
  go = tmp_path / "go"
  procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(cache), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  go.write_text("")  # Release both at once so they race on the same keys.
  outs = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    outs.append(json.loads(stdout))
  assert outs[0] == outs[1]
  stored = ToolCache(cache)
  assert len(stored) == 30
  for i, answer in enumerate(outs[0]):
    assert answer.startswith("answer from process ")
    assert stored.get("shop-001", "get_order", canonical_arguments({"order_id": f"X{i}"})) == answer


# --- schemas from task data (issue 19 item 6) ----------------------------------------------------

def _with_first_tool_params(params):
  import dataclasses  # pylint: disable=g-import-not-at-top
  task = make_task()
  tool = dataclasses.replace(task.tools[0], parameters=params)
  return dataclasses.replace(task, tools=(tool,) + task.tools[1:])


def test_remote_ref_is_never_fetched(monkeypatch):
  """A Tool built without Task.from_dict (so without its load-time rule) still never fetches."""
  import urllib.request  # pylint: disable=g-import-not-at-top
  fetched = []

  def no_network(*args, **kwargs):
    fetched.append(args)
    raise OSError("network disabled in this test")

  monkeypatch.setattr(urllib.request, "urlopen", no_network)
  task = _with_first_tool_params({"type": "object", "properties": {
      "order_id": {"$ref": "http://127.0.0.1:9/remote.json"}}})
  tools = MockToolSystem()
  obs = tools.call(task, base.ToolCall("get_order", {"order_id": "A17"}), tools.new_episode(task))
  assert fetched == []
  assert obs.startswith("Error: invalid arguments for get_order: the tool's schema has a "
                        "reference that cannot be resolved")
  # Local references still resolve.
  task = _with_first_tool_params({
      "type": "object", "properties": {"order_id": {"$ref": "#/$defs/id"}},
      "$defs": {"id": {"type": "string", "pattern": "^A\\d+$"}}})
  ep = tools.new_episode(task)
  assert "does not match" in tools.call(task, base.ToolCall("get_order", {"order_id": "B1"}), ep)
  assert "teapot" in tools.call(task, base.ToolCall("get_order", {"order_id": "A17"}), ep)


def test_pattern_match_time_is_bounded():
  """`(a|aa)+` passes the load-time rule but backtracks exponentially: the match is cut off."""
  import time  # pylint: disable=g-import-not-at-top
  from synthagent_jax.envs import task as task_lib  # pylint: disable=g-import-not-at-top
  from synthagent_jax.envs import tools as tools_lib  # pylint: disable=g-import-not-at-top
  from tests.envs.fixtures import task_dict  # pylint: disable=g-import-not-at-top
  d = task_dict()
  d["tools"][0]["function"]["parameters"]["properties"]["order_id"]["pattern"] = "^(a|aa)+$"
  task = task_lib.Task.from_dict(d)
  tools = MockToolSystem()
  ep = tools.new_episode(task)
  t0 = time.perf_counter()
  obs = tools.call(task, base.ToolCall("get_order", {"order_id": "a" * 34 + "!"}), ep)
  elapsed = time.perf_counter() - t0
  assert elapsed < 20 * tools_lib.PATTERN_TIMEOUT_S, elapsed  # Python's re needs seconds here
  assert obs.startswith("Error: invalid arguments for get_order: order_id: matching pattern")
  assert "No record found" in tools.call(task, base.ToolCall("get_order", {"order_id": "aaa"}), ep)


# --- history-aware, batched simulation (issue 17) -------------------------------------------------

class _BatchCountingLLM(ScriptedLLM):
  """A counter LLM that records the size of every `chat` batch."""

  def __init__(self, fn=None):
    counter = itertools.count()
    super().__init__(fn or (lambda conv: f"answer {next(counter)}"))
    self.batches = []

  def chat(self, conversations, sampling=None):
    self.batches.append(len(conversations))
    return super().chat(conversations, sampling)


def _get(oid):
  return base.ToolCall("get_order", {"order_id": oid})


def test_simulation_prompt_holds_the_episodes_earlier_calls():
  task = make_task()
  llm = _BatchCountingLLM()
  tools = MockToolSystem(llm=llm)
  ep = tools.new_episode(task)
  first = tools.call(task, _get("B1"), ep)
  scripted = tools.call(task, base.ToolCall("cancel_order", {"order_id": "A17"}), ep)
  tools.call(task, base.ToolCall("get_order", {"order_id": 5}), ep)  # an error: not history
  tools.call(task, _get("B2"), ep)
  prompt = llm.calls[-1][1]["content"]
  assert f'- get_order({{"order_id": "b1"}}) -> {first}' in prompt
  assert f'- cancel_order({{"order_id": "a17"}}) -> {scripted}' in prompt
  assert '{"order_id": 5}' not in prompt
  # The first call of an episode has no history section.
  assert "Earlier calls" not in llm.calls[0][1]["content"]


def test_cache_key_includes_the_history_and_an_episode_agrees_with_itself():
  task = make_task()
  tools = MockToolSystem(llm=_BatchCountingLLM())
  runs = {}
  for name, path in (("a", ["B1", "C3"]), ("b", ["B2", "C3"]), ("a2", ["B1", "C3"])):
    ep = tools.new_episode(task)
    runs[name] = [tools.call(task, _get(oid), ep) for oid in path]
    runs[name].append(tools.call(task, _get("C3"), ep))  # the same call again, longer history
  assert runs["a"] == runs["a2"]                 # same history -> same answers (cache)
  assert runs["a"][0] != runs["b"][0]
  assert runs["a"][1] != runs["b"][1]            # C3 after B1 vs after B2: different keys
  assert runs["a"][2] == runs["a"][1] and runs["b"][2] == runs["b"][1]  # the episode memo
  assert len(tools.cache) == 4  # B1, B2, C3|B1, C3|B2


def test_a_write_makes_later_reads_simulated_afresh():
  task = make_task()
  tools = MockToolSystem(llm=_BatchCountingLLM())
  ep = tools.new_episode(task)
  before = tools.call(task, _get("B1"), ep)
  tools.call(task, base.ToolCall("cancel_order", {"order_id": "B1"}), ep)  # unscripted write
  after = tools.call(task, _get("B1"), ep)
  assert before != after
  assert tools.call(task, _get("B1"), ep) == after


def test_call_batch_simulates_independent_calls_in_one_round():
  task = make_task()
  llm = _BatchCountingLLM()
  tools = MockToolSystem(llm=llm)
  eps = [tools.new_episode(task) for _ in range(6)]
  reqs = [(task, _get(f"X{i}"), ep) for i, ep in enumerate(eps)]
  out = tools.call_batch(reqs)
  assert llm.batches == [6] and tools.stats["llm_batches"] == 1
  assert len(set(out)) == 6 and all(ep.calls[0]["observation"] == o for ep, o in zip(eps, out))
  # The same answers as one by one: the cache now holds them.
  assert [tools.call(task, _get(f"X{i}"), tools.new_episode(task)) for i in range(6)] == out


def test_call_batch_keeps_each_episodes_calls_in_order_and_shares_equal_keys():
  task = make_task()
  llm = _BatchCountingLLM()
  tools = MockToolSystem(llm=llm)
  ep1, ep2 = tools.new_episode(task), tools.new_episode(task)
  out = tools.call_batch([(task, _get("Y1"), ep1), (task, _get("Y2"), ep1),
                          (task, _get("Y1"), ep2), (task, _get("A17"), ep2)])
  # Round 1: Y1 (one prompt for both episodes: same key) ; round 2: Y2 after Y1 (ep1 only;
  # ep2's A17 is scripted and needs no LLM).
  assert llm.batches == [1, 1]
  assert out[0] == out[2]
  assert f"-> {out[0]}" in llm.calls[1][1]["content"]
  assert json.loads(out[3])["item"] == "teapot"
  assert [c["name"] for c in ep1.calls] == ["get_order", "get_order"]


def test_call_batch_failure_keeps_answers_that_arrived_and_caches_none_of_the_rest():
  task = make_task()

  class Partial:
    """Fails item 1 of every batch the way llm.openai_http.LLMBatchError reports it."""

    def chat(self, conversations, sampling=None):
      from synthagent_jax.llm.openai_http import ChatResult, LLMBatchError
      results = [ChatResult(f"ok {i}", None, 1) if i != 1 else ChatResult(None, "boom", 3)
                 for i in range(len(conversations))]
      raise LLMBatchError(results)

  tools = MockToolSystem(llm=Partial())
  eps = [tools.new_episode(task) for _ in range(3)]
  out = tools.call_batch([(task, _get(f"Z{i}"), ep) for i, ep in enumerate(eps)])
  assert out[0] == "ok 0" and out[2] == "ok 2"
  assert out[1] == "Error: the get_order service is unavailable (LLMBatchError)."
  assert len(tools.cache) == 2 and tools.stats["simulator_failures"] == 1
