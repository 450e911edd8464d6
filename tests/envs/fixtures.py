"""A small hand-written task used by the envs, rewards and llm tests."""

import copy

TASK_DICT = {
    "id": "shop-001",
    "domain": "retail",
    "instruction": "Please cancel my order.",
    "full_task": "Cancel order A17 for user Ada Lovelace (email ada@example.com) and confirm.",
    "tools": [
        {"type": "function", "kind": "read",
         "function": {"name": "get_order", "description": "Look up an order by id.",
                      "parameters": {"type": "object",
                                     "properties": {"order_id": {"type": "string"}},
                                     "required": ["order_id"],
                                     "additionalProperties": False}}},
        {"type": "function", "kind": "write",
         "function": {"name": "cancel_order", "description": "Cancel an order.",
                      "parameters": {"type": "object",
                                     "properties": {"order_id": {"type": "string"},
                                                    "reason": {"type": "string"}},
                                     "required": ["order_id"]}}},
        {"type": "function", "kind": "read",
         "function": {"name": "find_user", "description": "Find a user by email.",
                      "parameters": {"type": "object",
                                     "properties": {"email": {"type": "string"}},
                                     "required": ["email"]}}},
    ],
    "world": {
        "facts": {"user": "Ada Lovelace, ada@example.com, order A17 (a teapot, pending)"},
        "state": {"orders": {"A17": {"item": "teapot", "status": "pending"}}},
        "responses": [
            {"tool": "get_order", "arguments": {"order_id": "A17"}, "state_path": "orders.A17"},
            {"tool": "cancel_order", "arguments": {"order_id": "A17"},
             "output": {"ok": True, "order_id": "A17", "status": "cancelled"},
             "effects": [{"op": "set", "path": "orders.A17.status", "value": "cancelled"},
                         {"op": "append", "path": "log", "value": "cancelled A17"}]},
            {"tool": "find_user", "arguments": {"email": "ada@example.com"},
             "output": "user_id: U1, name: Ada Lovelace, orders: [A17]"},
        ],
    },
    "user": {"persona": "Ada, a polite customer in a hurry.",
             "private_info": {"order_id": "A17", "email": "ada@example.com",
                              "reason": "bought the wrong size"},
             "reason": "The teapot is too small."},
    "rubric": {
        "subgoals": [
            {"id": "s1", "text": "Cancels order A17.", "weight": 2.0,
             "check": {"type": "tool_called", "name": "cancel_order",
                       "arguments": {"order_id": "A17"}}},
            {"id": "s2", "text": "Confirms the cancellation to the user.", "weight": 1.0,
             "check": {"type": "answer_contains", "text": "cancelled"}},
        ],
        "interactions": [
            {"id": "i1", "text": "Asks the user for the order id.", "weight": 1.0,
             "check": {"type": "asked_user_for", "slot": "order_id"}},
            {"id": "i2", "text": "Is polite.", "weight": 1.0, "check": None},
        ],
        "forbidden": [
            {"id": "f1", "text": "Looks the user up by email.", "weight": 1.0,
             "check": {"type": "tool_not_called", "name": "find_user"}},
        ],
    },
    "reference": None,
    "metadata": {"source": "hand-written"},
}


def task_dict(**overrides):
  d = copy.deepcopy(TASK_DICT)
  d.update(overrides)
  return d


def make_task(**overrides):
  from synthagent_jax.envs.task import Task
  return Task.from_dict(task_dict(**overrides))
