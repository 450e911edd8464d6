"""The solve stage: the teacher as agent in the Qwen tool format against the mock tools and the
rule user; malformed calls come back as error observations, episodes end on <answer>."""

from synthagent_jax.envs import task as task_lib
from synthagent_jax.envs import tools as tools_lib
from synthagent_jax.envs import user as user_lib
from synthagent_jax.llm import scripted
from synthagent_jax.synthesis import offline
from synthagent_jax.synthesis import stage_solve


def _task():
  d = next(t for t in offline.generate(40, seed=0) if t["metadata"]["intent"] == "price_now")
  return task_lib.Task.from_dict(d)


def test_solver_episode_with_a_malformed_call():
  task = _task()
  order_id = task.user.private_info["order_id"]
  turns = ["What is your order number?",
           '<tool_call>\n{"name": "get_order", "arguments": {"order_id": \n</tool_call>',
           '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "%s"}}\n</tool_call>'
           % order_id,
           "<answer>Your order is on its way.</answer>"]
  teacher = scripted.ScriptedLLM(fn=lambda conv: turns[sum(m["role"] == "assistant"
                                                           for m in conv)])
  [sols] = stage_solve.solve([task], teacher, tools_lib.MockToolSystem(),
                             user_lib.RuleUserSimulator(), k=2, max_turns=6)
  assert len(sols) == 2
  for sol in sols:
    assert sol["status"] == "answered"
    msgs = sol["messages"]
    assert msgs[0] == {"role": "user", "content": task.instruction}
    assert msgs[2] == {"role": "user", "content": f"My order id is {order_id}."}
    tool_msgs = [m for m in msgs if m["role"] == "tool"]
    assert len(tool_msgs) == 1 and order_id in tool_msgs[0]["content"]
    assert msgs[-1]["content"] == "<answer>Your order is on its way.</answer>"
    assert msgs[3] == {"role": "assistant", "content": turns[1]}  # kept raw, no empty call list
    assert sol["num_errors"] == 1
  # The malformed block was reported back to the teacher as an error observation.
  last_conv = teacher.calls[-1]
  errors = [m["content"] for m in last_conv if m["role"] == "user" and "Error:" in m["content"]]
  assert len(errors) == 1


def test_unanswered_episodes_end_at_max_turns():
  task = _task()
  teacher = scripted.ScriptedLLM(default="Let me think about it.")
  [sols] = stage_solve.solve([task], teacher, tools_lib.MockToolSystem(),
                             user_lib.RuleUserSimulator(), k=1, max_turns=3)
  assert sols[0]["status"] == "max_turns"
  assert sum(m["role"] == "assistant" for m in sols[0]["messages"]) == 3
