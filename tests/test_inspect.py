"""Tests for synthagent_jax/inspect.py (rollout loading, HTML rendering, statistics, figures)."""

import html.parser
import math

import pytest

from synthagent_jax import inspect as insp
from synthagent_jax.utils import metrics


class _TagChecker(html.parser.HTMLParser):
  """Checks that every opened non-void tag is closed in order (well-formed HTML fragment)."""

  def __init__(self):
    super().__init__()
    self.stack = []

  def handle_starttag(self, tag, attrs):
    self.stack.append(tag)

  def handle_endtag(self, tag):
    assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
    self.stack.pop()


def assert_well_formed(fragment):
  checker = _TagChecker()
  checker.feed(fragment)
  checker.close()
  assert not checker.stack, f"unclosed tags {checker.stack}"


MESSAGES = [
    {"role": "system", "content": "You are a helpful agent."},
    {"role": "user", "content": "Cancel my order <b>now</b>"},
    {"role": "assistant", "content": "<think>need the order id</think>Which order?"},
    {"role": "user", "content": "Order 42."},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function",
                     "function": {"name": "cancel_order", "arguments": {"order_id": "42"}}}]},
    {"role": "tool", "name": "cancel_order", "content": '{"ok": true}'},
    {"role": "assistant", "content": "<answer>Order 42 is cancelled.</answer>"},
]


def record(step, task_id, sample_index, reward, met=(True, False)):
  return {"step": step, "task_id": task_id, "sample_index": sample_index, "domain": "retail",
          "messages": MESSAGES, "status": "answered" if reward > 0 else "max_turns",
          "num_turns": 3, "num_tool_calls": 1, "response_tokens": 20 + sample_index,
          "reward": reward, "advantage": reward - 0.5,
          "verdicts": [
              {"section": "subgoals", "id": "cancel", "text": "cancels order 42", "met": met[0],
               "score": float(met[0]), "source": "check"},
              {"section": "interactions", "id": "ask_id", "text": "asks for the id", "met": met[1],
               "score": float(met[1]), "source": "judge"}]}


@pytest.fixture
def workdir(tmp_path):
  logger = metrics.RolloutLogger(tmp_path, process_index=0)
  logger.write(1, [record(1, "a", 0, 0.0, (False, False)), record(1, "a", 1, 0.0, (False, False)),
                   record(1, "b", 0, 0.5), record(1, "b", 1, 1.0, (True, True))])
  logger.write(3, [record(3, "a", 0, 0.25), record(3, "a", 1, 0.75, (True, True))])
  return tmp_path


def test_loading(workdir):
  assert insp.list_steps(workdir) == [1, 3]
  assert [r["reward"] for r in insp.load_rollouts(workdir)] == [0.25, 0.75]
  assert len(insp.load_rollouts(workdir, 1)) == 4
  assert list(insp.load_all_rollouts(workdir)) == [1, 3]
  assert list(insp.load_all_rollouts(workdir, steps=[3])) == [3]
  with pytest.raises(FileNotFoundError, match="no rollout logs"):
    insp.load_rollouts(workdir / "empty")


def test_conversation_roles_are_distinct_and_escaped():
  out = insp.render_conversation(MESSAGES)
  assert_well_formed(out)
  for cls in ("sa-system", "sa-user", "sa-assistant", "sa-tool"):
    assert f"sa-msg {cls}" in out
  for label in ("SYSTEM", "USER", "ASSISTANT", "TOOL · cancel_order"):
    assert label in out
  # Distinct colours per role.
  colours = {role: style[1] for role, style in insp.ROLE_STYLES.items()}
  assert len(set(colours.values())) == 4
  for colour in colours.values():
    assert colour in out
  # Log text is escaped, never interpreted.
  assert "<b>now</b>" not in out and "&lt;b&gt;now&lt;/b&gt;" in out
  # Tool call shown with its arguments; think collapsed; answer highlighted.
  assert "cancel_order</b>({&quot;order_id&quot;: &quot;42&quot;})" in out
  assert '<details class="sa-think"' in out and "think (17 chars)</summary>need the order id" in out
  assert 'class="sa-answer"' in out
  assert "show system prompt" in out
  # Message order is kept.
  assert out.index("Which order?") < out.index("Order 42.") < out.index("is cancelled")


def test_unclosed_think_and_odd_messages_do_not_crash():
  out = insp.render_conversation([
      {"role": "assistant", "content": "<think>cut off mid thought"},
      {"role": "critic", "content": "?"},
      "not a message",
      {"role": "assistant", "content": None,
       "tool_calls": [{"function": {"name": "f", "arguments": '{"raw": "string"}'}}]},
  ])
  assert_well_formed(out)
  assert "think (19 chars)" in out
  assert "UNKNOWN ROLE &#x27;critic&#x27;" in out
  assert "invalid message" in out
  assert "{&quot;raw&quot;: &quot;string&quot;}" in out
  assert "(no messages)" in insp.render_conversation([])


def test_verdict_table(workdir):
  rec = insp.load_rollouts(workdir, 1)[2]
  out = insp.verdict_table(rec)
  assert_well_formed(out)
  assert out.count("<tr") == 3  # header + two items
  assert "✓ met" in out and "✗ not met" in out
  assert out.index("cancel") < out.index("ask_id")
  assert "#c8e6c9" in out and "#ffcdd2" in out
  assert "no rubric verdicts" in insp.verdict_table({**rec, "verdicts": []})


def test_step_summary_numbers(workdir):
  rows = insp.step_summary(insp.load_all_rollouts(workdir))
  first = rows[0]
  assert first["step"] == 1 and first["episodes"] == 4
  assert first["reward_mean"] == pytest.approx(0.375)
  # pstdev of [0, 0, 0.5, 1]: mean .375, squared deviations .140625*2 + .015625 + .390625 = .6875.
  assert first["reward_std"] == pytest.approx(math.sqrt(0.6875 / 4))
  assert (first["reward_min"], first["reward_max"]) == (0.0, 1.0)
  assert first["zero_var_groups"] == "1/2"
  assert first["statuses"] == "answered:2, max_turns:2"
  assert first["response_tokens_mean"] == pytest.approx(20.5)
  assert rows[1]["zero_var_groups"] == "0/1"


def test_item_pass_rates(workdir):
  rows = insp.item_pass_rates(insp.load_rollouts(workdir, 1))
  by_id = {r["id"]: r for r in rows}
  assert by_id["cancel"]["met_frac"] == pytest.approx(0.5)
  assert by_id["ask_id"]["met_frac"] == pytest.approx(0.25)
  assert by_id["ask_id"]["episodes"] == 4 and by_id["ask_id"]["section"] == "interactions"


def test_best_and_worst(workdir):
  recs = insp.load_rollouts(workdir, 1)
  best, worst = insp.best_and_worst(recs, k=2)
  assert [(r["task_id"], r["sample_index"]) for r in best] == [("b", 1), ("b", 0)]
  assert [(r["task_id"], r["sample_index"]) for r in worst] == [("a", 0), ("a", 1)]
  with pytest.raises(ValueError, match="k must be"):
    insp.best_and_worst(recs, k=0)


def test_evenly_spaced():
  assert insp.evenly_spaced([1, 2, 3], 5) == [1, 2, 3]
  assert insp.evenly_spaced(list(range(0, 100, 10)), 4) == [0, 30, 60, 90]
  with pytest.raises(ValueError, match="n must be"):
    insp.evenly_spaced([1, 2], 1)


def test_html_table_and_episode(workdir):
  out = insp.html_table([{"a": 1, "b": 0.123456, "c": True}, {"a": "<x>", "b": math.nan}])
  assert_well_formed(out)
  assert "0.123" in out and "&lt;x&gt;" in out and "nan" in out and "✓" in out
  assert "(no rows)" in insp.html_table([])
  ep = insp.episode_html(insp.load_rollouts(workdir, 3)[1])
  assert_well_formed(ep)
  assert "<b>reward</b> 0.75" in ep and "sa-verdicts" in ep and "sa-conversation" in ep
  assert "<b>error</b>" not in ep
  ep = insp.episode_html({**record(3, "a", 0, 0.0), "status": "error", "error": "tool <crashed>"})
  assert "<b>error</b> tool &lt;crashed&gt;" in ep


def test_reward_distribution_figure(workdir):
  by_step = insp.load_all_rollouts(workdir)
  fig = insp.reward_distribution(by_step)
  ax_box, ax_hist = fig.axes
  assert [t.get_text() for t in ax_box.get_xticklabels()] == ["1", "3"]
  assert list(ax_box.lines[-1].get_ydata()) == pytest.approx([0.375, 0.5])  # the mean line
  assert ax_hist.get_title() == "Step 3 (2 episodes)"
  assert sum(p.get_height() for p in ax_hist.patches) == 2
  many = {s: [record(s, "a", 0, s / 100)] for s in range(100)}
  fig = insp.reward_distribution(many, max_steps=10)
  labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
  assert len(labels) == 10 and labels[0] == "0" and labels[-1] == "99"
  fig = insp.reward_distribution({})
  assert "no rollouts" in fig.axes[0].texts[0].get_text()
