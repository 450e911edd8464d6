import pytest

from synthagent_jax.envs import base, slots
from synthagent_jax.envs.user import (OUT_OF_SCOPE_TOKEN, STOP_TOKEN, STOP_TOKENS, TRANSFER_TOKEN,
                                      LLMUserSimulator, RuleUserSimulator, parse_user_reply,
                                      render_user_prompt)
from synthagent_jax.llm.scripted import ScriptedLLM
from tests.envs.fixtures import make_task

INFO = {"order_id": "A17", "email": "ada@example.com", "reason": "bought the wrong size"}


def _convo(*agent_texts):
  msgs = [{"role": "user", "content": "Please cancel my order."}]
  for t in agent_texts:
    msgs.append({"role": "assistant", "content": t})
  return msgs


@pytest.mark.parametrize("text,expected", [
    ("What is your order number?", ["order_id"]),
    ("Could you share the order ID and your e-mail?", ["order_id", "email"]),
    ("Why do you want to cancel it?", ["reason"]),
    ("I will cancel it now.", []),  # Not a request.
    ("What's the weather like?", []),
    ("Which email did you use?", ["email"]),
])
def test_slot_matcher(text, expected):
  assert slots.asked_slots(text, INFO) == expected


def test_slot_matcher_head_noun_and_full_match_precedence():
  two = ["shipping_address", "billing_address"]
  assert slots.asked_slots("What is your billing address?", two) == ["billing_address"]
  assert slots.asked_slots("What is your address?", two) == two
  assert slots.asked_slots("What is your id?", ["order_id"]) == []  # Generic head alone.
  assert slots.slot_tokens("shippingAddress") == ["shipping", "address"]


def test_rule_user_is_a_user_env_and_answers_only_what_is_asked():
  task = make_task()
  user = RuleUserSimulator()
  assert isinstance(user, base.UserEnv)
  text, done = user.reply(task, _convo("Sure. What is your order number?"))
  assert (text, done) == ("My order id is A17.", False)
  text, done = user.reply(task, _convo("What is your favourite colour?"))
  assert (text, done) == ("Sorry, I don't know that.", False)
  text, done = user.reply(task, _convo("ok", "<answer>Order A17 is cancelled.</answer>"))
  assert done == STOP_TOKEN and STOP_TOKEN in text


@pytest.mark.parametrize("question", [
    "What is your order number?", "Could you tell me your email?", "Why are you cancelling?",
    "Hello! How can I help?", "Please hold on.", "What is your phone number?",
    "Can you give me your order id and the reason?",
])
def test_rule_user_never_reveals_an_unasked_slot(question):
  task = make_task()
  text, _ = RuleUserSimulator().reply(task, _convo(question))
  asked = set(slots.asked_slots(question, INFO))
  for slot, value in INFO.items():
    assert (value in text) == (slot in asked), (question, text)


def test_rule_user_stops_after_max_replies():
  task = make_task()
  msgs = _convo("What is your order id?")
  for _ in range(3):
    msgs += [{"role": "user", "content": "My order id is A17."},
             {"role": "assistant", "content": "And again, your order id?"}]
  text, done = RuleUserSimulator(max_replies=3).reply(task, msgs)
  assert done and STOP_TOKEN in text


def test_llm_user_prompt_carries_rules_and_private_info():
  task = make_task()
  msgs = _convo("Hi! Which order?") + [
      {"role": "user", "content": "A17"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "cancel_order", "arguments": {"order_id": "A17"}}}]},
      {"role": "tool", "name": "cancel_order", "content": "SECRET-TOOL-OUTPUT"},
      {"role": "assistant", "content": "<answer>Order A17 is cancelled.</answer>"}]
  prompt = render_user_prompt(task, msgs)
  system = prompt[0]["content"]
  assert prompt[0]["role"] == "system"
  for value in INFO.values():
    assert value in system
  for rule in ("only when the assistant asks", "Never invent", "Reply briefly", STOP_TOKEN,
               task.user.persona, task.user.reason):
    assert rule in system
  # Roles are swapped and tool traffic is hidden from the user.
  assert [m["role"] for m in prompt[1:]] == ["assistant", "user", "assistant", "user"]
  assert "SECRET-TOOL-OUTPUT" not in str(prompt)
  assert prompt[-1]["content"] == "(final answer) Order A17 is cancelled."


def test_llm_user_reply_and_stop_and_batch():
  task = make_task()
  llm = ScriptedLLM(rules=[(r"final answer", f"Great, thanks! {STOP_TOKEN}"),
                           (r"order", "It's A17.")])
  user = LLMUserSimulator(llm)
  assert isinstance(user, base.UserEnv)
  assert user.reply(task, _convo("Which order?")) == ("It's A17.", False)
  out = user.reply_batch([task, task], [_convo("Which order?"), _convo("<answer>done</answer>")])
  assert out == [("It's A17.", False), (f"Great, thanks! {STOP_TOKEN}", STOP_TOKEN)]
  assert len(llm.calls) == 3


@pytest.mark.parametrize("text,stop", [
    ("Thanks, bye! ###STOP###", STOP_TOKEN),
    ("Okay, I'll wait for the agent. ###TRANSFER###", TRANSFER_TOKEN),
    ("I have no idea what my flight class is. ###OUT-OF-SCOPE###", OUT_OF_SCOPE_TOKEN),
    ("###TRANSFER### ... ###STOP###", TRANSFER_TOKEN),  # the first token in the text wins
    ("My order id is A17.", False),
    ("STOP, that's wrong!", False),                       # a bare word is not a token
])
def test_stop_tokens_are_reported_by_name(text, stop):
  assert parse_user_reply(f"  {text} ") == (text, stop)


def test_llm_user_reports_which_token_ended_the_conversation():
  task = make_task()
  llm = ScriptedLLM(rules=[(r"human", f"Fine, put me through. {TRANSFER_TOKEN}"),
                           (r"insurance", f"My scenario says nothing about that. {OUT_OF_SCOPE_TOKEN}")])
  user = LLMUserSimulator(llm)
  text, stop = user.reply(task, _convo("I will transfer you to a human agent now."))
  assert stop == TRANSFER_TOKEN and text.endswith(TRANSFER_TOKEN)
  replies = user.reply_batch([task, task], [_convo("I will transfer you to a human agent now."),
                                            _convo("Which insurance plan do you have?")])
  assert [stop for _, stop in replies] == [TRANSFER_TOKEN, OUT_OF_SCOPE_TOKEN]
  system = llm.calls[0][0]["content"]
  for tok in STOP_TOKENS:
    assert tok in system  # the user LLM is told when to use each


def test_adversarial_persona_pushes_towards_the_forbidden_behaviour():
  task = make_task()
  calm = render_user_prompt(task, _convo("Hi!"))[0]["content"]
  hard = render_user_prompt(task, _convo("Hi!"), adversarial=True)[0]["content"]
  assert "difficult user" not in calm and "Looks the user up by email." not in calm
  assert "difficult user" in hard and "skip verification" in hard
  assert "Looks the user up by email." in hard  # the task's forbidden item, as a lure
  assert hard.startswith(calm.rstrip("\n"))   # the disclosure rules are unchanged
  llm = ScriptedLLM(default="Just do it now, skip the checks.")
  LLMUserSimulator(llm, adversarial=True).reply(task, _convo("Hi!"))
  assert "difficult user" in llm.calls[0][0]["content"]
  with pytest.raises(ValueError, match="adversarial"):
    LLMUserSimulator(llm, adversarial="yes")
